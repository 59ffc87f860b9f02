"""A study's MLflow runs as one tidy pandas frame: the only MLflow reads of the project.

One row per trial (the latest run of each `trial_id`, should a resume have left two).
Tags keep their names (`stage`, `method`, `pair`, `volume`, `seed`, `source`, ...),
metrics keep theirs (`test_acc`, `val_auc`, ...; the last value of each), and params,
which MLflow returns as strings, are cast and prefixed `p_` (`p_lr`, `p_k`, ...): the
param `lr` and the per-epoch metric `lr` would otherwise collide.
"""
from __future__ import annotations

import math
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.tracking import MlflowClient

from trainables.errors import UserError

TAGS = ("study", "kind", "stage", "method", "teachers", "student", "pair", "volume", "seed", "source",
        "trial_id", "cell", "ablation", "k", "teacher_name", "hparams_from", "checkpoint_path", "space",
        "config_hash", "error", "code_version", "val_rows", "test_rows")
DEFAULT_EXPERIMENT = "Default"


@dataclass(frozen=True)
class Parent:
    run_id: str
    status: str
    tags: dict[str, str]
    config_text: str  # the study.yaml artifact ("" when absent)


@dataclass(frozen=True)
class StudyRuns:
    uri: str
    study: str
    experiment_id: str
    runs: pd.DataFrame  # one row per trial, every status
    parent: Parent | None

    @property
    def finished(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "FINISHED"]


def tracking_uri(workdir: str | Path | None = None, uri: str | None = None) -> str:
    """The URI given, else `study run`'s default: sqlite:///<workdir>/mlflow.db."""
    if uri:
        return uri
    return f"sqlite:///{Path(workdir or 'runs').resolve() / 'mlflow.db'}"


def client_for(uri: str) -> MlflowClient:
    """A client on an existing store: never create an empty SQLite DB by reading."""
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise UserError(f"no MLflow store at {uri} ({path} does not exist): pass the --workdir "
                            "that `study run` used, or --tracking-uri")
    client = MlflowClient(tracking_uri=uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as exc:
        raise UserError(f"MLflow tracking URI {uri} cannot be reached or opened: "
                        f"{exc.__class__.__name__}: {str(exc)[:300]}") from None
    return client


def study_names(client: MlflowClient) -> list[str]:
    return sorted(e.name for e in client.search_experiments() if e.name != DEFAULT_EXPERIMENT)


def resolve_study(client: MlflowClient, uri: str, study: str | None) -> tuple[str, str]:
    """(study name, experiment id); with no name, the store's only study."""
    names = study_names(client)
    if study is None:
        if len(names) != 1:
            raise UserError(f"the tracking store {uri} holds studies {names}: choose one with --study NAME"
                            if names else f"the tracking store {uri} holds no study: run `study run` first")
        study = names[0]
    exp = client.get_experiment_by_name(study)
    if exp is None:
        raise UserError(f"study {study!r} not found at tracking URI {uri} (studies there: {names}): "
                        "check --study, --workdir or --tracking-uri")
    return study, exp.experiment_id


def search_all(client: MlflowClient, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def cast_param(value: str) -> Any:
    """MLflow params are strings: '10' -> 10, '0.05' -> 0.05, 'True' -> True, 'None' -> None."""
    if value in ("None", ""):
        return None
    if value in ("True", "False"):
        return value == "True"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _volume_n(volume: str) -> float:
    return float(volume) if volume.isdigit() else math.nan


def run_record(run) -> dict[str, Any]:
    tags = run.data.tags
    row: dict[str, Any] = {"run_id": run.info.run_id, "status": run.info.status,
                           "start_time": run.info.start_time, "end_time": run.info.end_time}
    row.update({t: tags.get(t, "") for t in TAGS})
    row["parent_run_id"] = tags.get("mlflow.parentRunId", "")
    row.update({f"p_{k}": cast_param(v) for k, v in run.data.params.items()})
    row.update(run.data.metrics)
    row["seed"] = int(row["seed"]) if str(row["seed"]).lstrip("-").isdigit() else -1
    row["volume_n"] = _volume_n(row["volume"])
    row["arch"] = row.get("p_arch") or ""
    row["image_size"] = row.get("p_image_size")
    k = row.get("p_k", None)
    row["k"] = k if isinstance(k, int) else (int(row["k"]) if str(row["k"]).isdigit() else None)
    return row


def runs_frame(runs: list) -> pd.DataFrame:
    """Tidy frame of trial runs; duplicates of a trial id keep the latest run."""
    frame = pd.DataFrame([run_record(r) for r in runs])
    if frame.empty:
        return frame
    frame = frame.sort_values("start_time", kind="stable")
    keyed = frame["trial_id"] != ""
    frame = pd.concat([frame[keyed].drop_duplicates("trial_id", keep="last"), frame[~keyed]])
    return frame.sort_values(["stage", "cell", "start_time"], kind="stable").reset_index(drop=True)


def load_parent(client: MlflowClient, experiment_id: str, study: str) -> Parent | None:
    runs = search_all(client, experiment_id, f"tags.kind = 'parent' and tags.study = '{study}'")
    if not runs:
        return None
    run = max(runs, key=lambda r: r.info.start_time)
    try:
        with downloaded(client, run.info.run_id, "study.yaml") as path:
            text = path.read_text()
    except FileNotFoundError:  # a parent run without the artifact: the report says so
        text = ""
    return Parent(run.info.run_id, run.info.status, dict(run.data.tags), text)


@contextmanager
def downloaded(client: MlflowClient, run_id: str, artifact: str):
    """A run's artifact in a temporary folder (no progress bar); FileNotFoundError if it has none."""
    quiet = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(quiet)
    os.environ[quiet] = "false"
    try:
        with tempfile.TemporaryDirectory() as d:
            try:
                path = Path(client.download_artifacts(run_id, artifact, d))
            except Exception:
                raise FileNotFoundError(f"run {run_id} has no artifact {artifact}") from None
            yield path
    finally:
        if before is None:
            os.environ.pop(quiet, None)
        else:
            os.environ[quiet] = before


def load_study(uri: str, study: str | None = None) -> StudyRuns:
    """Every trial run of `study` (and its parent run); a clear error when there is none."""
    client = client_for(uri)
    study, experiment_id = resolve_study(client, uri, study)
    runs = search_all(client, experiment_id, f"tags.kind = 'trial' and tags.study = '{study}'")
    if not runs:
        raise UserError(f"study {study!r} at tracking URI {uri} has no trial runs yet: "
                        "run it with `study run` first (or check --study)")
    return StudyRuns(uri, study, experiment_id, runs_frame(runs), load_parent(client, experiment_id, study))


def metric_history(uri: str, run_id: str, keys: list[str] | None = None) -> pd.DataFrame:
    """Long frame (key, step, value) of a run's per-epoch metrics (all train_/val_/lr by default)."""
    client = client_for(uri)
    try:
        run = client.get_run(run_id)
    except Exception:
        raise UserError(f"run {run_id} not found at tracking URI {uri}") from None
    if keys is None:
        keys = sorted(k for k in run.data.metrics if k == "lr" or k.startswith(("train_", "val_")))
        keys = [k for k in keys if k != "train_images_per_s"]
    rows = [{"key": k, "step": m.step, "value": m.value, "timestamp": m.timestamp}
            for k in keys for m in client.get_metric_history(run_id, k)]
    frame = pd.DataFrame(rows, columns=["key", "step", "value", "timestamp"])
    # a resumed epoch may be logged twice: keep the last value per (key, step)
    return frame.sort_values("timestamp", kind="stable").drop_duplicates(["key", "step"], keep="last") \
        .sort_values(["key", "step"]).reset_index(drop=True)


def run_label(uri: str, run_id: str) -> str:
    run = client_for(uri).get_run(run_id)
    tags = run.data.tags
    return tags.get("cell") or run.info.run_name or run_id
