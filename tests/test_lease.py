"""study.lease: one driver per study."""
import json
import multiprocessing
import socket
import subprocess
import sys
import time

import pytest

from study.lease import FILE, LeaseHeld, StudyLease
from trainables.errors import UserError


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lease(folder, **fields):
    folder.mkdir(parents=True, exist_ok=True)
    lease = {"study": "s", "host": socket.gethostname(), "pid": 1, "started": time.time(),
             "heartbeat": time.time(), "token": "other", **fields}
    (folder / FILE).write_text(json.dumps(lease))


def test_a_live_lease_refuses_a_second_driver_naming_its_holder(tmp_path):
    first = StudyLease(tmp_path, "s", "study status --workdir w --study s")
    first.acquire(resume=False)
    second = StudyLease(tmp_path, "s", "study status --workdir w --study s")
    for attempt in (second.check_free, lambda: second.acquire(resume=True)):
        with pytest.raises(LeaseHeld) as err:
            attempt()
        import os
        assert f"pid {os.getpid()} on {socket.gethostname()}" in str(err.value)
        assert "study status --workdir w --study s" in str(err.value)
    second.release()  # not its lease: left alone
    assert (tmp_path / FILE).exists()
    first.release()
    assert not (tmp_path / FILE).exists()
    second.acquire(resume=False)  # free again
    second.release()


def test_a_dead_drivers_lease_on_this_host_is_taken_over_by_resume_only(tmp_path):
    write_lease(tmp_path, pid=dead_pid())  # a driver killed with SIGKILL: its heartbeat is fresh
    lease = StudyLease(tmp_path, "s")
    lease.check_free()  # stale: not held
    with pytest.raises(UserError, match="continue it with --resume"):
        lease.acquire(resume=False)
    lease.acquire(resume=True)
    assert "took over the lease of a driver that is gone" in lease.note
    assert json.loads((tmp_path / FILE).read_text())["token"] == lease.token
    assert [p.name for p in tmp_path.iterdir()] == [FILE]  # the stale one is not left behind
    lease.release()


def test_another_hosts_lease_is_stale_only_after_the_timeout(tmp_path, monkeypatch):
    write_lease(tmp_path, host="elsewhere", pid=424242, heartbeat=1000.0)
    monkeypatch.setenv("CKD_STUDY_LEASE_TIMEOUT_S", "60")
    with pytest.raises(LeaseHeld, match="pid 424242 on elsewhere"):
        StudyLease(tmp_path, "s", clock=lambda: 1050.0).check_free()
    StudyLease(tmp_path, "s", clock=lambda: 1061.0).check_free()


def test_the_heartbeat_is_rewritten_while_held(tmp_path):
    now = [100.0]
    lease = StudyLease(tmp_path, "s", clock=lambda: now[0])
    lease.acquire(resume=False)
    now[0] = 150.0
    lease.beat()
    record = json.loads((tmp_path / FILE).read_text())
    assert (record["started"], record["heartbeat"]) == (100.0, 150.0)
    lease.release()


def _race(folder, start, tried, results):
    start.wait()
    try:
        StudyLease(folder, "s").acquire(resume=True)
        results.put("held")
    except LeaseHeld:
        results.put("refused")
    tried.wait(timeout=60)  # the holder lives (and holds) until both have tried, however slow the machine


def test_of_two_drivers_started_together_exactly_one_holds_the_lease(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    start, tried, results = ctx.Barrier(2), ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(tmp_path, start, tried, results)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert sorted(results.get(timeout=5) for _ in procs) == ["held", "refused"]
