"""A study's MLflow runs as one tidy pandas frame (through `analysis.store`, the MLflow adapter).

One row per trial (the latest run of each `trial_id`, should a resume have left two).
Tags keep their names (`stage`, `method`, `pair`, `volume`, `seed`, `source`, ...),
metrics keep theirs (`test_acc`, `val_auc`, ...; the last value of each), and params,
which MLflow returns as strings, are cast and prefixed `p_` (`p_lr`, `p_k`, ...): the
param `lr` and the per-epoch metric `lr` would otherwise collide.

A student distilled with an unlabeled transfer set (param `transfer`) gets the method
`<method>+<transfer>` (`analysis.tables.method_label`): a cell of its own everywhere. A grid
arm's run (tag `arm`, students.arms) gets the source `<source> · <arm>`: a table block of its
own, with its own VT, comparisons and marks. An
evaluation dataset's scores are metrics `cross_<name>_<metric>`, its rows digest the tag
`cross_<name>_rows` (a column of that name).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
from mlflow.tracking import MlflowClient

from analysis.store import CONFIG_ARTIFACT, downloaded, open_existing, search_all, tracking_uri  # noqa: F401  (tracking_uri: re-exported)
from analysis.tables import method_label
from trainables.errors import UserError
from trainables.record import TAG_NAMES, RunTags

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


ARM_SEPARATOR = " · "


def arm_source(source: str, arm: str) -> str:
    """The table block of a grid arm's runs: its source and arm, e.g. "synthetic · fm"."""
    return f"{source}{ARM_SEPARATOR}{arm}"


def run_record(run) -> dict[str, Any]:
    """One trial run as a row: its tags read through the trial record's schema
    (`trainables.record`: typed seed, volume, K), params cast and prefixed `p_`, metrics."""
    tags = run.data.tags
    planned = RunTags.from_mlflow(tags)
    row: dict[str, Any] = {"run_id": run.info.run_id, "status": run.info.status,
                           "start_time": run.info.start_time, "end_time": run.info.end_time}
    row.update({t: tags.get(t, "") for t in TAG_NAMES})
    row["value"] = planned.value  # an ablation's value of its option (a K-ablation's K before the tag existed)
    row.update({"seed": planned.seed, "draw": planned.draw_or_seed, "volume": planned.volume_label, "k": planned.k,
                "volume_n": float(planned.volume) if planned.volume is not None else math.nan})
    row["parent_run_id"] = tags.get("mlflow.parentRunId", "")
    row.update({f"p_{k}": cast_param(v) for k, v in run.data.params.items()})
    row.update(run.data.metrics)
    row.update({k: v for k, v in tags.items() if k.startswith("cross_") and k.endswith("_rows")})
    row["method"] = method_label(row["method"], row.get("p_transfer"))
    if planned.arm:  # a grid arm (students.arms) is a table block of its own: "<source> · <arm>"
        row["source"] = arm_source(row["source"], planned.arm)
    row["arch"] = row.get("p_arch") or ""
    row["image_size"] = row.get("p_image_size")
    if row["k"] is None and isinstance(row.get("p_k"), int):  # a CKD run outside the K ablation
        row["k"] = row["p_k"]
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
    runs = search_all(client, [experiment_id], f"tags.kind = 'parent' and tags.study = '{study}'")
    if not runs:
        return None
    run = max(runs, key=lambda r: r.info.start_time)
    try:
        with downloaded(client, run.info.run_id, CONFIG_ARTIFACT) as path:
            text = path.read_text()
    except FileNotFoundError:  # a parent run without the artifact: the report says so
        text = ""
    return Parent(run.info.run_id, run.info.status, dict(run.data.tags), text)


def load_study(uri: str, study: str | None = None) -> StudyRuns:
    """Every trial run of `study` (and its parent run); a clear error when there is none."""
    client = open_existing(uri)
    study, experiment_id = resolve_study(client, uri, study)
    runs = search_all(client, [experiment_id], f"tags.kind = 'trial' and tags.study = '{study}'")
    if not runs:
        raise UserError(f"study {study!r} at tracking URI {uri} has no trial runs yet: "
                        "run it with `study run` first (or check --study)")
    return StudyRuns(uri, study, experiment_id, runs_frame(runs), load_parent(client, experiment_id, study))


def metric_history(uri: str, run_id: str, keys: list[str] | None = None) -> pd.DataFrame:
    """Long frame (key, step, value) of a run's per-epoch metrics (all train_/val_/lr by default)."""
    client = open_existing(uri)
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


def histories(uri: str, run_ids: list[str], key: str) -> pd.DataFrame:
    """Long frame (run_id, step, value) of metric `key` per epoch of each run (a resumed epoch's
    last value)."""
    client = open_existing(uri)
    rows = []
    for run_id in run_ids:
        points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
        last = {m.step: m.value for m in points}
        rows += [{"run_id": run_id, "step": step, "value": value} for step, value in sorted(last.items())]
    return pd.DataFrame(rows, columns=["run_id", "step", "value"])


def run_label(uri: str, run_id: str) -> str:
    run = open_existing(uri).get_run(run_id)
    tags = run.data.tags
    return tags.get("cell") or run.info.run_name or run_id
