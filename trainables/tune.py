"""Ray Tune trainables: thin adapters from a trial config to `trainables.trial.run_trial`.

The only module of `trainables/` that imports Ray. Each epoch is reported with
`tune.report` and a checkpoint holding the full training state, so a trial that
crashes (or whose node dies) resumes where it was and ends with the same numbers.
The final report adds the test metrics, the model's weights (`model.pt`) and the dataset
records; a teacher's or grid trial's also holds what its MLflow model needs
(`MODEL_META_FILE`), and a teacher's the MLflow model itself (`EXPORT_STAGES`,
trainables/serving.py). A grid trial's MLflow model is exported when it is first needed
(`study predict`, `study report --register`, `study export`: study/logged_model.py):
exporting it in every grid trial cost 0.4-0.5 s a trial for models few are ever used.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from ray import tune

from trainables.hparams import HParams
from trainables.record import RunTags
from trainables.serving import META_FILE as MODEL_META_FILE, WEIGHTS_FILE as MODEL_FILE
from trainables.spec import split_config  # noqa: F401  (the one decoding, torch-free; re-exported)
from trainables.trial import TrialSpec, run_trial

STATE_FILE = "state.pt"
FINAL_FILE = "final.json"  # the final metrics, beside the model: the trial is complete
# Fault injection for tests: "EPOCH:MARKER" makes a trial raise once after EPOCH's
# checkpoint, unless the MARKER file exists (it is created when the fault fires).
FAULT_ENV = "CKD_STUDY_INJECT_FAULT"
# For tests: "N:DIR" makes every trial wait, before it trains, until N trials have started
# (each leaves a file in DIR), so that N trials provably run at the same time.
BARRIER_ENV = "CKD_STUDY_TEST_BARRIER"
BARRIER_TIMEOUT_S = 300.0
# Stages whose models the study logs (`model.pt` and `MODEL_META_FILE`): a sweep or ablation
# trial's model is never used. Of these, EXPORT_STAGES export the MLflow model in the trial:
# a study has few teachers, and they are the models most often predicted with or served.
MODEL_STAGES = ("teachers", "grid")
EXPORT_STAGES = ("teachers",)


class InjectedFault(RuntimeError):
    pass


def _finite(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))}


def _maybe_fault(epoch: int) -> None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    at, marker = spec.split(":", 1)
    if epoch == int(at) and not Path(marker).exists():
        Path(marker).write_text("fired\n")
        raise InjectedFault(f"injected fault after epoch {epoch} ({FAULT_ENV})")


def _maybe_wait_for_peers() -> None:
    spec = os.environ.get(BARRIER_ENV)
    if not spec:
        return
    n, folder = spec.split(":", 1)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{os.getpid()}-{time.time_ns()}").touch()
    deadline = time.monotonic() + BARRIER_TIMEOUT_S
    while len(list(folder.iterdir())) < int(n):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{BARRIER_ENV}: only {len(list(folder.iterdir()))} of {n} trials "
                               f"started within {BARRIER_TIMEOUT_S:.0f} s")
        time.sleep(0.05)


def _node_id() -> dict[str, str]:
    """Which Ray node runs this trial (the MLflow callback tags it)."""
    try:
        import ray

        return {"node_id": ray.get_runtime_context().get_node_id()}
    except Exception:  # outside Ray
        return {}


def _export(model, spec: TrialSpec, tags: RunTags, folder: Path) -> dict[str, float]:
    """Beside `model.pt`: the MLflow model's metadata (`MODEL_STAGES`), the MLflow model itself
    (`EXPORT_STAGES` only) and, for every trial, the dataset records (see trainables.serving). A
    model torch.export cannot trace leaves the reason in a file: the trial itself has not
    failed. Returns `sys_export_s`, the seconds the MLflow model took (export stages only)."""
    from trainables import serving

    timing: dict[str, float] = {}
    if tags.stage in MODEL_STAGES:
        meta = serving.model_metadata(spec.arch, spec.image_size, serving.face_crop_settings(spec.data),
                                      stage=tags.stage, cell=tags.cell)
        (folder / MODEL_META_FILE).write_text(json.dumps(meta))
    if tags.stage in EXPORT_STAGES:
        t0 = time.perf_counter()
        try:
            serving.save_mlflow_model(model, folder / serving.MODEL_DIR, spec.image_size, meta)
        except Exception as exc:  # noqa: BLE001  (any export failure: recorded, the trial goes on)
            (folder / serving.EXPORT_ERROR_FILE).write_text(f"{exc.__class__.__name__}: {exc}\n")
        timing["sys_export_s"] = time.perf_counter() - t0
    try:
        records = serving.trial_datasets(spec, tags.source)
        (folder / serving.DATASETS_FILE).write_text(json.dumps(records))
    except Exception:  # noqa: BLE001  (e.g. a data root this node no longer sees: no dataset records)
        pass
    return timing


def train_trial(config: dict[str, Any]) -> None:
    """The one trainable of every stage (teachers, sweep, grid, ablations)."""
    spec, hp, tags = split_config(config)
    _maybe_wait_for_peers()
    node = _node_id()
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            if (Path(d) / FINAL_FILE).is_file():
                # restored from its final checkpoint (a driver died before recording the end):
                # the trial is complete; say so again instead of training it a second time
                tune.report(json.loads((Path(d) / FINAL_FILE).read_text()))
                return
            if (Path(d) / STATE_FILE).is_file():
                resume = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
    last: dict[str, float] = {}

    def on_epoch(epoch: int, metrics: dict, state) -> None:
        last.clear()
        last.update(_finite(metrics))
        if epoch == hp.epochs - 1:
            return  # the final report below carries this epoch, the test metrics and the model
        with tempfile.TemporaryDirectory() as d:
            torch.save(state(), Path(d) / STATE_FILE)
            tune.report({**last, **node}, checkpoint=tune.Checkpoint.from_directory(d))
        _maybe_fault(epoch)

    outcome = run_trial(spec, hp, on_epoch=on_epoch, resume=resume)
    final = {**last, **_finite(outcome.metrics), **outcome.system, "epoch": hp.epochs - 1,
             "train_images_per_s": outcome.result.images_per_second}
    with tempfile.TemporaryDirectory() as d:
        model = outcome.result.model
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, Path(d) / MODEL_FILE)
        final.update(_export(model, spec, tags, Path(d)))
        metrics = {**_finite(final), **node, **outcome.tags}  # tags: digests of the scored rows
        (Path(d) / FINAL_FILE).write_text(json.dumps(metrics))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
