"""MLflow, written by the driver only: the experiment, the parent run, one child run per trial
(through `analysis.store`, the project's one MLflow adapter; the tags through the trial
record's schema, `trainables.record`).

`MLflowTrialCallback` is our Tune callback: one run per trial id (found again by the
`trial_id` tag and reopened after a resume, never duplicated), per-epoch metrics by
whitelist (no `config/*` or `time_*` noise), ended FINISHED / FAILED; the CLI marks
runs left RUNNING by an interrupted stage KILLED.

A tracking server that stops answering does not stop the trials: the callback keeps what it
could not write, in order, retries with backoff while the stage runs, and writes it all when
the server answers again. At the end of a stage it waits at most `WAIT_ENV` seconds (after
MLflow's own per-request retries, `MLFLOW_HTTP_REQUEST_MAX_RETRIES`), then ends the study
with a `TrackingUnavailable` naming the URI; what was not written is kept in Ray's
experiment state (`get_state`) and written by `study run --resume`.
"""
from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from ray import tune

from analysis.store import (
    CONFIG_ARTIFACT, artifact_root, check_reachable, check_sqlite, downloaded, search_all, sqlite_path,
)
from study.budget import split_recipe
from trainables.errors import UserError
from trainables.hparams import total_steps
from trainables.record import RESULT_TAGS, RunTags
from trainables.tune import MODEL_FILE, MODEL_META_FILE, split_config

METRIC_RE = re.compile(r"^(epoch|lr|train_[a-z0-9_]+|val_[a-z0-9_]+|test_[a-z0-9_]+|cross_[a-z0-9_]+|sys_peak_rss_mb"
                       r"|sys_data_prep_s|sys_export_s)$")
CROSS_ROWS_RE = re.compile(r"^cross_[a-z0-9_]+_rows$")  # an evaluation dataset's rows digest: a tag
SPEC_PARAMS = ("arch", "image_size", "volume", "subset_seed", "max_eval_per_class", "eval_seed")
CHOSEN_FILE = "chosen_hparams.json"
BUDGETS_FILE = "budgets.json"
WAIT_ENV = "CKD_STUDY_TRACKING_WAIT_S"  # how long a stage's end waits for a tracking server that is down
WAIT_DEFAULT_S = 600.0  # a server restart or a short network cut, not an outage that needs a person
BACKOFF_FIRST_S = 1.0  # then doubled after each failed attempt, up to BACKOFF_MAX_S
BACKOFF_MAX_S = 30.0

log = logging.getLogger(__name__)
_GAVE_UP: dict[str, "TrackingUnavailable"] = {}  # tracking URI -> why this driver stopped waiting for it


class TrackingUnavailable(UserError):
    """The tracking server stopped answering and did not come back in time."""


def wait_limit_s() -> float:
    text = os.environ.get(WAIT_ENV, "")
    try:
        value = float(text) if text else WAIT_DEFAULT_S
    except ValueError:
        value = -1.0
    if value < 0:
        raise UserError(f"{WAIT_ENV}={text!r}: give the seconds to wait for the tracking server, e.g. 600")
    return value


class DiskFull(UserError):
    """A disk the study writes to is full: the study stops (exit 2), and resumes once it is freed."""


ENOSPC_TEXTS = ("database or disk is full", "No space left on device", "Errno 28", "ENOSPC")
ENOSPC_PATH = re.compile(r"No space left on device: '([^']+)'")


def disk_full(error: BaseException | str | None) -> bool:
    """Whether an error (or a trial's error text) says a disk is full: ENOSPC anywhere in its
    chain, or SQLite's "database or disk is full"."""
    seen = 0
    while isinstance(error, BaseException) and seen < 10:
        if isinstance(error, OSError) and error.errno == 28:
            return True
        if any(t in str(error) for t in ENOSPC_TEXTS):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return isinstance(error, str) and any(t in error for t in ENOSPC_TEXTS)


LOW_SPACE_BYTES = 4 * 1024 * 1024  # less than this free under the workdir: whatever failed, the disk is the cause


def low_space(path) -> int:
    """The bytes free on the disk of `path` when they are fewer than LOW_SPACE_BYTES, else 0."""
    import shutil
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return 0
    return max(free, 1) if free < LOW_SPACE_BYTES else 0


def disk_full_error(where: str, error: BaseException | str, storage: str | None = None) -> DiskFull:
    text = error if isinstance(error, str) else _short(error)
    path = ENOSPC_PATH.search(text)
    full = path.group(1) if path else where
    if "database or disk is full" in text:  # MLflow's wrapping of it is a page of SQL
        text = "SQLite: database or disk is full"
    return DiskFull(
        f"no space left on the disk of {full} ({text.strip().splitlines()[-1][:300]}): the study stopped. Free "
        f"space there (trial checkpoints{f' in {storage}' if storage else ''}, the decode cache, MLflow's artifacts "
        "and its SQLite store all write to it), then continue with `study run <config> --resume` (same --workdir): "
        "finished trials are kept, the ones that could not finish are run again")


def transient(exc: BaseException) -> bool:
    """An error a tracking server may recover from: no connection, a timeout, a 5xx or 429 answer."""
    if isinstance(exc, MlflowException):
        status = exc.get_http_status_code()
    else:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status is None:
            return isinstance(exc, OSError)  # requests' errors are OSErrors
    return status >= 500 or status == 429


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{exc.__class__.__name__}: {text if len(text) <= 300 else text[:140] + ' … ' + text[-140:]}"


class Outage:
    """When a tracking server stopped answering, and when to try it again (exponential backoff)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, cap_s: float | None = None):
        self.clock, self.cap_s = clock, cap_s  # the longest pause between tries (None: BACKOFF_MAX_S)
        self.since: float | None = None
        self.delay = 0.0
        self.next_try = 0.0
        self.error: BaseException | None = None

    @property
    def down(self) -> bool:
        return self.since is not None

    def due(self) -> bool:
        return not self.down or self.clock() >= self.next_try

    def failed(self, exc: BaseException) -> None:
        now = self.clock()
        if self.since is None:
            self.since = now
        cap = BACKOFF_MAX_S if self.cap_s is None else self.cap_s
        self.delay = min(BACKOFF_FIRST_S if self.delay == 0 else 2 * self.delay, cap)
        self.next_try, self.error = now + self.delay, exc

    def recovered(self) -> float:
        """Seconds it was down."""
        down = self.clock() - self.since if self.since is not None else 0.0
        self.since, self.delay, self.error = None, 0.0, None
        return down


class Tracking:
    """Driver-side access to the study's MLflow experiment."""

    def __init__(self, uri: str, study: str):
        self.uri, self.study = uri, study
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None

    @property
    def client(self) -> MlflowClient:
        """Made on first use: opening a SQLite store creates the file."""
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def check_reachable(self) -> None:
        db = sqlite_path(self.uri)
        if db is not None:
            check_sqlite(db)  # a damaged store is named before MLflow opens it
        check_reachable(self.client, self.uri)

    def existing_experiment(self) -> str | None:
        exp = self.client.get_experiment_by_name(self.study)
        return exp.experiment_id if exp is not None else None

    @property
    def experiment_id(self) -> str:
        """Create the DB and experiment once, in the driver, before any trial starts."""
        if self._experiment_id is None:
            self._experiment_id = self.existing_experiment() or self.client.create_experiment(
                self.study, artifact_location=artifact_root(self.uri), tags=EXPERIMENT_TAGS)
        return self._experiment_id

    def parent_run(self) -> Any | None:
        exp = self.existing_experiment()
        if exp is None:
            return None
        runs = search_all(self.client, [exp], f"tags.kind = 'parent' and tags.study = '{self.study}'")
        return runs[0] if runs else None

    def start_parent(self, config_hash: str, config_text: str, code_version: str) -> str:
        run = self.parent_run()
        if run is not None:
            self.client.update_run(run.info.run_id, status="RUNNING")
            return run.info.run_id
        run = self.client.create_run(self.experiment_id, run_name=self.study, tags={
            "kind": "parent", "study": self.study, "config_hash": config_hash, "code_version": code_version})
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / CONFIG_ARTIFACT).write_text(config_text)
            self.client.log_artifact(run.info.run_id, str(Path(d) / CONFIG_ARTIFACT))
        return run.info.run_id

    def children(self, stage: str | None = None, status: str | None = None) -> list:
        exp = self.existing_experiment()
        if exp is None:
            return []
        flt = f"tags.study = '{self.study}' and tags.kind = 'trial'"
        if stage:
            flt += f" and tags.stage = '{stage}'"
        if status:
            flt += f" and attributes.status = '{status}'"
        return search_all(self.client, [exp], flt)

    def kill_running(self) -> int:
        """End every child run an interrupted stage left RUNNING as KILLED."""
        runs = self._guarded("mark interrupted runs KILLED", self.children, status="RUNNING")
        for run in runs:
            self._guarded("mark interrupted runs KILLED", self.client.set_terminated, run.info.run_id, "KILLED")
        return len(runs)

    def _guarded(self, what: str, call: Callable, *args, **kwargs):
        """`call`, or a TrackingUnavailable naming the URI: at once when the callback already gave up
        on this server (its message says what to do), else when the server does not answer."""
        if self.uri in _GAVE_UP:
            raise TrackingUnavailable(str(_GAVE_UP[self.uri])) from None
        try:
            return call(*args, **kwargs)
        except Exception as exc:
            if disk_full(exc):
                raise disk_full_error(str(sqlite_path(self.uri) or self.uri), exc) from None
            if not transient(exc):
                raise
            raise TrackingUnavailable(
                f"MLflow tracking URI {self.uri} did not answer ({what}; {_short(exc)}): start the server "
                f"again on the same backend store, then continue with `study run <config> --resume`") from None

    def log_chosen(self, run_id: str, chosen) -> None:
        """The sweep's chosen values, on the parent run (`chosen_hparams.json`): a later study
        can run its grid from them (grid.hparams: from_run, grid.from_run: <this run id>)."""
        rows = [{"method": m, "volume": v, "hparams": dict(hp)} for (m, v), hp in sorted(chosen.items())]
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / CHOSEN_FILE).write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
            self.client.log_artifact(run_id, str(Path(d) / CHOSEN_FILE))

    def log_budgets(self, run_id: str, budgets, choices) -> None:
        """min_steps: auto's outcome on the parent run: `budgets.json` (each volume's budget and
        every method's choice with the validation means it rests on) and a `budgets` tag."""
        rows = {"budgets": {str(v): int(b) for v, b in sorted(budgets.items())},
                "choices": [{"method": split_recipe(m)[0], "volume": v, "steps": c.steps, "converged": c.converged,
                             "validation_means": [[s, float(x)] for s, x in c.means],
                             **({"arm": split_recipe(m)[1]} if split_recipe(m)[1] else {})}
                            for (m, v), c in sorted(choices.items())]}
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / BUDGETS_FILE).write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
            self.client.log_artifact(run_id, str(Path(d) / BUDGETS_FILE))
        self.client.set_tag(run_id, "budgets", ", ".join(f"{v}: {b}" for v, b in sorted(budgets.items())))

    def chosen_of(self, run_id: str) -> dict[tuple[str, int], dict[str, Any]]:
        """What `log_chosen` recorded on parent run `run_id`."""
        try:
            with downloaded(self.client, run_id, CHOSEN_FILE) as path:
                rows = json.loads(path.read_text())
        except Exception as exc:
            raise UserError(f"grid.from_run={run_id!r}: no {CHOSEN_FILE} on that run at {self.uri} "
                            f"({exc.__class__.__name__}); give the parent run id of a study whose grid "
                            "took the sweep's values") from None
        return {(r["method"], int(r["volume"])): dict(r["hparams"]) for r in rows}

    def end_parent(self, run_id: str, status: str) -> None:
        self._guarded(f"end the study's run {status}", self.client.set_terminated, run_id, status)

    def finished_teacher(self, config_hash: str) -> Any | None:
        """A FINISHED teacher run of any study with this config hash and a checkpoint, newest first."""
        exps = [e.experiment_id for e in self.client.search_experiments()]
        if not exps:
            return None
        runs = search_all(self.client, exps, f"tags.stage = 'teachers' and tags.config_hash = '{config_hash}' "
                                             f"and attributes.status = 'FINISHED'")
        runs = [r for r in runs if "checkpoint_path" in r.data.tags]
        return max(runs, key=lambda r: r.info.start_time) if runs else None


class MLflowTrialCallback(tune.Callback):
    """Writes each trial's run from the driver. Every write is queued as an op (kind, trial id,
    payload) and written in order; a write the server may recover from (see `transient`) stays
    queued and is retried with backoff at the next hook, and at the end of the stage."""

    def __init__(self, uri: str, experiment_id: str, parent_run_id: str, study: str,
                 log_models: bool = False, code_version: str = "unknown"):
        self.uri, self.experiment_id, self.parent_run_id = uri, experiment_id, parent_run_id
        self.study, self.log_models, self.code_version = study, log_models, code_version
        self._client: MlflowClient | None = None
        self._reset()

    def _reset(self) -> None:
        self._runs: dict[str, str] = {}
        self._nodes: dict[str, list[str]] = {}
        self._finished: set[str] = set()
        self._opened: set[str] = set()  # trials whose "open" op is queued or done
        self._pending: deque[tuple[str, str, Any]] = deque()
        self._outage = Outage(cap_s=min(BACKOFF_MAX_S, wait_limit_s() / 10))  # a few tries in a short wait

    def __getstate__(self):  # pickled into Ray's tuner.pkl: no client, no cache (queued ops: get_state)
        saved = {k: self.__dict__[k] for k in ("uri", "experiment_id", "parent_run_id", "study", "log_models",
                                               "code_version")}
        return {**saved, "_client": None}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset()

    def get_state(self) -> dict:
        """Saved in Ray's experiment state: what is not written yet survives the driver. Never empty,
        so that a restore reads this session's state, not an older one's."""
        return {"pending": list(self._pending)}

    def set_state(self, state: dict) -> None:
        self._pending.extend(state.get("pending", ()))

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    # --- Tune's hooks: queue, then write what can be written ---------------------------------
    def on_trial_start(self, iteration, trials, trial, **info):
        self._open(trial)
        self._flush()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._open(trial)
        now = int(time.time() * 1000)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        metrics = [Metric(k, float(v), now, step) for k, v in result.items()
                   if METRIC_RE.match(k) and isinstance(v, (int, float)) and not isinstance(v, bool)]
        tags = [RunTag(k, str(result[k])) for k in RESULT_TAGS if k in result]
        tags += [RunTag(k, str(v)) for k, v in result.items() if CROSS_ROWS_RE.match(k) and isinstance(v, str)]
        if "node_id" in result:  # every node the trial ran on (it moves after a node dies)
            nodes = self._nodes.setdefault(trial.trial_id, [])
            if result["node_id"] not in nodes:
                nodes.append(str(result["node_id"]))
            tags.append(RunTag("node_ids", ",".join(nodes)))
        self._pending.append(("result", trial.trial_id, (metrics, tags)))
        self._flush()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._open(trial)
        self._pending.append(("complete", trial.trial_id, trial.checkpoint))
        self._opened.discard(trial.trial_id)
        self._flush()

    def on_trial_error(self, iteration, trials, trial, **info):
        self._open(trial)
        error = trial.get_error() if hasattr(trial, "get_error") else None
        self._pending.append(("error", trial.trial_id, str(error)[-4000:] if error else
                              "trial failed (see Ray's error.txt)"))
        self._opened.discard(trial.trial_id)
        self._flush()
        if disk_full(str(error) if error else None):  # the other trials would fail the same way: stop now
            raise disk_full_error(getattr(trial, "local_path", None) or "the study's storage", str(error))

    def on_step_end(self, iteration, trials, **info):
        if self._pending:
            self._flush()

    def on_experiment_end(self, trials, **info):
        self.drain()

    def run_id(self, trial) -> str:
        """The trial's run, made or found (its writes so far flushed)."""
        self._open(trial)
        self._flush()
        return self._run_of(trial.trial_id)

    # --- writing -------------------------------------------------------------------------------
    def _open(self, trial) -> None:
        if trial.trial_id not in self._opened:
            self._opened.add(trial.trial_id)
            self._pending.append(("open", trial.trial_id, trial.config))

    def _flush(self) -> None:
        """Write the queued ops, oldest first; stop at the first that the server may yet accept."""
        if not self._outage.due():
            return
        while self._pending:
            try:
                self._apply(*self._pending[0])
            except Exception as exc:
                if disk_full(exc):  # SQLite's "database or disk is full": no wait brings the space back
                    raise disk_full_error(str(sqlite_path(self.uri) or self.uri), exc) from exc
                if not transient(exc):
                    raise
                if not self._outage.down:
                    log.warning("MLflow tracking server %s does not answer (%s): the trials go on; their "
                                "records are kept and written when it answers again", self.uri, _short(exc))
                self._outage.failed(exc)
                return
            self._pending.popleft()
            if self._outage.down:
                log.warning("MLflow tracking server %s answers again after %.0f s: writing %d kept record(s)",
                            self.uri, self._outage.recovered(), len(self._pending))

    def drain(self) -> None:
        """Write everything queued, waiting with backoff at most `wait_limit_s()` for the server."""
        deadline = time.monotonic() + wait_limit_s()
        self._flush()
        while self._pending:
            if time.monotonic() >= deadline:
                raise self._give_up()
            time.sleep(max(0.0, min(self._outage.next_try, deadline) - time.monotonic()))
            self._flush()

    def _give_up(self) -> TrackingUnavailable:
        trials = sorted({tid for _, tid, _ in self._pending})
        error = self._outage.error
        exc = TrackingUnavailable(
            f"MLflow tracking server {self.uri} did not answer for {wait_limit_s():g} s after the stage's "
            f"trials ended ({_short(error) if error else 'no answer'}); {len(self._pending)} record(s) of "
            f"{len(trials)} trial(s) ({', '.join(trials[:5])}{', …' if len(trials) > 5 else ''}) are not "
            "written yet. The trials' results are kept in Ray's storage: start the server again on the same "
            "backend store and artifact destination, then continue with `study run <config> --resume` (same "
            f"--workdir), which writes them. To wait longer for a server, set {WAIT_ENV} (seconds).")
        _GAVE_UP[self.uri] = exc
        return exc

    def _apply(self, kind: str, trial_id: str, payload: Any) -> None:
        if kind == "open":
            self._open_run(trial_id, payload)
            return
        run_id = self._run_of(trial_id)
        if trial_id in self._finished:
            return
        if kind == "result":
            metrics, tags = payload
            self.client.log_batch(run_id, metrics=metrics, tags=tags)
        elif kind == "complete":
            self._complete(run_id, payload)
            self._runs.pop(trial_id, None)
        elif kind == "error":
            self._fail(run_id, payload)
            self._runs.pop(trial_id, None)

    def _run_of(self, trial_id: str, config: dict | None = None) -> str:
        """Found by its `trial_id` tag (so a retried write or a resume never makes a second run),
        made when there is none; a FINISHED one is left as it is (Ray only replays its end)."""
        if trial_id in self._runs:
            return self._runs[trial_id]
        found = search_all(self.client, [self.experiment_id],
                           f"tags.trial_id = '{trial_id}' and tags.study = '{self.study}'")
        if found:
            run_id = found[0].info.run_id
            if found[0].info.status == "FINISHED":
                self._finished.add(trial_id)
            elif config is not None:
                self.client.update_run(run_id, status="RUNNING")  # reopened after a resume
        elif config is None:
            raise UserError(f"no MLflow run of trial {trial_id} in study {self.study!r} at {self.uri} (deleted?): "
                            "restore it, or run the study again under another name")
        else:
            run_id = self._create(trial_id, config)
        self._runs[trial_id] = run_id
        return run_id

    def _open_run(self, trial_id: str, config: dict) -> None:
        run_id = self._run_of(trial_id, config)
        if trial_id not in self._finished:  # again after a retry: a create whose answer was lost
            self._log_inputs(run_id, config)

    def _create(self, trial_id: str, config: dict) -> str:
        _spec, _hp, run_tags = split_config(config)
        tags = {**run_tags.to_mlflow(), "study": self.study, "kind": "trial", "trial_id": trial_id,
                "mlflow.parentRunId": self.parent_run_id, "code_version": self.code_version}
        return self.client.create_run(self.experiment_id, run_name=run_name(run_tags, trial_id), tags=tags).info.run_id

    def _log_inputs(self, run_id: str, config: dict) -> None:
        """Params and trial.yaml: the same values each time, so writing them twice is harmless."""
        spec, hp, _tags = split_config(config)
        params = {**hp.to_dict(), **{k: getattr(spec, k) for k in SPEC_PARAMS},
                  "teacher_checkpoints": ",".join(t.checkpoint for t in spec.teachers)}
        if spec.volume is not None:  # a student's budget: its subset holds exactly `volume` images
            params["steps"] = total_steps(spec.volume, hp)
        if spec.transfer is not None:  # an unlabeled transfer set beside the subset: "source:size"
            params["transfer"] = spec.transfer.label
        if spec.evaluate:  # cross-dataset scoring: which datasets, and how a video is scored
            params.update({"evaluate": ",".join(c.name for c in spec.evaluate),
                           "video_rule": spec.evaluate[0].video_rule,
                           "frames_per_video": spec.evaluate[0].frames_per_video})
        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "trial.yaml").write_text(yaml.safe_dump(_plain(config), sort_keys=True))
            self.client.log_artifact(run_id, str(Path(d) / "trial.yaml"))

    def _complete(self, run_id: str, checkpoint) -> None:
        if checkpoint is not None:
            with checkpoint.as_directory() as d:
                if self.log_models and (Path(d) / MODEL_FILE).is_file():
                    self.client.log_artifact(run_id, str(Path(d) / MODEL_FILE), "model")
                    if (Path(d) / MODEL_META_FILE).is_file():  # what a later export needs (study.logged_model)
                        self.client.log_artifact(run_id, str(Path(d) / MODEL_META_FILE), "model")
                from study.logged_model import log_flavour_model  # the MLflow model (if any) and datasets
                log_flavour_model(self.client, run_id, Path(d))
        self.client.set_terminated(run_id, "FINISHED")

    def _fail(self, run_id: str, message: str) -> None:
        self.client.set_tag(run_id, "error", _last_line(message))
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "error.txt").write_text(message)
            self.client.log_artifact(run_id, str(Path(d) / "error.txt"))
        self.client.set_terminated(run_id, "FAILED")


# MLflow 3's UI shows an experiment of this kind as model training (runs, metrics, models), not
# as GenAI development (traces, evaluations): the kind its experiment-type selector sets
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def run_name(tags: RunTags, trial_id: str = "") -> str:
    """A trial run's name, what varies first (the UI cuts long names at its column's width):
    `ckd · 100 img · seed 3 · <pair> · <source>`, `ablation ckd k=16 · seed 1 · …`, `sweep ckd ·
    trial 2 · …`, `teacher resnet · <source>`. Unique within a study: it names every part of
    the run's cell (and a sweep trial's number within its search)."""
    sep = " · "
    seed = f"seed {tags.seed}" if tags.draw is None or tags.draw == tags.seed else f"draw {tags.draw} seed {tags.seed}"
    where = [p for p in (tags.pair, tags.source) if p]
    method = tags.method + (f" [{tags.arm}]" if tags.arm else "")
    if tags.stage == "teachers":
        return sep.join([f"teacher {tags.teacher_name or tags.student}", tags.source])
    if tags.stage == "sweep":
        number = trial_id.rsplit("_", 1)[-1].lstrip("0") or "0" if "_" in trial_id else trial_id
        return sep.join([f"sweep {method}", f"trial {number}", f"{tags.volume_label} img", *where])
    if tags.stage == "budget":
        return sep.join([f"budget {method}", f"{tags.budget} steps", f"{tags.volume_label} img", seed, *where])
    if tags.stage == "ablations" and tags.value:  # an ablation of one option of one method
        return sep.join([f"ablation {method} {tags.ablation}={tags.value}", seed, f"{tags.volume_label} img", *where])
    if tags.stage == "ablations":
        return sep.join([f"ablation {tags.volume_label} img", method, seed, *where])
    return sep.join([method, f"{tags.volume_label} img", seed, *where])


def _last_line(message: str) -> str:
    lines = [line for line in message.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else message)[:500]


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def runs_by_tag(runs: Iterable, tag: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in runs:
        out.setdefault(r.data.tags.get(tag, ""), []).append(r)
    return out
