"""MLflow, written by the driver only: the experiment, the parent run, one child run per trial
(through `analysis.store`, the project's one MLflow adapter; the tags through the trial
record's schema, `trainables.record`).

`MLflowTrialCallback` is our Tune callback: one run per trial id (found again by the
`trial_id` tag and reopened after a resume, never duplicated), per-epoch metrics by
whitelist (no `config/*` or `time_*` noise), ended FINISHED / FAILED; the CLI marks
runs left RUNNING by an interrupted stage KILLED.
"""
from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import yaml
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

from analysis.store import check_reachable, downloaded, search_all
from trainables.errors import UserError
from trainables.record import RESULT_TAGS
from trainables.tune import MODEL_FILE, split_config

METRIC_RE = re.compile(r"^(epoch|lr|train_[a-z0-9_]+|val_[a-z0-9_]+|test_[a-z0-9_]+)$")
SPEC_PARAMS = ("arch", "image_size", "volume", "subset_seed", "max_eval_per_class", "eval_seed")
CHOSEN_FILE = "chosen_hparams.json"



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
        check_reachable(self.client, self.uri)

    def existing_experiment(self) -> str | None:
        exp = self.client.get_experiment_by_name(self.study)
        return exp.experiment_id if exp is not None else None

    @property
    def experiment_id(self) -> str:
        """Create the DB and experiment once, in the driver, before any trial starts."""
        if self._experiment_id is None:
            self._experiment_id = self.existing_experiment() or self.client.create_experiment(self.study)
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
            (Path(d) / "study.yaml").write_text(config_text)
            self.client.log_artifact(run.info.run_id, str(Path(d) / "study.yaml"))
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
        runs = self.children(status="RUNNING")
        for run in runs:
            self.client.set_terminated(run.info.run_id, "KILLED")
        return len(runs)

    def log_chosen(self, run_id: str, chosen) -> None:
        """The sweep's chosen values, on the parent run (`chosen_hparams.json`): a later study
        can run its grid from them (grid.hparams: from_run, grid.from_run: <this run id>)."""
        rows = [{"method": m, "volume": v, "hparams": dict(hp)} for (m, v), hp in sorted(chosen.items())]
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / CHOSEN_FILE).write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
            self.client.log_artifact(run_id, str(Path(d) / CHOSEN_FILE))

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
        self.client.set_terminated(run_id, status)

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
    def __init__(self, uri: str, experiment_id: str, parent_run_id: str, study: str,
                 log_models: bool = False, code_version: str = "unknown"):
        self.uri, self.experiment_id, self.parent_run_id = uri, experiment_id, parent_run_id
        self.study, self.log_models, self.code_version = study, log_models, code_version
        self._client: MlflowClient | None = None
        self._runs: dict[str, str] = {}
        self._nodes: dict[str, list[str]] = {}
        self._finished: set[str] = set()

    def __getstate__(self):  # pickled into Ray's tuner.pkl: no client, no cache
        state = self.__dict__.copy()
        state["_client"], state["_runs"], state["_nodes"], state["_finished"] = None, {}, {}, set()
        return state

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def run_id(self, trial) -> str:
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        found = search_all(self.client, [self.experiment_id],
                           f"tags.trial_id = '{trial.trial_id}' and tags.study = '{self.study}'")
        if found:
            run_id = found[0].info.run_id
            if found[0].info.status == "FINISHED":
                # complete before the driver died; Ray only replays its end: leave the run as it is
                self._finished.add(trial.trial_id)
            else:
                self.client.update_run(run_id, status="RUNNING")  # reopened after a resume
        else:
            run_id = self._create(trial)
        self._runs[trial.trial_id] = run_id
        return run_id

    def _create(self, trial) -> str:
        spec, hp, run_tags = split_config(trial.config)
        tags = {**run_tags.to_mlflow(), "study": self.study, "kind": "trial", "trial_id": trial.trial_id,
                "mlflow.parentRunId": self.parent_run_id, "code_version": self.code_version}
        name = f"{run_tags.stage}:{run_tags.cell or trial.trial_id}"
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        params = {**hp.to_dict(), **{k: getattr(spec, k) for k in SPEC_PARAMS},
                  "teacher_checkpoints": ",".join(t.checkpoint for t in spec.teachers)}
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "trial.yaml").write_text(yaml.safe_dump(_plain(trial.config), sort_keys=True))
            self.client.log_artifact(run.info.run_id, str(Path(d) / "trial.yaml"))
        return run.info.run_id

    def on_trial_start(self, iteration, trials, trial, **info):
        self.run_id(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_id = self.run_id(trial)
        if trial.trial_id in self._finished:
            return
        now = int(time.time() * 1000)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        metrics = [Metric(k, float(v), now, step) for k, v in result.items()
                   if METRIC_RE.match(k) and isinstance(v, (int, float)) and not isinstance(v, bool)]
        tags = [RunTag(k, str(result[k])) for k in RESULT_TAGS if k in result]
        if "node_id" in result:  # every node the trial ran on (it moves after a node dies)
            nodes = self._nodes.setdefault(trial.trial_id, [])
            if result["node_id"] not in nodes:
                nodes.append(str(result["node_id"]))
            tags.append(RunTag("node_ids", ",".join(nodes)))
        self.client.log_batch(run_id, metrics=metrics, tags=tags)

    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id = self.run_id(trial)
        if trial.trial_id in self._finished:
            return
        if self.log_models and trial.checkpoint is not None:
            with trial.checkpoint.as_directory() as d:
                if (Path(d) / MODEL_FILE).is_file():
                    self.client.log_artifact(run_id, str(Path(d) / MODEL_FILE), "model")
        self.client.set_terminated(run_id, "FINISHED")
        self._runs.pop(trial.trial_id, None)

    def on_trial_error(self, iteration, trials, trial, **info):
        run_id = self.run_id(trial)
        error = trial.get_error() if hasattr(trial, "get_error") else None
        message = str(error)[-4000:] if error else "trial failed (see Ray's error.txt)"
        self.client.set_tag(run_id, "error", _last_line(message))
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "error.txt").write_text(message)
            self.client.log_artifact(run_id, str(Path(d) / "error.txt"))
        self.client.set_terminated(run_id, "FAILED")
        self._runs.pop(trial.trial_id, None)


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
