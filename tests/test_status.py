"""`study status` (read from a small MLflow store built here) and `study run`'s progress lines
(driven by synthetic events: no Ray); one slow test runs a tiny study end to end."""
import ast
import io
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from study.cli import main
from study.progress import (
    DRIVER_TAG, HEARTBEAT_TAG, METRIC_TAG, PLANNED_TAG, RESUME_TAG, STAGE_ORDER, Heartbeat, StageProgress,
    fmt_duration, record_driver, record_planned, resume_command,
)
from study.status import STALE_S, driver_state, one_line, read_status, render

NOW = 1_700_000_000.0  # seconds
RESUME = "study run /c/s.yaml --resume --workdir /w"


class Clock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_stage_order_is_the_plans():
    """One tuple, in study.config (torch-free): the plan, the CLI and the status read that one."""
    from study.cli import run
    from study.config import STAGES
    from study.plan import STAGES as plan_stages

    assert STAGE_ORDER is STAGES and plan_stages is STAGES
    stage_option = next(p for p in run.params if p.name == "stage")
    assert tuple(stage_option.type.choices) == STAGES


# --- a store: parent + trial runs ---------------------------------------------------------------
def make_study(client: MlflowClient, name: str, parent_status: str = "RUNNING", heartbeat_age: float = 5.0,
               driver: str = "elsewhere:1", planned: dict | None = None, trials=()) -> str:
    """trials: (stage, trial id, status, val_auc or None, start s before NOW, duration s or None)."""
    exp = client.create_experiment(name)
    tags = {"kind": "parent", "study": name, DRIVER_TAG: driver, RESUME_TAG: RESUME, METRIC_TAG: "val_auc",
            HEARTBEAT_TAG: f"{NOW - heartbeat_age:.0f}"}
    tags.update({PLANNED_TAG + s: str(n) for s, n in (planned or {}).items()})
    parent = client.create_run(exp, start_time=int((NOW - 600) * 1000), tags=tags).info.run_id
    for stage, trial_id, status, auc, ago, took in trials:
        run = client.create_run(exp, start_time=int((NOW - ago) * 1000), tags={
            "kind": "trial", "study": name, "stage": stage, "trial_id": trial_id, "cell": f"syn/{trial_id}",
            "mlflow.parentRunId": parent}).info.run_id
        if auc is not None:
            client.log_metric(run, "val_auc", auc)
        if status != "RUNNING":
            client.set_terminated(run, status, end_time=int((NOW - ago + (took or 0)) * 1000))
    if parent_status != "RUNNING":
        client.set_terminated(parent, parent_status, end_time=int((NOW - 10) * 1000))
    return exp


TRIALS = [
    ("teachers", "t1", "FINISHED", 0.95, 500, 100),
    ("sweep", "s1", "FINISHED", 0.61, 390, 60),
    ("sweep", "s2", "FAILED", None, 380, 5),
    ("sweep", "s3", "KILLED", 0.55, 300, 30),  # an interrupted run of s3 ...
    ("sweep", "s3", "FINISHED", 0.67, 200, 60),  # ... resumed: the latest counts
    ("sweep", "s4", "RUNNING", 0.58, 100, None),
]


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory) -> Path:
    """An empty store, made once: creating MLflow's schema costs seconds, copying it nothing."""
    path = tmp_path_factory.mktemp("empty") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tmp_path, empty_db):
    work = tmp_path / "w"
    work.mkdir()
    shutil.copyfile(empty_db, work / "mlflow.db")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    return work, uri, MlflowClient(tracking_uri=uri)


def test_status_counts_each_stage_from_the_runs_and_the_parent_tags(store):
    work, uri, client = store
    exp = make_study(client, "s", planned={"teachers": 1, "sweep": 6}, trials=TRIALS)
    ss = read_status(client, uri, "s", exp, now=NOW, host="here")
    by = {st.stage: st for st in ss.stages}
    assert list(by) == list(STAGE_ORDER)
    assert (by["teachers"].done, by["teachers"].planned) == (1, 1)
    sweep = by["sweep"]
    assert (sweep.done, sweep.running, sweep.failed, sweep.killed, sweep.planned) == (2, 1, 1, 0, 6)
    assert sweep.best == pytest.approx(0.67) and sweep.best_cell == "syn/s3"  # the running s4 counts too
    assert sweep.elapsed_s(NOW) == pytest.approx(390)  # first start to now (a trial runs)
    assert by["teachers"].elapsed_s(NOW) == pytest.approx(100)
    assert by["grid"].planned is None and by["grid"].seen == 0
    assert ss.driver.state == "running" and ss.metric == "val_auc"
    text = "\n".join(render(ss, NOW))
    assert "study s: RUNNING, 10m00s since it started" in text
    assert "sweep" in text and "0.6700  (syn/s3)" in text and "grid" in text and "not started" in text
    assert "resume with" not in text


def test_a_stage_of_reused_teachers_says_so_not_that_it_never_started(store):
    """A study whose teachers all come from an earlier study trains none: its parent run records
    how many it reused (study.progress.record_reused), and the status shows that count."""
    from study.progress import REUSED_TAG, record_reused

    work, uri, client = store
    exp = make_study(client, "s", planned={"sweep": 6}, trials=[t for t in TRIALS if t[0] == "sweep"])
    parent = client.search_runs([exp], "tags.kind = 'parent'")[0].info.run_id
    record_reused(client, parent, "teachers", 2)
    assert client.get_run(parent).data.tags[REUSED_TAG + "teachers"] == "2"
    ss = read_status(client, uri, "s", exp, now=NOW, host="here")
    teachers = next(st for st in ss.stages if st.stage == "teachers")
    assert (teachers.reused, teachers.seen, teachers.planned) == (2, 0, None)
    line = next(line for line in render(ss, NOW) if line.strip().startswith("teachers"))
    assert "2 reused from an earlier run (nothing to train)" in line and "not started" not in line


@pytest.mark.parametrize("status,tags,alive,state,words", [
    ("KILLED", {}, True, "gone", "ended KILLED"),
    ("FAILED", {}, True, "gone", "ended FAILED"),
    ("FINISHED", {}, True, "finished", "FINISHED"),
    ("RUNNING", {HEARTBEAT_TAG: str(NOW - 5), DRIVER_TAG: "here:42"}, True, "running", "heartbeat 5s ago"),
    ("RUNNING", {HEARTBEAT_TAG: str(NOW - 5), DRIVER_TAG: "here:42"}, False, "gone", "pid 42 on here"),
    ("RUNNING", {HEARTBEAT_TAG: str(NOW - 5), DRIVER_TAG: "there:42"}, False, "running", "heartbeat"),
    ("RUNNING", {HEARTBEAT_TAG: str(NOW - STALE_S - 1)}, True, "gone", "no heartbeat for 5m01s"),
    ("RUNNING", {}, True, "unknown", "no heartbeat recorded"),
], ids=["killed", "failed", "finished", "alive", "dead-pid", "other-host", "stale", "no-heartbeat"])
def test_driver_state_rule(status, tags, alive, state, words):
    driver = driver_state(status, tags, NOW, host="here", alive=lambda pid: alive)
    assert driver.state == state and words in driver.why


def test_a_gone_driver_gets_the_resume_command(store):
    work, uri, client = store
    exp = make_study(client, "s", heartbeat_age=STALE_S + 60, planned={"sweep": 6}, trials=TRIALS)
    ss = read_status(client, uri, "s", exp, now=NOW, host="here")
    text = "\n".join(render(ss, NOW))
    assert ss.driver.state == "gone"
    assert f"resume with:\n  {RESUME}" in text
    assert "left RUNNING by the driver that is gone" in text  # s4's run is no longer running
    assert one_line(ss, NOW).endswith(f"driver gone: {RESUME}")


def test_cli_shows_one_study_in_full_and_several_one_line_each(store):
    work, uri, client = store
    make_study(client, "a", parent_status="FINISHED", planned={"teachers": 1, "sweep": 0}, trials=TRIALS[:1])
    runner = CliRunner()
    one = runner.invoke(main, ["status", "--workdir", str(work)])
    assert one.exit_code == 0, one.output
    assert "study a: FINISHED" in one.output and "driver: finished" in one.output
    rows = {line.split()[0]: " ".join(line.split()[1:]) for line in one.output.splitlines()[2:6]}
    assert rows == {"teachers": "1 0 0 1 1m40s 0.9500 (syn/t1)", "sweep": "nothing to run",
                    "grid": "not run", "ablations": "not run"}
    make_study(client, "b", parent_status="KILLED", planned={"sweep": 6}, trials=TRIALS[1:])
    both = runner.invoke(main, ["status", "--tracking-uri", uri])
    assert both.exit_code == 0, both.output
    lines = [line.strip() for line in both.output.splitlines()[1:]]
    assert len(lines) == 2 and lines[0].startswith("a ") and "1/1 done" in lines[0]
    assert lines[1].startswith("b ") and "KILLED" in lines[1] and "2/6 done, 1 running, 1 failed" in lines[1]
    assert lines[1].endswith(RESUME) and "best val_auc 0.6700" in lines[1]
    only_b = runner.invoke(main, ["status", "--workdir", str(work), "--study", "b"])
    assert only_b.exit_code == 0 and f"resume with:\n  {RESUME}" in only_b.output


def test_cli_exits_2_on_a_missing_store_or_study(store, tmp_path):
    work, uri, client = store
    runner = CliRunner()
    missing = runner.invoke(main, ["status", "--workdir", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no MLflow store at" in missing.output
    assert not (tmp_path / "nowhere").exists()
    make_study(client, "a")
    unknown = runner.invoke(main, ["status", "--workdir", str(work), "--study", "zz"])
    assert unknown.exit_code == 2 and "study 'zz' not found" in unknown.output and "['a']" in unknown.output
    client.delete_experiment(client.get_experiment_by_name("a").experiment_id)
    empty = runner.invoke(main, ["status", "--workdir", str(work)])
    assert empty.exit_code == 2 and "holds no study" in empty.output


def test_parent_tags_planned_once_driver_and_heartbeat(store):
    work, uri, client = store
    exp = client.create_experiment("s")
    run = client.create_run(exp).info.run_id
    record_driver(client, run, resume=RESUME, metric="val_ap")
    record_planned(client, run, "grid", 8)
    record_planned(client, run, "grid", 3)  # a resumed stage keeps the number it started with
    clock = Clock(NOW)
    beat = Heartbeat(uri, run, every_s=30, clock=clock)
    assert beat.beat() and not beat.beat()  # at most every 30 s
    clock.t += 31
    assert beat.beat()
    tags = client.get_run(run).data.tags
    assert tags[PLANNED_TAG + "grid"] == "8" and tags[METRIC_TAG] == "val_ap" and tags[RESUME_TAG] == RESUME
    assert tags[HEARTBEAT_TAG] == f"{NOW + 31:.0f}" and tags[DRIVER_TAG].endswith(f":{os.getpid()}")
    restored = pickle.loads(pickle.dumps(beat))  # into Ray's tuner.pkl: no client
    assert restored._client is None and restored.run_id == run
    down = Heartbeat(uri, run, clock=clock)
    down._client = Down()
    assert not down.beat()  # a server that does not answer: a warning, no exception


class Down:
    def set_tag(self, *args):
        raise ConnectionError("no answer")


@pytest.mark.parametrize("argv", [["status", "--help"], ["status", "--workdir", "/nonexistent/w"]],
                         ids=["help", "no-store"])
def test_status_help_and_a_missing_store_import_no_heavy_package(argv):
    from test_cli_speed import imported_after

    rc, heavy, stderr = imported_after(argv)
    assert heavy == [] and rc == (0 if "--help" in argv else 2), stderr


def test_resume_command_wording():
    assert resume_command("c.yaml", "w") == "study run c.yaml --resume --workdir w"
    assert resume_command("c.yaml", "w", ["a.b=[0, 1]"], "auto") == \
        "study run c.yaml --resume --workdir w --set 'a.b=[0, 1]' --address auto"


# --- the progress line ----------------------------------------------------------------------
def progress(planned: int = 4, tty: bool = False):
    clock, out = Clock(), io.StringIO()
    p = StageProgress("grid", planned, stream=out, tty=tty, clock=clock)
    p.begin()
    return p, clock, out


def test_progress_prints_a_line_per_change_when_not_a_terminal():
    p, clock, out = progress()
    p.trial_started("a")
    p.trial_started("b")
    clock.t = 10
    p.tick()  # nothing changed: no line
    p.trial_ended("a")
    clock.t = 12
    p.trial_ended("b", failed=True)
    p.trial_started("c")
    clock.t = 20
    p.trial_started("d")
    p.trial_ended("c")
    p.trial_ended("d")
    p.close()  # the last line was shown already
    assert out.getvalue().splitlines() == [
        "[grid] 0/4 done, 1 running, 0 failed, 0s elapsed, ETA ?",
        "[grid] 0/4 done, 2 running, 0 failed, 0s elapsed, ETA ?",
        "[grid] 1/4 done, 1 running, 0 failed, 10s elapsed, ETA 10s",
        "[grid] 1/4 done, 0 running, 1 failed, 12s elapsed, ETA 11s",
        "[grid] 1/4 done, 1 running, 1 failed, 12s elapsed, ETA 11s",
        "[grid] 1/4 done, 2 running, 1 failed, 20s elapsed, ETA 11s",  # d has a mean trial to go
        "[grid] 2/4 done, 1 running, 1 failed, 20s elapsed, ETA 10s",
        "[grid] 3/4 done, 0 running, 1 failed, 20s elapsed, done",
    ]


def test_eta_is_the_work_left_over_the_concurrent_slots():
    p, clock, _ = progress(planned=10)
    p.quiet = True
    for t in "ab":
        p.trial_started(t)
    clock.t = 30
    p.trial_ended("a")
    p.trial_ended("b")  # mean 30 s; 2 slots seen
    p.trial_started("c")
    clock.t = 40  # c has run 10 s: 20 s of it left
    # 7 waiting x 30 s + 20 s, over 2 slots
    assert p.eta() == pytest.approx((7 * 30 + 20) / 2)
    assert fmt_duration(p.eta()) == "1m55s" and fmt_duration(7380) == "2h03m" and fmt_duration(None) == "?"


def test_progress_rewrites_one_line_on_a_terminal():
    p, clock, out = progress(planned=2, tty=True)
    p.trial_started("a")
    clock.t = 0.5
    p.tick()  # under a second, same counts: not rewritten
    clock.t = 1.5
    p.tick()  # the elapsed time moved
    p.trial_ended("a")
    p.trial_started("b")
    clock.t = 3
    p.trial_ended("b")
    p.close()
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n") and text.rstrip().endswith("done")
    frames = [f.rstrip() for f in text.rstrip("\n").split("\r")[1:]]
    assert frames == [
        "[grid] 0/2 done, 1 running, 0 failed, 0s elapsed, ETA ?",
        "[grid] 0/2 done, 1 running, 0 failed, 2s elapsed, ETA ?",
        "[grid] 1/2 done, 0 running, 0 failed, 2s elapsed, ETA 2s",
        "[grid] 1/2 done, 1 running, 0 failed, 2s elapsed, ETA 2s",
        "[grid] 2/2 done, 0 running, 0 failed, 3s elapsed, done",
    ]


def test_a_restored_stage_goes_on_counting():
    p, clock, out = progress(planned=3)
    p.trial_started("a")
    clock.t = 8
    p.trial_ended("a")
    saved = p.state()
    again = pickle.loads(pickle.dumps(p))  # Ray's tuner.pkl: name, planned, quiet only
    assert (again.name, again.planned, again.counts()) == ("grid", 3, (0, 0, 0))
    again.restore(saved)
    again.sync(done=["a", "b"], failed=["c"])  # Ray's statuses: b and c ended before the restore
    assert again.counts() == (2, 0, 1) and again.durations == [8]
    again.quiet = True
    again.trial_started("c")  # an errored trial resumed
    assert again.counts() == (2, 1, 0)


# --- end to end ----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_tiny_study_shows_progress_lines_and_status_reads_it(tmp_path, synthetic_root):
    from studies import grid_study, kill_tree

    cfg = grid_study(tmp_path, synthetic_root, "tiny", seeds=(0, 1), epochs=1, steps=2, volume=10)
    work = tmp_path / "w"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "study.cli", "run", str(cfg), "--workdir", str(work),
                             "--max-concurrent", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=500)
    finally:
        kill_tree(proc.pid)
    print(f"study run: {time.perf_counter() - t0:.1f} s\n{out}\n--- stderr\n{err[-3000:]}")
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    lines = [line for line in out.splitlines() if line.startswith("[grid] ")]
    assert lines[0] == "[grid] starting"
    assert lines[1].startswith("[grid] 0/2 done, 0 running, 0 failed")  # at the stage's first step
    assert any(line.startswith("[grid] 0/2 done, 1 running, 0 failed") for line in lines)
    assert lines[-1].startswith("[grid] 2/2 done, 0 running, 0 failed") and lines[-1].endswith("done")
    assert any(line.startswith("[grid] 1/2 done") and "ETA" in line for line in lines)
    for table in ("Trial status", "Trial name", "╭", "+----"):  # Ray's tables (its old and new output)
        assert table not in out + err

    status = subprocess.run([sys.executable, "-m", "study.cli", "status", "--workdir", str(work)],
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    grid = next(line.split() for line in status.stdout.splitlines() if line.strip().startswith("grid"))
    assert grid[1:5] == ["2", "0", "0", "2"]  # done, running, failed, planned
    assert "study tiny: FINISHED" in status.stdout and "driver: finished" in status.stdout

    # a driver that died leaves its run RUNNING: its pid is gone, and status says how to resume
    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    parent = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], "tags.kind = 'parent'")[0]
    client.update_run(parent.info.run_id, status="RUNNING")
    gone = subprocess.run([sys.executable, "-m", "study.cli", "status", "--workdir", str(work)],
                          capture_output=True, text=True, timeout=120)
    assert "is not running" in gone.stdout
    assert f"resume with:\n  study run {cfg.resolve()} --resume --workdir {work.resolve()}" in gone.stdout
