"""One trial from a plain config: read the data, build the models, train, evaluate.

This is what a Ray Tune trainable calls (`trainables/tune.py`), and what tests and
benchmarks call without Ray. The config is converted once into `TrialSpec` + `HParams`.
Teachers' outputs come from `trainables.teacher_cache` (shared on disk across a study's
trials when `spec.cache_dir` is set): a teacher model is built only when they are missing.
With augmentations beyond flips (`hp.augment`) the teachers are built and run live instead.
A distilling student with `spec.transfer` also trains its distillation terms on an unlabeled
transfer set (trainables/data/transfer.py), whose teacher outputs come the same way.
"""
from __future__ import annotations

import functools
import math
import resource
import time
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Sequence

import pandas as pd
import torch

from trainables.convergence import CURVE_METRIC, LATE_GAIN, late_gain
from trainables.data import read_index
from trainables.data.decoded import DecodedStore
from trainables.data.held import HeldSets
from trainables.data.images import load_images
from trainables.data.stream import FileSet
from trainables.data.subsets import balanced_split, balanced_subset, rows_digest, whole_split
from trainables.data.transfer import TransferImages, transfer_set
from trainables.engine import (
    EpochCallback, ImageSet, TeacherCache, TrainResult, evaluate, pick_device, predict, prepare_teacher,
    set_seed, train_student,
)
from trainables.errors import ConfigError, DataError
from trainables.hparams import HParams
from trainables.losses import needs_teachers
from trainables.models import Detector, create_model
from trainables.spec import (  # noqa: F401  (what a trial is: re-exported for its callers)
    CROSS_PREFIX, DEFAULT_BUDGET, HOW, ROLES, STREAM_ABOVE_BYTES, STREAM_MODES, CrossSet, TeacherRef, TransferSpec,
    TrialSpec,
)
from trainables.teacher_cache import TeacherStore, make_key

@dataclass
class TrialOutcome:
    result: TrainResult
    metrics: dict[str, float] = field(default_factory=dict)  # val_* and test_* of the final model
    tags: dict[str, str] = field(default_factory=dict)  # val_rows / test_rows: digests of the scored rows
    # how it ran, not what it scored: sys_data_prep_s (index, subsets and mapped splits ready),
    # sys_data_prep_start (unix time), sys_peak_rss_mb (the process's peak so far)
    system: dict[str, float] = field(default_factory=dict)


@functools.lru_cache(maxsize=4)
def _index(data_key: str) -> pd.DataFrame:
    import json
    return read_index(json.loads(data_key))


def dataset_index(data: Mapping[str, Any]) -> pd.DataFrame:
    import json
    return _index(json.dumps(dict(data), sort_keys=True))


HELD = HeldSets()  # decoded sets kept by this process when a trial has no decode_dir


@functools.lru_cache(maxsize=8)
def decoded_store(folder: str) -> DecodedStore:
    return DecodedStore(folder)


def image_set(frame: pd.DataFrame, size: int, decode_dir: str | None = None,
              memory_budget: int = DEFAULT_BUDGET) -> ImageSet:
    """A frame's decoded images: mapped from `decode_dir` (decoded there first if missing), or
    decoded into this process (kept across its trials up to `memory_budget` bytes)."""
    labels = torch.tensor(frame["label"].to_numpy(), dtype=torch.long)
    images, mapped = frame_images(frame, size, decode_dir, memory_budget)
    return ImageSet(images, labels, list(frame["video"]), mapped=mapped)


def frame_images(frame: pd.DataFrame, size: int, decode_dir: str | None = None,
                 memory_budget: int = DEFAULT_BUDGET):
    """(uint8 images, the mapped file or None) of a frame's paths, as `image_set` decodes them;
    the frame needs no label column (an unlabeled transfer set has none)."""
    paths = [str(p) for p in frame["path"]]
    if decode_dir is not None:
        mapped = decoded_store(decode_dir).get(paths, size)
        return mapped.images, mapped
    return HELD.get((tuple(paths), size), lambda: load_images(paths, size), memory_budget), None


def file_set(frame: pd.DataFrame, size: int, workers: int) -> FileSet:
    """A frame's images left on disk, decoded batch by batch while training."""
    return FileSet(list(frame["path"]), torch.tensor(frame["label"].to_numpy(), dtype=torch.long), size,
                   list(frame["video"]), workers=workers)


def streams(spec: TrialSpec, num_images: int) -> bool:
    """Whether a split of `num_images` is streamed from disk rather than decoded into memory.
    "auto" never streams with a decode_dir: the mapped array is read without decoding."""
    if spec.stream == "auto":
        return spec.decode_dir is None and num_images * 3 * spec.image_size ** 2 > STREAM_ABOVE_BYTES
    return bool(spec.stream)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (MiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return peak / 1024.0


def training_frame(spec: TrialSpec, index: pd.DataFrame) -> pd.DataFrame:
    if spec.volume is None:
        return index[index["split"] == "train"].reset_index(drop=True)
    return balanced_subset(index, spec.volume, spec.subset_seed)


def eval_frame(spec: TrialSpec, index: pd.DataFrame, split: str) -> pd.DataFrame:
    """The rows `split` is scored on, the same for every trial of a study: the whole split (test
    always, as the paper scores it), or a validation set capped at `max_eval_per_class` per class
    (sweeps, or a grid's per-epoch validation), drawn with the study's `eval_seed`. Never drawn
    with the training seed: the seeds of a cell are scored on identical rows."""
    if split == "test" or spec.max_eval_per_class is None:
        return whole_split(index, split)
    return balanced_split(index, split, seed=spec.eval_seed, max_per_class=spec.max_eval_per_class)


def eval_set_record(split: str, frame: pd.DataFrame) -> tuple[dict[str, float], dict[str, str]]:
    """What a run records of the set it was scored on: size and class counts (metrics), and a
    digest of its rows (a tag), so that a reader can check two runs saw the same rows."""
    labels = frame["label"].to_numpy()
    counts = {f"{split}_n": float(len(frame)), f"{split}_n_real": float((labels == 0).sum()),
              f"{split}_n_fake": float((labels == 1).sum())}
    return counts, {f"{split}_rows": rows_digest(frame)}


def load_teachers(refs: Sequence[TeacherRef]) -> list[Detector]:
    teachers = []
    for ref in refs:
        t = create_model(ref.arch, weights=ref.checkpoint)
        t.eval().requires_grad_(False)
        teachers.append(t)
    return teachers


def teacher_outputs(spec: TrialSpec, hp: HParams, frame: pd.DataFrame, train: ImageSet,
                    device: torch.device) -> list[TeacherCache]:
    """Each teacher's outputs on the training subset: from memory or `spec.cache_dir` when
    there, else computed (and stored). A teacher model is built only for a miss. Only for
    runs whose one augmentation is flips (`hp.teacher_cacheable`): with others, the teachers
    run live on each step's views and nothing is read or written here."""
    if not hp.teacher_cacheable:
        raise ValueError(f"augment={list(hp.augment)} makes new views every step: the teachers run live "
                         "(train_student with the teacher models), their outputs are not cached")
    return cached_outputs(spec, hp, [str(p) for p in frame["path"]], train.images, device)


def cached_outputs(spec: TrialSpec, hp: HParams, keys: Sequence[str], images: torch.Tensor,
                   device: torch.device) -> list[TeacherCache]:
    """Each teacher's outputs on `images`, named by `keys` (their paths, in order; for a
    transfer set, `TransferImages.keys`), as `teacher_outputs` finds or computes them."""
    store = TeacherStore(spec.cache_dir)
    paths = list(keys)
    caches = []
    for ref in spec.teachers:
        def compute(ref: TeacherRef = ref) -> TeacherCache:
            teacher = prepare_teacher(load_teachers([ref])[0], device, hp)
            return TeacherCache.compute(teacher, images, device, hp)

        key = make_key(ref.arch, ref.checkpoint, paths, spec.image_size, hp, device)
        caches.append(store.get_or_compute(key, compute))
    return caches


def trial_transfer(spec: TrialSpec, index: pd.DataFrame, frame: pd.DataFrame,
                   train: ImageSet) -> TransferImages | None:
    """The student's unlabeled transfer set (`spec.transfer`), or None; drawn with the subset's seed."""
    if spec.transfer is None:
        return None
    return transfer_set(spec.transfer, index, frame, train.images, spec.subset_seed,
                        lambda f: frame_images(f, spec.image_size, spec.decode_dir, spec.memory_budget)[0])


def cross_metrics(model: Detector, cross: CrossSet, spec: TrialSpec, device: torch.device,
                  hp: HParams) -> tuple[dict[str, float], dict[str, str]]:
    """`model` scored on `cross`'s whole test split (decoded as the trial's own splits are:
    mapped from `spec.decode_dir`, once per node), and the digest of its rows as a tag."""
    from trainables.metrics import compute_metrics

    frame = whole_split(dataset_index(cross.data), "test")
    if frame.empty:
        raise DataError(f"evaluation dataset {cross.name!r} has no test images")
    images = image_set(frame, spec.image_size, spec.decode_dir, spec.memory_budget)
    probs = predict(model, images, device, hp)
    scored = compute_metrics(images.labels.numpy(), probs, images.videos, video_rule=cross.video_rule,
                             frames_per_video=cross.frames_per_video)
    out = {f"{cross.prefix()}{k}": v for k, v in scored.items()}
    out[f"{cross.prefix()}n"] = float(len(frame))
    return out, {f"{cross.prefix()}rows": rows_digest(frame)}


def run_trial(spec: TrialSpec, hp: HParams, *, on_epoch: EpochCallback | None = None,
              resume: dict | None = None) -> TrialOutcome:
    """Train one model as `spec` says and evaluate it on the requested splits."""
    distils = spec.role == "student" and needs_teachers(hp.method)
    if distils and not spec.teachers:
        raise ConfigError(f"method {hp.method!r} needs at least one teacher checkpoint")
    t_prep, prep_start = time.perf_counter(), time.time()
    index = dataset_index(spec.data)
    frame = training_frame(spec, index)
    streamed = spec.role == "teacher" and streams(spec, len(frame))  # subsets never streamed

    def split_set(frame: pd.DataFrame):
        if streamed:
            return file_set(frame, spec.image_size, spec.loader_workers)
        return image_set(frame, spec.image_size, spec.decode_dir, spec.memory_budget)

    train = split_set(frame)
    records: dict[str, pd.DataFrame] = {}
    for split in spec.eval_splits:
        records[split] = eval_frame(spec, index, split)
    val = split_set(records["val"]) if "val" in records else None
    # mapped: ready now (decoded once per node); held in memory: decoded when scored, after training
    test = split_set(records["test"]) if "test" in records and spec.decode_dir is not None else None
    extra = trial_transfer(spec, index, frame, train) if distils else None  # vt: no distillation term
    prep = {"sys_data_prep_s": time.perf_counter() - t_prep, "sys_data_prep_start": prep_start}
    set_seed(hp.seed)  # the initial weights depend on the seed alone
    model = create_model(spec.arch, weights=spec.weights)
    device = pick_device(spec.device)
    caches, teachers, extra_caches = None, [], None
    if distils and hp.teachers_cached:
        caches = teacher_outputs(spec, hp, frame, train, device)
        if extra is not None:
            extra_caches = cached_outputs(spec, hp, extra.keys, extra.images, device)
    elif distils:  # new views every step, or feature maps: the teachers run live
        teachers = load_teachers(spec.teachers)
    result = train_student(model, teachers, train, val, hp, device=device, on_epoch=on_epoch, resume=resume,
                           teacher_caches=caches, transfer=None if extra is None else extra.images,
                           transfer_caches=extra_caches)
    metrics: dict[str, float] = {}
    if result.history:
        metrics.update({k: v for k, v in result.history[-1].items() if k.startswith("val_")})
        gain = late_gain([h.get(CURVE_METRIC, math.nan) for h in result.history])
        if not math.isnan(gain):  # has it finished learning? (trainables.convergence)
            metrics[LATE_GAIN] = gain
    elif val is not None:  # resumed after the last epoch: evaluate the restored model
        metrics.update({f"val_{k}": v for k, v in evaluate(model, val, device, hp).items()})
    if "test" in records:
        test = test if test is not None else split_set(records["test"])
        metrics.update({f"test_{k}": v for k, v in evaluate(model, test, device, hp).items()})
    tags: dict[str, str] = {}
    for split, rows in records.items():
        counts, digest = eval_set_record(split, rows)
        metrics.update(counts)
        tags.update(digest)
    for cross in spec.evaluate:
        scored, digest = cross_metrics(model, cross, spec, device, hp)
        metrics.update(scored)
        tags.update(digest)
    return TrialOutcome(result, metrics, tags, {**prep, "sys_peak_rss_mb": peak_rss_mb()})
