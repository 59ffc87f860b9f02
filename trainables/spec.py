"""What a trial is, as plain typed data, torch-free: the trial's spec (`TrialSpec`, with its
teachers, transfer set and evaluation datasets) and the one encoding of a planned cell into
Ray's trial config and back (`encode_cell`, `split_config`). Planning a study (`study plan`)
imports this and never torch; the trial (`trainables.trial`) imports it to run one.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from trainables.errors import ConfigError
from trainables.hparams import HParams
from trainables.record import RunTags

DEFAULT_BUDGET = 512 * 1024**2  # bytes of decoded images a process keeps (trainables/data/held.py)
SOURCES = ("train_unlabeled", "sbi")  # where an unlabeled transfer set comes from (data/transfer.py)


@dataclass(frozen=True)
class TransferSpec:
    """Which unlabeled transfer set a student trains beside its subset."""

    source: str  # one of SOURCES
    size: int  # images in the set

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ConfigError(f"transfer source={self.source!r} is not one of {list(SOURCES)}")
        if isinstance(self.size, bool) or not _integral(self.size) or self.size < 1:
            raise ConfigError(f"transfer size={self.size!r} must be an integer >= 1")

    @property
    def label(self) -> str:
        """How a run records it: "train_unlabeled:2000"."""
        return f"{self.source}:{self.size}"


def _integral(value: Any) -> bool:
    """An int, or a numpy integer (what pandas hands back), without importing numpy."""
    return isinstance(value, int) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in "iu")


ROLES = ("teacher", "student")
STREAM_MODES = (True, False, "auto")  # TrialSpec.stream / a study's data.stream
# stream="auto" streams a teacher's split when it would take more than this decoded (uint8)
STREAM_ABOVE_BYTES = 2 * 1024**3


HOW = {"how": True}  # TrialSpec field metadata: how a trial runs, not what it trains
SCORING = {"scoring": True}  # TrialSpec field metadata: how the trained model is scored


def _plain(value: Any) -> Any:
    if isinstance(value, TeacherRef):
        return {"arch": value.arch, "checkpoint": value.checkpoint}
    if isinstance(value, TransferSpec):
        return {"source": value.source, "size": int(value.size)}
    if isinstance(value, CrossSet):
        return {"name": value.name, "data": _plain(value.data), "video_rule": value.video_rule,
                "frames_per_video": value.frames_per_video}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class TeacherRef:
    arch: str
    checkpoint: str


@dataclass(frozen=True)
class CrossSet:
    """A dataset the trained model is also scored on (its whole test split), after training:
    metrics `cross_<name>_<metric>` (frame and `video_` ones by `video_rule` over at most
    `frames_per_video` evenly spaced frames a video) and `cross_<name>_n`. Never read to choose
    anything: a trial's choices are made on its own validation split."""
    name: str
    data: Mapping[str, Any]
    video_rule: str = "mean"
    frames_per_video: int | None = 32

    def prefix(self) -> str:
        return f"{CROSS_PREFIX}{self.name}_"


CROSS_PREFIX = "cross_"  # every metric of an evaluation dataset starts with it


@dataclass(frozen=True)
class TrialSpec:
    role: str  # "teacher" (full train split) or "student" (balanced subset of `volume`)
    arch: str
    data: Mapping[str, Any]
    image_size: int = 64
    volume: int | None = None  # None: the whole train split
    subset_seed: int = 0
    teachers: tuple[TeacherRef, ...] = ()
    eval_splits: tuple[str, ...] = field(default=("val", "test"), metadata=SCORING)
    # cap the val set per class (sweeps); test: always the whole split
    max_eval_per_class: int | None = field(default=None, metadata=SCORING)
    eval_seed: int = field(default=0, metadata=SCORING)  # the fixed seed of a capped evaluation set; never the training seed
    weights: str | None = None  # initial weights of the trained model (e.g. ImageNet), a local file
    # a student's unlabeled transfer set, seen by the distillation terms only (data/transfer.py)
    transfer: TransferSpec | None = None
    evaluate: tuple[CrossSet, ...] = field(default=(), metadata=SCORING)  # other datasets scored after training
    # where and how, not what (left out of `identity`): the same numbers either way
    device: str = field(default="auto", metadata=HOW)
    cache_dir: str | None = field(default=None, metadata=HOW)  # teachers' outputs shared by the study (teacher_cache.py)
    stream: bool | str = field(default=False, metadata=HOW)  # a teacher's split decoded batch by batch; or "auto"
    loader_workers: int = field(default=2, metadata=HOW)  # DataLoader worker processes when streaming
    # decoded images: mapped from uint8 array files in this folder (one copy per node, see
    # data/decoded.py), or, when None, decoded into the process and kept up to memory_budget bytes
    decode_dir: str | None = field(default=None, metadata=HOW)
    memory_budget: int = field(default=DEFAULT_BUDGET, metadata=HOW)

    def identity(self, legacy: bool = False) -> dict[str, Any]:
        """What is trained and scored: the fields not marked HOW, those left at their default
        omitted (so a new field with a default keeps the identity of earlier trials). A
        teacher's is what is trained only: how it is scored (SCORING: validation caps, other
        datasets) is recorded on its run but does not make it another teacher, so a study that
        scores it otherwise reuses it. `legacy`: the identity teachers were recorded under before
        (scoring included), so that those are found too."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("how") or value == f.default:
                continue
            if f.metadata.get("scoring") and self.role == "teacher" and not legacy:
                continue
            out[f.name] = _plain(value)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain data for Ray's config and MLflow's trial.yaml; `from_dict` reads it back."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "TrialSpec":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ConfigError(f"trial spec: unknown key(s) {unknown}; known: {sorted(known)}")
        values = dict(config)
        values["teachers"] = tuple(
            t if isinstance(t, TeacherRef) else TeacherRef(**t) for t in values.get("teachers", ())
        )
        values["eval_splits"] = tuple(values.get("eval_splits", cls.eval_splits))
        values["evaluate"] = tuple(e if isinstance(e, CrossSet) else CrossSet(**e) for e in values.get("evaluate", ()))
        if isinstance(values.get("transfer"), Mapping):
            t = values["transfer"]
            if set(t) != {"source", "size"}:
                raise ConfigError(f"trial spec: transfer={dict(t)!r} must have the keys 'source' and 'size'")
            values["transfer"] = TransferSpec(t["source"], t["size"])
        spec = cls(**values)
        if spec.role not in ROLES:
            raise ConfigError(f"trial spec: role={spec.role!r} is not one of {list(ROLES)}")
        if not set(spec.eval_splits) <= {"val", "test"}:
            raise ConfigError(f"trial spec: eval_splits={list(spec.eval_splits)} may hold only 'val' and 'test'")
        if spec.stream not in STREAM_MODES:
            raise ConfigError(f"trial spec: stream={spec.stream!r} must be true, false or 'auto'")
        if spec.loader_workers < 0:
            raise ConfigError(f"trial spec: loader_workers={spec.loader_workers} must be >= 0")
        if spec.memory_budget < 0:
            raise ConfigError(f"trial spec: memory_budget={spec.memory_budget} must be >= 0 (bytes)")
        if spec.transfer is not None and (spec.role != "student" or spec.volume is None):
            raise ConfigError(f"trial spec: transfer={spec.transfer.label!r} is for a student on a subset "
                              f"(role={spec.role!r}, volume={spec.volume!r})")
        if spec.transfer is not None and not isinstance(spec.transfer, TransferSpec):
            raise ConfigError(f"trial spec: transfer={spec.transfer!r} must be {{source, size}}")
        return spec


def encode_cell(spec: TrialSpec, hparams: Mapping[str, Any], tags: RunTags) -> dict[str, Any]:
    """Plain data for Ray: {"spec", "hparams", "tags"} (tags as MLflow strings); `split_config`
    reads it back."""
    return {"spec": spec.to_dict(), "hparams": dict(hparams), "tags": tags.to_mlflow()}


def split_config(config: dict[str, Any]) -> tuple[TrialSpec, HParams, RunTags]:
    """A trial config is {"cell": `encode_cell(...)`} plus the searched hyperparameters at top
    level (a sweep), which go on top of the cell's."""
    cell = config["cell"]
    searched = {k: v for k, v in config.items() if k != "cell"}
    tags = RunTags.from_mlflow(cell["tags"])
    hp = HParams.from_dict({**cell["hparams"], **searched}, where=f"trial {tags.cell}")
    return TrialSpec.from_dict(cell["spec"]), hp, tags
