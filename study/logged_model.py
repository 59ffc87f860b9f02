"""The driver's half of a trial's MLflow model: the folder the trial exported into its final
checkpoint (trainables/serving.py) becomes the run's logged model, named after the run's cell
(`model_name`: `<study>-<run name>`, unique within a study, so the Models page tells them
apart), and the trial's
dataset records become the run's inputs. Called by the tracking callback when a trial whose
model the study keeps completes (study/tracking.py), after it logged the raw `model/model.pt`.
A grid trial exports no MLflow model: `ensure_logged_model` makes it from `model/model.pt`
when it is first needed (`study predict`, `study report --register`, `study export`).

What `mlflow.<flavour>.log_model` does, minus what costs seconds a trial (exporting again,
inferring requirements, validating the serving example in a subprocess-free but slow way):
create the LoggedModel with the run as its source, declare it the run's output, write the run
and model ids into the MLmodel, upload the folder, mark it READY. So the UI's Models and
Dataset columns fill, and `runs:/<run id>/<model name>` and `models:/<model id>` load with
`mlflow.pyfunc.load_model` (`study export --run` prints both). A run's model is found by its
source run, whatever its name: runs recorded when every model was named `model` still resolve.

Written to be replayed: the callback retries a write the server may recover from (a
transient error propagates), and a replay finds the model it made before instead of making a
second one. Any other error is logged as a warning: a model that cannot be recorded never
stops a study.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from pathlib import Path

from mlflow.entities import Dataset, DatasetInput, InputTag, LoggedModelOutput, LoggedModelStatus
from mlflow.models import Model
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from trainables.errors import UserError
from trainables.serving import DATASETS_FILE, EXPORT_ERROR_FILE, META_FILE, MODEL_DIR, WEIGHTS_FILE

NAME = "model"  # the run's artifact folder of raw weights (`model/model.pt`) and metadata
DATASET_KEYS = ("name", "digest", "source_type", "source", "schema", "profile")

log = logging.getLogger(__name__)


def log_flavour_model(client: MlflowClient, run_id: str, checkpoint_dir: Path) -> None:
    """Log what the trial saved beside `model.pt`: its MLflow model and its dataset records."""
    from study.tracking import transient

    try:
        _log_datasets(client, run_id, checkpoint_dir / DATASETS_FILE)
        if (checkpoint_dir / MODEL_DIR / "MLmodel").is_file():
            log_model_dir(client, run_id, checkpoint_dir / MODEL_DIR)
        elif (checkpoint_dir / EXPORT_ERROR_FILE).is_file():
            log.warning("run %s has no MLflow model: the trial could not export it (%s)", run_id,
                        (checkpoint_dir / EXPORT_ERROR_FILE).read_text().strip()[:300])
            client.log_artifact(run_id, str(checkpoint_dir / EXPORT_ERROR_FILE), NAME)
    except Exception as exc:
        if transient(exc):
            raise  # the callback keeps the write and retries it
        log.warning("run %s: its MLflow model or datasets could not be recorded (%s: %s); "
                    "its model/model.pt is logged", run_id, exc.__class__.__name__, str(exc)[:300])


def ensure_logged_model(client: MlflowClient, run_id: str) -> str:
    """The id of run `run_id`'s READY logged model, exported now from the run's
    `model/model.pt` when it has none yet (grid trials leave the export to the first use:
    trainables/tune.py). The metadata come from the run's `model/model_meta.json`, else (runs
    recorded before it was kept) from its params `arch` and `image_size`. A UserError names the
    run when it kept no weights."""
    from analysis.store import downloaded
    from trainables.models import create_model
    from trainables.serving import model_metadata, save_mlflow_model

    run = client.get_run(run_id)
    model = logged_model_of(client, run_id, run.info.experiment_id)
    if model is not None and str(model.status) == str(LoggedModelStatus.READY):
        return model.model_id
    params, tags = run.data.params, run.data.tags
    try:
        with downloaded(client, run_id, f"{NAME}/{META_FILE}") as path:
            meta = json.loads(path.read_text())
    except FileNotFoundError:  # recorded before the metadata were kept beside the weights
        if "arch" not in params or "image_size" not in params:
            raise UserError(f"run {run_id} ({run.info.run_name!r}) has no 'arch'/'image_size' params: "
                            "not a trial run of a study") from None
        meta = model_metadata(params["arch"], int(params["image_size"]), None, stage=tags.get("stage"),
                              cell=tags.get("cell"))
    try:
        with downloaded(client, run_id, f"{NAME}/{WEIGHTS_FILE}") as path:
            detector = create_model(meta["arch"], weights=path).eval()
    except FileNotFoundError:
        raise UserError(f"run {run_id} ({run.info.run_name!r}) kept no model ({NAME}/{WEIGHTS_FILE}): only "
                        "teacher and grid runs keep theirs; give one of those") from None
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_mlflow_model(detector, Path(tmp) / "model", int(meta["image_size"]), meta)
        return log_model_dir(client, run_id, folder)


def model_name(run) -> str:
    """The logged model's name: the study and the run's name (`quickstart-ckd-100-img-seed-1-…`),
    in the characters MLflow allows in one (no `/ : . %` or quotes)."""
    study = run.data.tags.get("study", "")
    slug = re.sub(r"[^A-Za-z0-9_=+\-]+", "-", f"{study} {run.info.run_name or run.info.run_id}").strip("-")
    return re.sub(r"-{2,}", "-", slug)[:200] or NAME


def logged_model_of(client: MlflowClient, run_id: str, experiment_id: str):
    """The run's logged model, whatever its name (the newest, READY before PENDING), or None."""
    found, token = [], None
    while True:
        page = client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'",
                                           page_token=token)
        found += [m for m in page if m.source_run_id == run_id]
        token = page.token
        if not token:
            break
    if not found:
        return None
    return max(found, key=lambda m: (str(m.status) == str(LoggedModelStatus.READY), m.creation_timestamp))


def log_model_dir(client: MlflowClient, run_id: str, folder: Path) -> str:
    """Log the MLflow model `folder` as run `run_id`'s logged model (`model_name`); its model id."""
    run = client.get_run(run_id)
    name = model_name(run)
    model = logged_model_of(client, run_id, run.info.experiment_id)
    if model is not None and str(model.status) == str(LoggedModelStatus.READY):
        return model.model_id  # logged before (a replayed write)
    if model is None:
        model = client.create_logged_model(run.info.experiment_id, name=name, source_run_id=run_id,
                                           params={k: str(v) for k, v in run.data.params.items()})
    outputs = run.outputs.model_outputs if run.outputs else []
    if not any(o.model_id == model.model_id for o in outputs):
        client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / name
        shutil.copytree(folder, local)
        mlmodel = Model.load(str(local))
        mlmodel.run_id, mlmodel.model_uuid, mlmodel.model_id = run_id, model.model_id, model.model_id
        mlmodel.artifact_path = model.artifact_location
        mlmodel.save(str(local / "MLmodel"))
        client.log_model_artifacts(model.model_id, str(local))
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    _describe(client, run, model.model_id)
    return model.model_id


# the run tags a logged model carries, so that the Models page can filter and compare a study's models
MODEL_TAGS = ("study", "stage", "cell", "method", "volume", "seed", "draw", "arm", "pair", "source", "teacher_name")
# the run's final metrics linked to its logged model (MLflow 3 shows them on the model's page)
MODEL_METRICS = ("test_", "val_", "cross_")


def _describe(client: MlflowClient, run, model_id: str) -> None:
    """Tag the logged model with its run's cell (what differs between a study's models) and link
    the run's final test, validation and cross-dataset metrics to it."""
    tags = {k: run.data.tags[k] for k in MODEL_TAGS if run.data.tags.get(k)}
    if tags:
        client.set_logged_model_tags(model_id, tags)
    linked = {m.key for m in (client.get_logged_model(model_id).metrics or [])}
    for key, value in sorted(run.data.metrics.items()):
        if key.startswith(MODEL_METRICS) and key not in linked:
            client.log_metric(run.info.run_id, key, value, step=0, model_id=model_id)


def _log_datasets(client: MlflowClient, run_id: str, path: Path) -> None:
    if not path.is_file():
        return
    inputs = []
    for record in json.loads(path.read_text()):
        dataset = Dataset(**{k: record.get(k) for k in DATASET_KEYS})
        inputs.append(DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, record["context"])]))
    if inputs:
        client.log_inputs(run_id, datasets=inputs)
