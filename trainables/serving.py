"""A trained detector as an MLflow model: uint8 face crops in, fake probabilities out.

`FakeProbability` wraps a `Detector` with the preprocessing the engine applies
(uint8 -> /255 -> ImageNet normalisation) and the softmax, so the model alone maps
a uint8 batch (N, 3, S, S) of RGB face crops to P(fake) (N,). `save_mlflow_model`
exports it with `torch.export` (MLflow's "pt2" format: a graph and tensors, loaded
without unpickling objects, and without timm or this project) into an MLflow model
folder with a signature, an input example and, in the MLmodel's `metadata`, what a
caller must do to the pixels first: the image size, the normalisation and, when the
training data were cut from videos by `study data extract`, the face-crop margin and
size. `load_mlflow_model` reads such a folder back (and refuses any other model).

The trial (trainables/tune.py) saves the folder into its final checkpoint beside the
raw `model.pt`; the driver logs it as the run's MLflow model `model`
(study/logged_model.py). `trial_datasets` describes the rows the trial trained and was
scored on, as MLflow dataset records the driver logs with the run.

MLflow and torch.export are imported inside the functions: importing this module is free.
"""
from __future__ import annotations

import copy
import datetime
import functools
import hashlib
import json
import os
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from trainables.device import IMAGENET_MEAN, IMAGENET_STD
from trainables.env import no_download_bars
from trainables.errors import UserError
from trainables.inputs import model_ref_kind, run_of_ref  # noqa: F401  (model_ref_kind re-exported: fetch_model's check)
from trainables.models import Detector

MODEL_DIR = "mlflow_model"  # the MLflow model folder in a trial's final checkpoint
WEIGHTS_FILE = "model.pt"  # a trial's weights (a state dict), in its final checkpoint and as `model/model.pt`
META_FILE = "model_meta.json"  # beside them: the MLflow model's metadata (`model_metadata`), for a later export
DATASETS_FILE = "datasets.json"  # the MLflow dataset records beside it
EXPORT_ERROR_FILE = "mlflow_model_error.txt"  # why the export failed (the trial itself did not)
KIND = "ckd-study-detector"  # metadata["kind"]: what `load_mlflow_model` accepts
EXAMPLE_BATCH = 2  # torch.export keeps a batch of 1 static: the example needs 2 for a dynamic batch
EXTRACT_SUMMARY = "extract_summary.json"  # written by `study data extract` into its --out
SUMMARY_DEPTH = 3  # <root>/manipulated_sequences/Deepfakes/c23/extract_summary.json


class FakeProbability(nn.Module):
    """uint8 RGB (N, 3, S, S) -> P(fake) (N,): the engine's `to_input`, the detector, softmax[:, 1]."""

    def __init__(self, detector: Detector):
        super().__init__()
        self.detector = detector
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        x = images.float().div(255.0)  # (N, 3, S, S)
        _, logits = self.detector((x - self.mean) / self.std)  # (N, 2)
        return torch.softmax(logits.float(), dim=1)[:, 1]  # (N,)


def face_crop_settings(data: Mapping[str, Any]) -> dict[str, float] | None:
    """See `_face_crop` (cached per dataset in this process: a worker runs many trials of one)."""
    found = _face_crop(json.dumps(dict(data), sort_keys=True, default=str))
    return dict(found) if found else None


@functools.lru_cache(maxsize=8)
def _face_crop(data_key: str) -> tuple[tuple[str, float], ...] | None:
    found = _find_face_crop(json.loads(data_key))
    return tuple(found.items()) if found else None


def _find_face_crop(data: Mapping[str, Any]) -> dict[str, float] | None:
    """{"margin", "size"} of `study data extract` runs found under the dataset's root (their
    `extract_summary.json`, at most SUMMARY_DEPTH folders down, never inside `frames/`), or None
    when the data were not extracted from videos by it (e.g. the synthetic set). Extractions with
    different settings under one root: None (no single preprocessing to record)."""
    root = data.get("root") or (Path(str(data["json"])).parent if data.get("json") else None)
    if not root or not Path(str(root)).is_dir():
        return None
    found: set[tuple[float, int]] = set()
    level = [Path(str(root))]
    for depth in range(SUMMARY_DEPTH + 1):
        nxt = []
        for folder in level:
            summary = folder / EXTRACT_SUMMARY
            if summary.is_file():
                try:
                    s = json.loads(summary.read_text())["settings"]
                    found.add((float(s["margin"]), int(s["size"])))
                except (OSError, ValueError, KeyError, TypeError):
                    pass
            if depth < SUMMARY_DEPTH:
                try:
                    nxt += [Path(e.path) for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")
                            and e.name != "frames"]
                except OSError:
                    pass
        level = nxt
    if len(found) != 1:
        return None
    margin, size = found.pop()
    return {"margin": margin, "size": size}


def model_metadata(arch: str, image_size: int, face_crop: Mapping[str, float] | None = None,
                   **extra: Any) -> dict[str, Any]:
    """The MLmodel `metadata`: what the model expects and returns (see module docstring)."""
    return {"kind": KIND, "arch": arch, "image_size": int(image_size),
            "input": f"uint8 RGB face crops (N, 3, {image_size}, {image_size}), values 0-255",
            "output": "P(fake) (N,): softmax of the 2-class logits, class 1 = fake",
            "normalisation": {"scale": 1 / 255, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
            "face_crop": dict(face_crop) if face_crop else None, **extra}


def save_mlflow_model(detector: Detector, path: str | Path, image_size: int,
                      metadata: Mapping[str, Any]) -> Path:
    """Export `detector` (a copy, on the CPU, in eval mode) as an MLflow pytorch-flavour model
    folder at `path` (which must not exist): pt2 format, signature uint8 (-1, 3, S, S) -> float32
    (-1,), an input example, `metadata`. The pyfunc loads it on the CPU (`device: cpu`: a pt2
    graph cannot move to another device).

    Tracing is most of an export's cost (0.3 s of 0.4 s for test_resnet at 64 px), and every
    trial of a stage exports the same graph with other weights: the first export of a
    structure in this process (`_structure_key`: the module tree, its tensors' names, shapes
    and dtypes, its non-persistent buffers, the image size) is kept in `_TEMPLATES`, and later
    ones put their weights into that traced program instead of tracing again
    (`_save_from_template`), checked against the eager model on the input example."""
    wrapper = FakeProbability(copy.deepcopy(detector)).cpu().float().eval()
    wrapper = wrapper.to(memory_format=torch.contiguous_format)  # a CUDA run may train channels_last
    example = np.random.default_rng(0).integers(0, 256, (EXAMPLE_BATCH, 3, image_size, image_size), dtype=np.uint8)
    path = Path(path)
    key = _structure_key(wrapper, image_size)
    template = _TEMPLATES.pop(key, None)
    if template is not None:
        _TEMPLATES[key] = template  # now the most recently used
        if _save_from_template(template, wrapper, example, path, metadata):
            return path
    _export_and_save(wrapper, example, path, image_size, metadata)
    _remember(key, path)
    return path


def _export_and_save(wrapper: FakeProbability, example: np.ndarray, path: Path, image_size: int,
                     metadata: Mapping[str, Any]) -> None:
    """The full export: MLflow traces `wrapper` with torch.export and writes the folder."""
    import mlflow
    import mlflow.pytorch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    requirements = [f"mlflow=={mlflow.__version__}", f"torch=={torch.__version__.split('+')[0]}"]
    signature = ModelSignature(  # given, not inferred: inferring runs the model once more
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, 3, image_size, image_size))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,))]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.export's notes on the traced graph
        mlflow.pytorch.save_model(wrapper, str(path), serialization_format="pt2", input_example=example,
                                  signature=signature, pip_requirements=requirements, metadata=dict(metadata))
    _write_mlmodel(path, metadata, config_only=True)
    serving = path / "serving_input_example.json"
    if serving.is_file():  # written indented (one number a line): several MB at 299 px
        serving.write_text(json.dumps(json.loads(serving.read_text()), separators=(",", ":")))


def _write_mlmodel(path: Path, metadata: Mapping[str, Any], config_only: bool = False) -> None:
    """The MLmodel file: the pyfunc's `device: cpu` config and, for a folder made from a template,
    this model's own metadata, uuid and creation time."""
    from mlflow.models import Model

    mlmodel = Model.load(str(path))
    mlmodel.flavors["python_function"]["config"] = {"device": "cpu"}
    if not config_only:
        mlmodel.metadata = dict(metadata)
        mlmodel.model_uuid = uuid.uuid4().hex
        mlmodel.utc_time_created = str(datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None))
    mlmodel.save(str(path / "MLmodel"))


PT2_FILE = Path("data") / "model.pt2"  # where MLflow's pt2 format keeps the program in the folder
TEMPLATES_KEPT = 2  # structures remembered per process: a stage trains one or two architectures


@dataclass
class _Template:
    program: Any  # torch.export.ExportedProgram traced once; its state_dict (meta tensors) replaced per model
    files: dict[str, bytes]  # every other file of the folder, by relative path


_TEMPLATES: dict[tuple, _Template] = {}  # insertion order = least recently used first


def _structure_key(wrapper: nn.Module, image_size: int) -> tuple:
    """What decides the traced graph, apart from the weights' values: the module tree (its repr
    names every layer and its settings), the state's names, shapes and dtypes, the values of the
    non-persistent buffers (constants of the graph) and the image size."""
    state = wrapper.state_dict()
    tensors = tuple((name, tuple(t.shape), str(t.dtype)) for name, t in state.items())
    constants = hashlib.sha256()
    for name, buf in wrapper.named_buffers():
        if name not in state:
            constants.update(name.encode() + buf.detach().cpu().contiguous().numpy().tobytes())
    return type(wrapper.detector).__qualname__, repr(wrapper), tensors, constants.hexdigest(), int(image_size)


def _remember(key: tuple, path: Path) -> None:
    """Keep the folder just written by a full export as the template of its structure."""
    try:
        program = torch.export.load(str(path / PT2_FILE))
    except Exception:  # noqa: BLE001  (no template: the next model of this structure is traced again)
        return
    files = {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*"))
             if f.is_file() and f.relative_to(path) != PT2_FILE}
    _drop_weights(program)
    _TEMPLATES.pop(key, None)
    _TEMPLATES[key] = _Template(program, files)
    while len(_TEMPLATES) > TEMPLATES_KEPT:
        _TEMPLATES.pop(next(iter(_TEMPLATES)))


def _save_from_template(template: _Template, wrapper: FakeProbability, example: np.ndarray, path: Path,
                        metadata: Mapping[str, Any]) -> bool:
    """The template's program with `wrapper`'s weights, written as a folder at `path`; False (and
    nothing written) when the program does not give the eager model's output on the example
    (a graph that depends on the weights' values): the caller then traces it afresh."""
    program = template.program
    state = wrapper.state_dict()
    if set(state) != set(program.state_dict):
        return False
    for name, old in program.state_dict.items():
        new = state[name].detach()
        program.state_dict[name] = nn.Parameter(new, requires_grad=False) if isinstance(old, nn.Parameter) else new
    x = torch.from_numpy(example)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not torch.allclose(program.module()(x), wrapper(x), rtol=1e-4, atol=1e-6):
            return False
    path.mkdir(parents=True)
    for rel, data in template.files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(data)
    (path / PT2_FILE).parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(path / PT2_FILE))
    _drop_weights(program)
    _write_mlmodel(path, metadata)
    return True


def _drop_weights(program) -> None:
    """Between two exports a template keeps the graph, not a model's weights (88 MB for Xception):
    its tensors become shape-only (meta) stand-ins, all replaced by the next model's."""
    for name, t in list(program.state_dict.items()):
        meta = torch.empty_like(t, device="meta")
        program.state_dict[name] = nn.Parameter(meta, requires_grad=False) if isinstance(t, nn.Parameter) else meta


@dataclass
class LoadedModel:
    module: nn.Module  # uint8 (N, 3, S, S) -> P(fake) (N,), on the CPU
    metadata: dict[str, Any]
    where: str  # the folder or URI it came from, for messages

    @property
    def image_size(self) -> int:
        return int(self.metadata["image_size"])

    @torch.no_grad()
    def predict(self, images: Tensor) -> np.ndarray:
        """P(fake) of a uint8 batch (N, 3, S, S)."""
        return self.module(images).float().numpy()


def load_mlflow_model(folder: str | Path, where: str | None = None) -> LoadedModel:
    """A folder written by `save_mlflow_model` (or downloaded from MLflow); UserError for any
    other model, naming it. pt2 archives are checked by MLflow to hold no pickled objects."""
    import mlflow.pytorch
    from mlflow.models import Model

    where = where or str(folder)
    folder = Path(folder)
    if not (folder / "MLmodel").is_file():
        raise UserError(f"{where} is not an MLflow model (no MLmodel file in {folder})")
    mlmodel = Model.load(str(folder))
    metadata = dict(mlmodel.metadata or {})
    if metadata.get("kind") != KIND or "pytorch" not in mlmodel.flavors:
        raise UserError(f"{where} is not a detector saved by ckd-study (flavours {sorted(mlmodel.flavors)}, "
                        f"metadata kind {metadata.get('kind')!r}, expected {KIND!r}): give the run of a teacher "
                        "or grid trial, or a model registered by `study report --register`")
    module = mlflow.pytorch.load_model(str(folder))
    return LoadedModel(module, metadata, where)


def trial_datasets(spec, source: str) -> list[dict[str, str]]:
    """MLflow dataset records ({"context", "name", "digest", "source", "source_type", "schema",
    "profile"}) of the rows a trial trained on ("training") and was scored on ("validation",
    "test"), rebuilt as `run_trial` built them (the dataset's index is cached in this process);
    the digests are those of the run's `val_rows` / `test_rows` tags."""
    import mlflow.data

    from trainables.data.subsets import rows_digest
    from trainables.trial import dataset_index, eval_frame, training_frame

    index = dataset_index(spec.data)
    train_name = f"{source} train" if spec.volume is None else \
        f"{source} train {spec.volume} (subset seed {spec.subset_seed})"
    sets = [("training", train_name, training_frame(spec, index))]
    for split in spec.eval_splits:
        capped = split == "val" and spec.max_eval_per_class is not None
        name = f"{source} {split}" + (f" (at most {spec.max_eval_per_class} per class)" if capped else "")
        sets.append(({"val": "validation"}.get(split, split), name, eval_frame(spec, index, split)))
    where = spec.data.get("root") or spec.data.get("json") or None
    out = []
    for context, name, frame in sets:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "can be interpreted in multiple ways" (a path); integer columns
            ds = mlflow.data.from_pandas(frame[["path", "label", "video"]].reset_index(drop=True),
                                         source=str(where) if where else None, name=name,
                                         digest=rows_digest(frame))
            out.append({"context": context, **ds.to_dict()})  # the schema is inferred here
    return out


def fetch_model(model: str, tracking_uri: str) -> LoadedModel:
    """`model`: a run id or `runs:/<id>/<model name>` (the run's logged model, found by its source
    run), `models:/<name>/<version>` (or `models:/<name>@<alias>`, `models:/<model id>`), another
    `runs:/` path, or a local MLflow model folder."""
    from mlflow.tracking import MlflowClient

    kind = model_ref_kind(model)
    if kind == "folder":
        return load_mlflow_model(model)
    uri = model
    if kind == "run":
        client = MlflowClient(tracking_uri)
        run_id = run_of_ref(model)
        try:
            run = client.get_run(run_id)
        except Exception:
            raise UserError(f"--model {model}: no run with this id at tracking URI {tracking_uri}: check "
                            "--workdir / --tracking-uri") from None
        mine = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'")
        if not mine:
            raise UserError(f"--model {model}: run {run.info.run_name!r} has no MLflow model (only teacher and "
                            "grid runs of studies run by this version have one; older runs keep model/model.pt only)")
        uri = f"models:/{max(mine, key=lambda m: m.creation_timestamp).model_id}"
    with no_download_bars():  # no download bars on a user's terminal
        return _download_and_load(model, uri, tracking_uri)


def _download_and_load(model: str, uri: str, tracking_uri: str) -> LoadedModel:
    import tempfile

    import mlflow.artifacts
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    # models:/ URIs are resolved through MLflow's *global* tracking URI whatever is passed here (a
    # TODO in MLflow's registry store): point it at this store while downloading
    with tempfile.TemporaryDirectory() as tmp, _use_tracking_uri(tracking_uri):
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp, tracking_uri=tracking_uri,
                                                        registry_uri=tracking_uri)
        except Exception as exc:
            raise UserError(f"--model {model}: cannot be fetched from tracking URI {tracking_uri} "
                            f"({exc.__class__.__name__}: {str(exc)[:200]})") from None
        return load_mlflow_model(local, where=model)
