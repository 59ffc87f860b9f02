"""The plain PyTorch loop: train a teacher, distil a student, evaluate. No Ray, no MLflow.

Images arrive as uint8 tensors (N, 3, S, S) held in memory. Each step augments its batch
once (`hp.augment`, trainables/augment.py) and gives the same tensor to the student and to
the teachers. With horizontal flips alone (the default), every teacher's outputs on the
student subset are computed once per (image, flip) and reused by every step
(`TeacherCache`): a distillation step costs about what a vanilla step costs.
`trainables.teacher_cache` keeps these outputs on disk so all trials of a study share them;
`train_student(..., cache_teachers=False)` runs the teachers on every step instead (same
numbers, for measuring what the cache saves). With crops, colour jitter, mixup or cutmix
every step makes new views, and the teachers run live on them (no cache is made). Runs are
repeatable on the CPU for a seed, also across a resume from an epoch checkpoint (the
batch generator and the torch, numpy, python and CUDA RNG states are part of the state).

An unlabeled transfer set (`train_student(..., transfer=images)`, uint8 images without
labels) adds, to every step of a distilling method, a batch of its images beside the labelled
batch: drawn from a generator of its own (the labelled batches, flips and augmentations are
those of a run without it), augmented the same way, teacher and student seeing the same view.
The student runs once on [labelled; transfer]; the task term (CE) takes the labelled rows
only, the distillation terms all rows (`TransferRows`, label UNLABELED). The teachers' outputs
on it come the way the labelled ones do: live, or a `TeacherCache` of the transfer images
(`transfer_caches`). Vanilla training has no distillation term and ignores a transfer set.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from trainables import augment
from trainables.augment import draw_flips, flip_batch  # noqa: F401  (flip_batch: re-exported)
from trainables.data.decoded import MappedImages
from trainables.data.stream import BatchStream, FileSet
from trainables.device import (  # noqa: F401  (re-exported: the engine's API)
    IMAGENET_MEAN, IMAGENET_STD, autocast, configure_device, eval_batch_size, memory_format, pick_device,
    to_input,
)
from trainables.hparams import HParams, steps_per_epoch  # noqa: F401  (steps_per_epoch: re-exported)
from trainables.losses import LossContext, Mix, Outputs, TransferRows, baseline_method, build_loss, needs_teachers
from trainables.methods import method_spec
from trainables.metrics import compute_metrics
from trainables.models import Detector
from trainables.rng import rng_state, set_rng_state, set_seed  # noqa: F401  (set_seed: re-exported)



class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the trial fails with this reason."""


@dataclass
class ImageSet:
    images: Tensor  # (N, 3, S, S) uint8
    labels: Tensor  # (N,) long, 0 = real, 1 = fake
    videos: Sequence[str] | None = None
    mapped: MappedImages | None = None  # the cache file `images` is mapped from, if any

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, 3, S, S), got {self.images.dtype} {tuple(self.images.shape)}")
        self.labels = torch.as_tensor(self.labels, dtype=torch.long)
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class TrainResult:
    model: Detector
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    images_seen: int = 0

    @property
    def images_per_second(self) -> float:
        return self.images_seen / self.seconds if self.seconds else math.nan


# on_epoch(epoch, metrics, state) is called after each epoch; `state()` returns the full
# resumable state (model, optimiser, scheduler, loss buffers, RNGs) for a checkpoint.
EpochCallback = Callable[[int, dict, Callable[[], dict]], None]


def prepare_teacher(teacher: Detector, device: torch.device, hp: HParams) -> Detector:
    """Frozen, in eval mode, on `device` in the run's memory format."""
    return teacher.to(device).to(memory_format=memory_format(device, hp)).eval().requires_grad_(False)


@torch.no_grad()
def teacher_forward(teacher: Detector, x: Tensor, device: torch.device, hp: HParams,
                    stages: Sequence[int] = ()) -> Outputs:
    """A frozen teacher's float32 outputs on a normalised batch (as the cache stores them), with
    its feature maps at `stages` when the method reads maps."""
    return model_outputs(teacher, x, device, hp, stages)


def model_outputs(model: Detector, x: Tensor, device: torch.device, hp: HParams, stages: Sequence[int] = ()) -> Outputs:
    """A model's float32 outputs on a normalised batch: the maps at `stages` only when asked for
    (a method that reads none runs the plain forward)."""
    with autocast(device, hp):
        if stages:
            z, logits, maps = model.forward_maps(x, stages)
        else:
            (z, logits), maps = model(x), ()
    return Outputs(logits=logits.float(), features=z.float(), maps=tuple(m.float() for m in maps))


def map_shapes(model: Detector, stages: Sequence[int], image_size: int) -> tuple[tuple[int, int, int], ...]:
    """(C, H, W) of `model`'s maps at `stages` for images of `image_size`: one probe image in eval
    mode (no batch-norm statistics change), on the model's device."""
    if not stages:
        return ()
    param = next(model.parameters())
    was = model.training
    model.eval()
    with torch.no_grad():
        _, _, maps = model.forward_maps(torch.zeros(1, 3, image_size, image_size, device=param.device), stages)
    model.train(was)
    return tuple(tuple(int(d) for d in m.shape[1:]) for m in maps)


class TeacherCache:
    """Frozen teachers' outputs on the fixed student subset, once per (image, flip)."""

    def __init__(self, logits: Tensor, features: Tensor):
        self.logits = logits  # (F, M, C), F = 1 or 2 flips
        self.features = features  # (F, M, D)

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[-1])

    @classmethod
    @torch.no_grad()
    def compute(cls, teacher: Detector, images: Tensor, device: torch.device, hp: HParams,
                batch_size: int = 128) -> "TeacherCache":
        if not hp.teacher_cacheable:
            raise ValueError(f"augment={list(hp.augment)} makes new views every step: the teachers run "
                             "live on them, a cache of the plain images would not be what the student sees")
        teacher.eval()
        fmt = memory_format(device, hp)
        logits, feats = [], []
        for flipped in ((False, True) if hp.flipping else (False,)):
            lo, fe = [], []
            for start in range(0, len(images), batch_size):
                x = images[start:start + batch_size]
                x = x.flip(-1) if flipped else x
                out = teacher_forward(teacher, to_input(x, device, fmt), device, hp)
                lo.append(out.logits)
                fe.append(out.features)
            logits.append(torch.cat(lo))
            feats.append(torch.cat(fe))
        return cls(torch.stack(logits), torch.stack(feats))

    def check(self, num_images: int, flip: bool, where: str = "teacher cache") -> None:
        """Raise ValueError unless this cache covers `num_images` images with the run's flips."""
        flips = 2 if flip else 1
        lo, fe = self.logits, self.features
        if lo.ndim != 3 or fe.ndim != 3 or tuple(lo.shape[:2]) != (flips, num_images) \
                or tuple(fe.shape[:2]) != (flips, num_images):
            raise ValueError(
                f"{where}: logits {tuple(lo.shape)} / features {tuple(fe.shape)} do not cover "
                f"{num_images} images x {flips} flip state(s) (flip={flip})"
            )

    def to(self, device: torch.device) -> "TeacherCache":
        return TeacherCache(self.logits.to(device), self.features.to(device))

    def lookup(self, index: Tensor, flips: Tensor) -> Outputs:
        f = flips.long() if self.logits.shape[0] > 1 else torch.zeros_like(index)
        return Outputs(logits=self.logits[f, index], features=self.features[f, index])


TrainData = Union[ImageSet, FileSet]  # in memory (subsets) or streamed from disk (full splits)


def image_batches(data: TrainData, index_batches: Sequence[Tensor], device: torch.device,
                  stream: BatchStream | None = None) -> Iterator[Tensor]:
    """uint8 images of each index batch, in order: sliced from memory, or decoded by
    `stream` (a `BatchStream` over `data`, opened here when not given)."""
    if isinstance(data, ImageSet):
        return (data.images[idx] for idx in index_batches)
    if stream is not None:
        return stream.batches(index_batches)

    def once() -> Iterator[Tensor]:
        with BatchStream(data, pin_memory=device.type == "cuda") as s:
            yield from s.batches(index_batches)
    return once()


def eval_batches(data: TrainData, batch_size: int, device: torch.device) -> Iterator[Tensor]:
    """uint8 batches of `data` in order, for one scoring pass. From memory: slices (pinned
    on CUDA, so the copy to the device overlaps); from a mapped array, the pages a batch
    was read from are then released, so a pass over a large split keeps the process's
    resident memory at about one batch."""
    if not isinstance(data, ImageSet):
        order = [torch.arange(s, min(s + batch_size, len(data))) for s in range(0, len(data), batch_size)]
        yield from image_batches(data, order, device)
        return
    for start in range(0, len(data), batch_size):
        stop = min(start + batch_size, len(data))
        batch = data.images[start:stop]
        yield batch.pin_memory() if device.type == "cuda" else batch
        if data.mapped is not None:  # the batch has been used (a released page reads back the same)
            data.mapped.release(start, stop)


def batches(n: int, batch_size: int, steps: int, generator: torch.Generator) -> Iterator[Tensor]:
    """`steps` index batches walking through fresh random permutations of range(n)."""
    batch_size = min(batch_size, n)
    pool = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        while len(pool) < batch_size:
            pool = torch.cat([pool, torch.randperm(n, generator=generator)])
        yield pool[:batch_size]
        pool = pool[batch_size:]


def make_optimizer(params, hp: HParams) -> torch.optim.Optimizer:
    if hp.optimizer == "sgd":
        return torch.optim.SGD(params, lr=hp.lr, momentum=0.9, weight_decay=hp.weight_decay, nesterov=True)
    cls = torch.optim.AdamW if hp.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=hp.lr, weight_decay=hp.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, hp: HParams, total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if hp.schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


@torch.no_grad()
def predict(model: Detector, data: TrainData, device: torch.device | str = "auto",
            hp: HParams | None = None, batch_size: int | None = None) -> np.ndarray:
    """Fake probability of every image, scored `batch_size` at a time (default: `eval_batch_size`)."""
    device = pick_device(device)
    hp = hp or HParams()
    if batch_size is None:
        size = data.images.shape[-1] if isinstance(data, ImageSet) else data.size
        batch_size = eval_batch_size(device, size)
    fmt = memory_format(device, hp)
    was_training = model.training
    model.eval()
    probs = []
    for images in eval_batches(data, batch_size, device):
        with autocast(device, hp):
            _, logits = model(to_input(images, device, fmt))
        probs.append(F.softmax(logits.float(), dim=1)[:, 1].cpu())
    model.train(was_training)
    return torch.cat(probs).numpy() if probs else np.zeros(0)


def evaluate(model: Detector, data: TrainData, device: torch.device | str = "auto",
             hp: HParams | None = None) -> dict[str, float]:
    """ACC/AUC/EER/AP (and video-level ones when video ids are known)."""
    probs = predict(model, data, device, hp)
    return compute_metrics(data.labels.numpy(), probs, data.videos)


def train_teacher(model: Detector, train: TrainData, val: TrainData | None, hp: HParams, *,
                  device: str | torch.device = "auto", on_epoch: EpochCallback | None = None,
                  resume: dict | None = None) -> TrainResult:
    """Train a teacher (the baseline method: cross-entropy alone) on the full training split."""
    return train_student(model, [], train, val, hp.replace(method=baseline_method()), device=device,
                         on_epoch=on_epoch, resume=resume)


def train_student(model: Detector, teachers: Sequence[Detector], train: TrainData,
                  val: TrainData | None, hp: HParams, *, device: str | torch.device = "auto",
                  on_epoch: EpochCallback | None = None, resume: dict | None = None,
                  teacher_caches: Sequence[TeacherCache] | None = None,
                  cache_teachers: bool = True, transfer: Tensor | None = None,
                  transfer_caches: Sequence[TeacherCache] | None = None) -> TrainResult:
    """Train `model` on `train` with `hp.method`'s loss; teachers stay frozen.

    The teachers' outputs come from `teacher_caches` when given (one per teacher, e.g.
    from `trainables.teacher_cache`; `teachers` may then be empty), else are computed
    once here. `cache_teachers=False` runs every teacher on every step instead: the
    same numbers, at the teachers' cost (benchmarks only). When `hp.augment` lists more
    than flips, every step makes new views: the teachers always run live on them (and
    `teacher_caches` are refused).
    `resume` is a state returned by the callback's `state()`: training continues after
    its epoch with the same RNG streams, so the result equals an undisturbed run's.
    `transfer`: uint8 images (N, 3, S, S) of an unlabeled transfer set, seen by the
    distillation terms only (module docstring); with `teacher_caches`, `transfer_caches`
    hold the teachers' outputs on them. Ignored by a method without teachers (vt).
    """
    if teacher_caches is not None and not cache_teachers:
        raise ValueError("teacher_caches were given with cache_teachers=False: pass one or the other")
    device = pick_device(device)
    configure_device(device)
    set_seed(hp.seed)
    run = _Run.build(model, teachers, train, hp, device, teacher_caches, cache_teachers,
                     transfer if needs_teachers(hp.method) else None, transfer_caches)
    start_epoch = run.restore(resume) if resume is not None else 0
    # the per-epoch metrics so far travel in the resumable state: a resumed run's curve is whole
    result = TrainResult(model, history=[dict(h) for h in (resume or {}).get("history", [])])
    stream = BatchStream(train, pin_memory=device.type == "cuda") if isinstance(train, FileSet) else None
    try:
        for epoch in range(start_epoch, hp.epochs):
            t0 = time.perf_counter()
            plan = _plan_epoch(len(train), hp, run.per_epoch, run.gen)
            extra = run.transfer_plan()  # (index, flips) of the transfer set per step, or Nones
            total, parts_sum, seen = 0.0, {}, 0
            for (idx, flips), images, t_batch in zip(plan, image_batches(train, [i for i, _ in plan], device, stream),
                                                     extra):
                loss, parts = run.step(idx, flips, images, epoch, t_batch)
                total += loss * len(idx)
                for k, v in parts.items():
                    parts_sum[k] = parts_sum.get(k, 0.0) + v * len(idx)
                seen += len(idx)
            result.seconds += time.perf_counter() - t0
            result.images_seen += seen
            metrics = {"epoch": epoch, "train_loss": total / seen, "lr": run.sched.get_last_lr()[0]}
            metrics.update({f"train_{k}": v / seen for k, v in parts_sum.items()})
            if val is not None and len(val):
                metrics.update({f"val_{k}": v for k, v in evaluate(model, val, device, hp).items()})
                model.train()
            result.history.append(metrics)
            if on_epoch is not None:
                on_epoch(epoch, metrics,
                         lambda epoch=epoch: {**run.state(epoch), "history": copy.deepcopy(result.history)})
    finally:
        if stream is not None:
            stream.close()
    model.eval()
    return result


@dataclass
class _Run:
    """One training run's moving parts: the model, its loss (with the teachers' outputs),
    optimiser, schedule and the batch generator; a step, and the resumable state."""

    model: Detector
    loss_fn: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    gen: torch.Generator
    per_epoch: int
    hp: HParams
    device: torch.device
    labels: Tensor  # the training labels, on the device
    caches: list[TeacherCache] = field(default_factory=list)
    # teachers run on every step: cache_teachers=False, or augmentations beyond flips
    live: list[Detector] = field(default_factory=list)
    transfer: Tensor | None = None  # (N, 3, S, S) uint8 unlabeled transfer images (distilling runs only)
    t_caches: list[TeacherCache] = field(default_factory=list)  # the teachers' outputs on them
    t_gen: torch.Generator | None = None  # the transfer batches' own stream
    stages: tuple[int, ...] = ()  # the feature-map stages the method reads (student and teachers)

    @classmethod
    def build(cls, model: Detector, teachers: Sequence[Detector], train: TrainData, hp: HParams,
              device: torch.device, teacher_caches: Sequence[TeacherCache] | None, cache_teachers: bool,
              transfer: Tensor | None = None, transfer_caches: Sequence[TeacherCache] | None = None) -> "_Run":
        model.to(device).to(memory_format=memory_format(device, hp)).train()
        sources = teacher_caches if teacher_caches is not None else teachers
        if transfer is not None:
            _check_transfer(transfer, train)
        distils = needs_teachers(hp.method)
        stages = method_spec(hp.method).map_stages(hp.options) if distils else ()
        if stages and teacher_caches is not None:
            raise ValueError(f"method {hp.method!r} reads feature maps (stages {list(stages)}), which a teacher "
                             "cache does not hold: pass the teacher models, which then run live")
        size = int(train.images.shape[-1]) if isinstance(train, ImageSet) else 0
        loss_fn = build_loss(hp, LossContext(
            student_dim=model.feature_dim,
            teacher_dims=tuple(t.feature_dim for t in sources) if distils else (),
            train_labels=train.labels,
            num_transfer=0 if transfer is None else len(transfer),
            student_maps=map_shapes(model, stages, size),
            teacher_maps=tuple(map_shapes(t.to(device), stages, size) for t in teachers) if stages else (),
        )).to(device)
        caches: list[TeacherCache] = []
        t_caches: list[TeacherCache] = []
        live: list[Detector] = []
        if loss_fn.needs_teachers:
            if not isinstance(train, ImageSet):
                raise ValueError(f"method {hp.method!r} distils on a subset held in memory (ImageSet); "
                                 f"a streamed FileSet is for vanilla training of full splits")
            if stages or not hp.teacher_cacheable:  # maps, or new views every step: the teachers run live
                if teacher_caches is not None:
                    raise ValueError(f"teacher_caches were given but augment={list(hp.augment)} makes new "
                                     "views every step: pass the teacher models, which then run live")
                live = [prepare_teacher(t, device, hp) for t in teachers]
            elif teacher_caches is not None:
                caches = list(teacher_caches)
                for i, c in enumerate(caches):
                    c.check(len(train), hp.flipping, where=f"teacher_caches[{i}]")
                if transfer is not None:
                    if transfer_caches is None or len(transfer_caches) != len(caches):
                        raise ValueError("a transfer set with teacher_caches needs transfer_caches, one per teacher")
                    t_caches = list(transfer_caches)
                    for i, c in enumerate(t_caches):
                        c.check(len(transfer), hp.flipping, where=f"transfer_caches[{i}]")
            elif cache_teachers:
                frozen = [prepare_teacher(t, device, hp) for t in teachers]
                caches = [TeacherCache.compute(t, train.images, device, hp) for t in frozen]
                if transfer is not None:
                    t_caches = [TeacherCache.compute(t, transfer, device, hp) for t in frozen]
            else:
                live = [prepare_teacher(t, device, hp) for t in teachers]
            caches = [c.to(device) for c in caches]
            t_caches = [c.to(device) for c in t_caches]
        opt = make_optimizer(list(model.parameters()) + list(loss_fn.parameters()), hp)
        per_epoch = steps_per_epoch(len(train), hp)
        sched = make_scheduler(opt, hp, per_epoch * hp.epochs, per_epoch * hp.warmup_epochs)
        t_gen = None if transfer is None else torch.Generator().manual_seed(transfer_seed(hp.seed))
        return cls(model, loss_fn, opt, sched, torch.Generator().manual_seed(hp.seed), per_epoch, hp, device,
                   train.labels.to(device), caches, live, transfer, t_caches, t_gen, stages)

    def transfer_plan(self) -> list[tuple[Tensor, Tensor] | None]:
        """This epoch's transfer batches, one per step (None each without a transfer set)."""
        if self.transfer is None:
            return [None] * self.per_epoch
        return _plan_epoch(len(self.transfer), self.hp, self.per_epoch, self.t_gen)

    def step(self, idx: Tensor, flips: Tensor, images: Tensor, epoch: int,
             t_batch: tuple[Tensor, Tensor] | None = None) -> tuple[float, dict[str, float]]:
        """One optimiser step on a batch (and `t_batch`, the transfer set's index batch and
        flips); (the loss, its logged parts)."""
        device, hp = self.device, self.hp
        # uint8 to the device first (pinned when streamed on CUDA), augmented there: drawn once,
        # applied once, the one tensor `x` seen by the student and every live teacher
        idx_dev, flips_dev = idx.to(device), flips.to(device)
        images = images.to(device, non_blocking=True)
        views, mix = self._views(images, flips_dev, self.gen)
        if t_batch is not None:  # the transfer rows go after the labelled ones: (B + Bt, 3, S, S)
            t_idx, t_flips = (t.to(device) for t in t_batch)
            t_views, t_mix = self._views(self.transfer[t_batch[0]].to(device, non_blocking=True), t_flips, self.t_gen)
            views = torch.cat([views, t_views])
        x = to_input(views, device, memory_format(device, hp))
        student = model_outputs(self.model, x, device, hp, self.stages)
        if self.live:
            teacher_out = [teacher_forward(t, x, device, hp, self.stages) for t in self.live]
        else:
            teacher_out = [c.lookup(idx_dev, flips_dev) for c in self.caches]
        rows = None
        if t_batch is not None:
            b = len(idx)
            student, t_student = _split(student, b)
            if self.live:
                teacher_out, t_teacher = zip(*(_split(t, b) for t in teacher_out))
            else:
                t_teacher = [c.lookup(t_idx, t_flips) for c in self.t_caches]
            t_index = len(self.labels) + t_idx  # dataset index M + j
            rows = TransferRows(t_student, tuple(t_teacher), t_index if t_mix is None else t_mix.dominant(t_index))
        loss, parts = self.loss_fn(student, list(teacher_out), self.labels[idx_dev], idx_dev, mix, rows)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"loss is {loss.item()} at epoch {epoch}, parts {parts}; "
                                   f"lower lr ({hp.lr}), or check {hp.method}'s options {hp.options}")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        return loss.item(), parts

    def _views(self, images: Tensor, flips: Tensor, gen: torch.Generator) -> tuple[Tensor, Mix | None]:
        if self.hp.teacher_cacheable:  # flips at most: as the teacher cache was computed
            return flip_batch(images, flips), None
        return augment.views(images, flips, self.hp, gen)  # float on [0, 255]

    def state(self, epoch: int) -> dict:
        """The resumable state after `epoch`; a deep copy: later steps must not change it."""
        return copy.deepcopy({
            "epoch": epoch,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "loss": {k: v.detach().cpu() for k, v in self.loss_fn.state_dict().items()},
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "generator": self.gen.get_state(),  # batches, flips and the other augmentations
            **({} if self.t_gen is None else {"transfer_generator": self.t_gen.get_state()}),
            **rng_state(self.device),  # torch_rng, numpy_rng, python_rng (+ cuda_rng)
        })

    def restore(self, state: dict) -> int:
        """Load a `state`; the epoch to continue from."""
        self.model.load_state_dict(state["model"])
        self.loss_fn.load_state_dict(state["loss"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.gen.set_state(state["generator"])
        if self.t_gen is not None:
            if "transfer_generator" not in state:
                raise ValueError("this run has a transfer set but the state to resume from has none")
            self.t_gen.set_state(state["transfer_generator"])
        set_rng_state(state, self.device)  # keys missing from older checkpoints are skipped
        return int(state["epoch"]) + 1


def _plan_epoch(n: int, hp: HParams, steps: int, gen: torch.Generator) -> list[tuple[Tensor, Tensor]]:
    """The epoch's (index batch, flips) pairs, drawn from `gen` in step order (a step then
    draws its other augmentations from `gen` as it runs)."""
    plan = []
    for idx in batches(n, hp.batch_size, steps, gen):
        flips = draw_flips(len(idx), gen) if hp.flipping else torch.zeros(len(idx), dtype=torch.bool)
        plan.append((idx, flips))
    return plan


def transfer_seed(seed: int) -> int:
    """The seed of the transfer batches' generator: derived from the run's seed, another stream."""
    return int(np.random.SeedSequence([int(seed), 0x7472616E]).generate_state(1)[0])  # "tran"


def _split(out: Outputs, b: int) -> tuple[Outputs, Outputs]:
    """(rows :b, rows b:) of a model's outputs."""
    return out.rows(slice(None, b)), out.rows(slice(b, None))


def _check_transfer(transfer: Tensor, train: TrainData) -> None:
    if not isinstance(transfer, Tensor) or transfer.dtype != torch.uint8 or transfer.ndim != 4 \
            or len(transfer) == 0:
        raise ValueError(f"transfer must be uint8 images (N, 3, S, S), N >= 1, got {type(transfer).__name__} "
                         f"{getattr(transfer, 'dtype', '')} {tuple(getattr(transfer, 'shape', ()))}")
    if isinstance(train, ImageSet) and transfer.shape[1:] != train.images.shape[1:]:
        raise ValueError(f"transfer images {tuple(transfer.shape[1:])} differ from the training images "
                         f"{tuple(train.images.shape[1:])}")
