"""A real MLflow tracking server (`mlflow server`, SQLite backend, artifacts proxied) under a
study, and one that dies mid-study: the driver's callback keeps what it cannot write, retries
with backoff and writes it, in order and once, when the server is back; or ends the study with
a message naming the URI, and `--resume` writes the rest.

The fast tests drive `MLflowTrialCallback`'s queue with a stand-in client that fails while its
"server" is down (no server); the slow ones start `mlflow server` on a free port of 127.0.0.1
and `study run` in a subprocess, with MLflow's own HTTP retries turned off (else each request
retries for minutes: MLFLOW_HTTP_REQUEST_MAX_RETRIES, default 7 with backoff factor 2).
"""
from __future__ import annotations

import filecmp
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from click.testing import CliRunner
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST
from mlflow.tracking import MlflowClient
from studies import grid_study, kill_tree
from test_tracking import FakeTrial, trial_config

from study import tracking
from study.report_cli import report
from study.tracking import WAIT_ENV, MLflowTrialCallback, Outage, Tracking, TrackingUnavailable, transient

# MLflow's client retries each HTTP request itself (urllib3, backoff factor 2, 7 retries): off here
QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


# --- the queue, with a stand-in client -----------------------------------------------------------
class Flaky:
    """A real SQLite client whose "server" can be down (every call raises ConnectionError) or can
    lose the answer to a call it carried out (`lose`: method names)."""

    def __init__(self, client: MlflowClient):
        self.client, self.down, self.lose, self.attempts = client, False, set(), 0
        self.fail: Exception | None = None  # raised by every call

    def __getattr__(self, name):
        method = getattr(self.client, name)

        def call(*args, **kwargs):
            self.attempts += 1
            if self.down:
                raise requests.ConnectionError("[Errno 111] Connection refused")
            if self.fail is not None:
                raise self.fail
            out = method(*args, **kwargs)
            if name in self.lose:
                self.lose.discard(name)
                raise requests.ConnectionError("Connection aborted: the answer was lost")
            return out
        return call


@pytest.fixture
def flaky(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "_GAVE_UP", {})
    monkeypatch.setattr(tracking, "BACKOFF_FIRST_S", 0.05)
    monkeypatch.setattr(tracking, "BACKOFF_MAX_S", 0.2)
    monkeypatch.setenv(WAIT_ENV, "5")
    t = Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}", "s")
    parent = t.start_parent("h", "name: s\n", "v1")
    cb = MLflowTrialCallback(t.uri, t.experiment_id, parent, "s")
    cb._client = Flaky(t.client)
    return t, cb


def history(t: Tracking, key: str = "val_auc") -> list[tuple[int, float]]:
    run = t.children()[0]
    return [(m.step, m.value) for m in t.client.get_metric_history(run.info.run_id, key)]


def test_writes_are_kept_in_order_while_the_server_is_down_and_written_once_when_back(flaky):
    t, cb = flaky
    trial = FakeTrial("t0001", trial_config())
    cb.on_trial_start(0, [], trial)
    cb.on_trial_result(0, [], trial, {"epoch": 0, "val_auc": 0.5})
    cb._client.down = True
    for epoch in (1, 2):  # no exception: the trials go on
        cb.on_trial_result(0, [], trial, {"epoch": epoch, "val_auc": 0.5 + epoch / 10})
    cb.on_trial_complete(0, [], trial)
    assert [op[0] for op in cb._pending] == ["result", "result", "complete"]
    assert history(t) == [(0, 0.5)] and t.children()[0].info.status == "RUNNING"
    cb._client.down = False
    cb.on_experiment_end([])  # the stage's end writes what was kept
    assert not cb._pending
    assert history(t) == [(0, 0.5), (1, 0.6), (2, 0.7)]
    assert len(t.children()) == 1 and t.children()[0].info.status == "FINISHED"


def test_hooks_retry_only_after_the_backoff(flaky, monkeypatch):
    t, cb = flaky
    monkeypatch.setattr(tracking, "BACKOFF_FIRST_S", 3600.0)
    cb._outage.cap_s = 3600.0
    trial = FakeTrial("t0001", trial_config())
    cb._client.down = True
    cb.on_trial_start(0, [], trial)
    tried = cb._client.attempts
    for epoch in range(5):  # a dead server is not hammered, nor does each hook wait for it
        cb.on_trial_result(0, [], trial, {"epoch": epoch, "val_auc": 0.5})
        cb.on_step_end(0, [])
    assert cb._client.attempts == tried and len(cb._pending) == 6
    cb._client.down = False
    cb._outage.next_try = 0.0  # the hour has passed
    cb.on_step_end(0, [])
    assert not cb._pending and len(history(t)) == 5


def test_a_lost_answer_to_create_run_makes_no_second_run(flaky):
    t, cb = flaky
    cb._client.lose = {"create_run", "log_batch"}  # carried out by the server, answer lost
    trial = FakeTrial("t0001", trial_config())
    cb.on_trial_start(0, [], trial)
    cb.on_trial_result(0, [], trial, {"epoch": 0, "val_auc": 0.5})
    cb.on_trial_complete(0, [], trial)
    cb.drain()
    runs = t.children()
    assert len(runs) == 1 and runs[0].data.tags["trial_id"] == "t0001"  # found again by its trial_id
    assert runs[0].data.params["method"] == "ckd" and runs[0].info.status == "FINISHED"
    assert history(t) == [(0, 0.5)]  # written twice, stored once


def test_a_server_that_never_returns_ends_with_what_to_do_and_resume_writes_the_rest(flaky, monkeypatch):
    t, cb = flaky
    monkeypatch.setenv(WAIT_ENV, "0.3")
    trial = FakeTrial("t0001", trial_config())
    cb.on_trial_start(0, [], trial)
    cb._client.down = True
    cb.on_trial_result(0, [], trial, {"epoch": 0, "val_auc": 0.5})
    cb.on_trial_complete(0, [], trial)
    t0 = time.monotonic()
    with pytest.raises(TrackingUnavailable) as err:
        cb.on_experiment_end([])
    assert 0.3 <= time.monotonic() - t0 < 3  # waited, with a bound
    message = str(err.value)
    for text in (t.uri, "did not answer for 0.3 s", "2 record(s) of 1 trial(s) (t0001)", "ConnectionError",
                 "study run <config> --resume", WAIT_ENV):
        assert text in message, text
    # the runner's clean-up says the same at once, without waiting for the server again
    real, t._client = t.client, cb._client
    tried = cb._client.attempts
    with pytest.raises(TrackingUnavailable, match="--resume"):
        t.kill_running()
    assert cb._client.attempts == tried
    t._client = real
    # what was kept is in the state Ray saves; a resumed driver writes it once the server is back
    state = cb.get_state()
    resumed = MLflowTrialCallback(t.uri, t.experiment_id, cb.parent_run_id, "s")
    resumed.set_state(state)
    resumed.on_experiment_end([])
    assert history(t) == [(0, 0.5)] and t.children()[0].info.status == "FINISHED"


def test_state_is_never_empty_and_not_pickled_into_the_tuner(flaky):
    import pickle

    _t, cb = flaky
    assert cb.get_state() == {"pending": []}  # truthy: Ray saves it, so a restore never reads an older one
    cb._client.down = True
    cb.on_trial_start(0, [], FakeTrial("t0001", trial_config()))
    copy = pickle.loads(pickle.dumps(cb))
    assert not copy._pending and copy._client is None and copy.uri == cb.uri


def test_an_error_the_server_will_not_fix_is_raised_at_once(flaky):
    _t, cb = flaky
    trial = FakeTrial("t0001", trial_config())
    cb.on_trial_start(0, [], trial)
    cb._client.fail = MlflowException("Invalid value for metric", error_code=INVALID_PARAMETER_VALUE)
    tried = cb._client.attempts
    with pytest.raises(MlflowException, match="Invalid value"):  # a bug, not an outage: no waiting
        cb.on_trial_result(0, [], trial, {"epoch": 0, "val_auc": 0.5})
    assert cb._client.attempts == tried + 1 and not cb._outage.down


@pytest.mark.parametrize("exc, expected", [
    (requests.ConnectionError("refused"), True),
    (requests.Timeout("read timed out"), True),
    (MlflowException("API request failed", error_code=INTERNAL_ERROR), True),
    (MlflowException("no such run", error_code=RESOURCE_DOES_NOT_EXIST), False),
    (MlflowException("bad", error_code=INVALID_PARAMETER_VALUE), False),
    (requests.HTTPError("503", response=SimpleNamespace(status_code=503)), True),
    (requests.HTTPError("403", response=SimpleNamespace(status_code=403)), False),
    (ValueError("a bug"), False),
])
def test_transient_errors(exc, expected):
    assert transient(exc) is expected


def test_backoff_doubles_up_to_its_cap():
    now = [100.0]
    outage = Outage(clock=lambda: now[0])
    assert outage.due() and not outage.down
    delays = []
    for _ in range(8):
        outage.failed(OSError("refused"))
        delays.append(outage.next_try - now[0])
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert not outage.due()
    now[0] += 30
    assert outage.due()
    now[0] += 5
    assert outage.recovered() == 35 and not outage.down and outage.delay == 0
    short = Outage(clock=lambda: now[0], cap_s=0.5)  # a short wait is tried more often
    for _ in range(3):
        short.failed(OSError("refused"))
    assert short.delay == 0.5


def test_a_bad_wait_setting_names_the_variable(monkeypatch):
    from trainables.errors import UserError

    monkeypatch.setenv(WAIT_ENV, "ten minutes")
    with pytest.raises(UserError, match=f"{WAIT_ENV}='ten minutes'"):
        tracking.wait_limit_s()


# --- a real `mlflow server` under `study run` ------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mlflow server` on 127.0.0.1: a SQLite backend store, artifacts proxied into a folder
    (so runs get `mlflow-artifacts:` URIs); stopped and started again on the same port and store."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.db, self.artifacts, self.log = folder / "mlflow.db", folder / "artifacts", folder / "server.log"
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    @property
    def up(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 120.0) -> None:
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.db}",
               "--artifacts-destination", str(self.artifacts), "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", "1"]
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.25)
        raise AssertionError(f"mlflow server did not answer in {timeout} s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.up:
            kill_tree(self.proc.pid)  # the server and its uvicorn and job-runner processes, by id
            self.proc.wait(timeout=30)
        self.proc = None

    def trial_statuses(self, study: str) -> list[str]:
        """Read from the backend store itself (the server may be down)."""
        client = MlflowClient(f"sqlite:///{self.db}")
        exp = client.get_experiment_by_name(study)
        runs = client.search_runs([exp.experiment_id], "tags.kind = 'trial'") if exp is not None else []
        return [r.info.status for r in runs]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """One server for the module's studies (each its own experiment); a test that stops it starts it again."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in QUICK_HTTP.items():
            patch.setenv(key, value)
        s = Server(tmp_path_factory.mktemp("server"))
        s.start()
        try:
            yield s
        finally:
            s.stop()


@pytest.fixture
def server(mlflow_server):
    """The module's server, started again if a test stopped it and failed before restarting it."""
    if not mlflow_server.up:
        mlflow_server.start()
    return mlflow_server


class Driver:
    """`study run` in a subprocess (its own session), its output in a file; killed with its Ray
    by process id should the test fail before it ends."""

    def __init__(self, cfg: Path, work: Path, log: Path, wait_s: float, *extra: str):
        cmd = [sys.executable, "-m", "study.cli", "run", str(cfg), "--workdir", str(work), "--quiet",
               "--max-concurrent", "1", *extra]
        # Ray's own loggers on (as outside tests): each trial's result.json, to check MLflow against
        env = {**os.environ, **QUICK_HTTP, WAIT_ENV: str(wait_s), "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "0"}
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text()

    def wait_for(self, condition, what: str, timeout: float = 300.0) -> None:
        deadline = time.time() + timeout
        while not condition():
            assert self.proc.poll() is None, f"the driver ended before {what}:\n{self.output()[-3000:]}"
            assert time.time() < deadline, f"no {what} in {timeout} s:\n{self.output()[-3000:]}"
            time.sleep(0.2)

    def end(self, timeout: float = 600.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            kill_tree(self.proc.pid)


def study_config(tmp_path: Path, root: Path, name: str, uri: str, seeds=range(3), epochs: int = 3,
                 steps: int = 40) -> Path:
    """Three trials, one at a time (--max-concurrent 1), a few seconds each: the server can die
    after the first has finished, while the others still train."""
    return grid_study(tmp_path, root, name, seeds, epochs, steps, volume=10, tracking_uri=uri, resources={"cpu": 1})


def ray_results(work: Path, name: str) -> dict[str, list[dict]]:
    """Each trial's results as Ray stored them (`result.json`, one line a report), by trial id."""
    out = {}
    for path in (work / "ray" / name / "grid").glob("*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if rows:
            out[rows[0]["trial_id"]] = rows
    return out


def assert_nothing_lost(uri: str, work: Path, name: str, trials: int) -> None:
    """One FINISHED run per trial, each metric of each epoch exactly once, as Ray recorded it."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name).experiment_id
    runs = client.search_runs([exp], "tags.kind = 'trial'")
    by_trial = {r.data.tags["trial_id"]: r for r in runs}
    assert len(runs) == len(by_trial) == trials
    assert {r.info.status for r in runs} == {"FINISHED"}
    results = ray_results(work, name)
    assert set(results) == set(by_trial)
    for trial_id, rows in results.items():
        run = by_trial[trial_id]
        logged = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train_loss")]
        assert logged == [(int(r["epoch"]), r["train_loss"]) for r in rows], trial_id
        assert run.data.metrics["test_acc"] == rows[-1]["test_acc"]
        assert run.data.params["method"] == "vt"
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"trial.yaml", "model"}


def assert_models_went_through_the_proxy(server: Server, name: str, tmp_path: Path) -> None:
    client = MlflowClient(server.uri)
    run = client.search_runs([client.get_experiment_by_name(name).experiment_id], "tags.kind = 'trial'")[0]
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    stored = server.artifacts / run.info.artifact_uri.removeprefix("mlflow-artifacts:/") / "model" / "model.pt"
    fetched = client.download_artifacts(run.info.run_id, "model/model.pt", str(tmp_path))
    assert filecmp.cmp(stored, fetched, shallow=False)


def assert_same_report_as_from_the_store(server: Server, name: str, tmp_path: Path) -> None:
    """`study report --tracking-uri http://…` has the tables of a report read from the server's
    backend store (SQLite) itself."""
    reports = {}
    for uri, out in ((server.uri, tmp_path / "http"), (f"sqlite:///{server.db}", tmp_path / "sqlite")):
        res = CliRunner().invoke(report, ["--tracking-uri", uri, "--study", name, "--out", str(out),
                                          "--format", "md,csv,tex"])
        assert res.exit_code == 0, res.output
        reports[out.name] = (out / "report.md").read_text()
    tables = ["cells.csv", "comparisons.csv", "paper_missing.csv", "runs.csv", "teachers.csv", "tables.tex"]
    _same, differ, missing = filecmp.cmpfiles(tmp_path / "http", tmp_path / "sqlite", tables, shallow=False)
    assert not differ and not missing, (differ, missing)
    rows = {key: [line for line in md.splitlines() if line.startswith("|")] for key, md in reports.items()}
    assert rows["http"] == rows["sqlite"] and "| 10 | test_resnet (VT only) |" in "\n".join(rows["http"])
    # the study's config came through the artifact proxy (a reader of the SQLite file alone cannot
    # resolve `mlflow-artifacts:` URIs: its report has no study.yaml)
    assert f"name: {name}" in (tmp_path / "http" / "study.yaml").read_text()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_study_through_a_server_that_dies_mid_study_and_comes_back(server, tmp_path, synthetic_root):
    work = tmp_path / "w"
    cfg = study_config(tmp_path, synthetic_root, "outage", server.uri)
    driver = Driver(cfg, work, tmp_path / "driver.log", wait_s=60)  # tries again every 6 s at most
    driver.wait_for(lambda: "FINISHED" in server.trial_statuses(cfg.stem), "finished trial")
    server.stop()
    down = time.time()
    driver.wait_for(lambda: "does not answer" in driver.output(), "warning of the outage")
    time.sleep(2)
    back = time.time()
    server.start()  # the same port, the same backend store
    assert driver.end() == 0, driver.output()[-3000:]
    assert "answers again" in driver.output()
    stamps = [row["timestamp"] for rows in ray_results(work, "outage").values() for row in rows]
    assert any(int(down) <= t <= back for t in stamps), (down, back, stamps)  # trials reported meanwhile
    assert_nothing_lost(server.uri, work, "outage", trials=3)
    assert not (work / "mlflow.db").exists()  # everything went to the server
    assert_models_went_through_the_proxy(server, "outage", tmp_path)
    assert_same_report_as_from_the_store(server, "outage", tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_server_that_never_returns_ends_the_study_and_resume_writes_the_rest(server, tmp_path, synthetic_root):
    work = tmp_path / "w"
    cfg = study_config(tmp_path, synthetic_root, "gone", server.uri)
    driver = Driver(cfg, work, tmp_path / "driver.log", wait_s=3)
    driver.wait_for(lambda: "FINISHED" in server.trial_statuses(cfg.stem), "finished trial")
    server.stop()
    assert driver.end() == 2, driver.output()[-3000:]
    error = driver.output().split("error: ", 1)[-1]
    for text in (f"MLflow tracking server {server.uri} did not answer for 3 s", "--resume", WAIT_ENV):
        assert text in error, error[-2000:]
    results = ray_results(work, "gone")
    assert len(results) == 3 and all("test_acc" in rows[-1] for rows in results.values())  # trials went on
    server.start()
    resumed = Driver(cfg, work, tmp_path / "resume.log", 60, "--resume")
    assert resumed.end() == 0, resumed.output()[-3000:]
    assert_nothing_lost(server.uri, work, "gone", trials=3)
