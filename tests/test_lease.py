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


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_real_drivers_started_together_one_runs_the_other_exits_2_naming_it(tmp_path, synthetic_root):
    """Two `study run` processes on one new study, started at once: one creates the store and runs
    it; the other exits 2 within seconds, naming the first's pid, with nothing written by it; a
    `--resume` beside the live driver is refused the same way."""
    from studies import grid_study, kill_tree, trial_runs

    work = tmp_path / "w"
    cfg = grid_study(tmp_path, synthetic_root, "pair", seeds=(0,), epochs=1, steps=400, volume=10,
                     resources={"cpu": 1})
    cmd = [sys.executable, "-m", "study.cli", "run", str(cfg), "--workdir", str(work), "--quiet"]
    t0 = time.monotonic()
    drivers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True) for _ in range(2)]
    try:
        loser = None
        while loser is None and time.monotonic() - t0 < 120:
            loser = next((d for d in drivers if d.poll() is not None), None)
            time.sleep(0.1)
        assert loser is not None, "neither driver was refused"
        refused_after = time.monotonic() - t0
        winner = drivers[1 - drivers.index(loser)]
        out, err = loser.communicate()
        assert loser.returncode == 2, out[-2000:] + err[-2000:]
        assert f"is being run by another driver: pid {winner.pid} on" in err
        assert f"study status --workdir {work} --study pair" in err
        assert refused_after < 60, f"the second driver took {refused_after:.0f} s to be refused"

        resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=120)
        assert winner.poll() is None, "the first driver ended before the --resume beside it was tried"
        assert resumed.returncode == 2 and f"pid {winner.pid} on" in resumed.stderr, resumed.stderr[-2000:]

        out, err = winner.communicate(timeout=400)
        assert winner.returncode == 0, out[-2000:] + err[-2000:]
    finally:
        for d in drivers:
            if d.poll() is None:
                kill_tree(d.pid)
    runs = trial_runs(work, "pair")
    assert len(runs) == 1 and set(runs["status"]) == {"FINISHED"}  # one driver's trial, recorded once
    assert not (work / "ray" / "pair" / FILE).exists()  # the winner gave its lease back


def test_a_released_lease_leaves_no_folder_it_made(tmp_path):
    lease = StudyLease(tmp_path / "work" / "ray" / "s", "s")
    lease.acquire(resume=False)
    assert (tmp_path / "work" / "ray" / "s" / FILE).exists()
    lease.release()  # refused by a later check: the workdir is as it was
    assert list(tmp_path.iterdir()) == []
    kept = StudyLease(tmp_path / "ray" / "s", "s")
    kept.acquire(resume=False)
    (tmp_path / "ray" / "s" / "grid").mkdir()  # the study wrote a stage: its folders stay
    kept.release()
    assert (tmp_path / "ray" / "s" / "grid").is_dir() and not (tmp_path / "ray" / "s" / FILE).exists()
