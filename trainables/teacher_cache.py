"""Frozen teachers' outputs on a student subset, shared by every trial of a study.

A distillation trial needs each teacher's logits and features on its fixed,
un-augmented training subset, for both flips (`engine.TeacherCache`), when flips are its
only augmentation (with any other, `hp.teacher_cacheable` is false and the teachers run
live: nothing is cached). Those depend
only on the `CacheKey` below, not on the trial's hyperparameters, so a study computes
them once per (teacher, subset) and every later trial reads a small `.pt` file:

    <cache_dir>/<key digest>.pt = {"format": 1, "key": "<the key as JSON>",
                                   "logits": (F, M, C) float32, "features": (F, M, D) float32}

Plain tensors, loaded with `weights_only=True`. Files are written to a temporary
name and `os.replace`d, so trials racing for the same key are safe (the last write
wins, both are identical). A file that does not load or does not match its key is
recomputed and overwritten, never trusted. An in-process LRU sits in front of the
folder: several trials in one Ray actor (`reuse_actors`) do not even read the file.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from trainables.engine import TeacherCache
from trainables.errors import UserError
from trainables.hparams import HParams
from trainables.models import resolve_name, sha256_file

log = logging.getLogger(__name__)

FORMAT = 1  # bump when what is stored (or how it is computed) changes: old files become misses
MEMORY_ENTRIES = 8  # ~10 MB each for 1000 images x 2 flips x 1280-d features


@dataclass(frozen=True)
class CacheKey:
    """Everything a teacher's cached outputs depend on."""

    teacher_sha256: str  # the checkpoint file's bytes
    arch: str  # timm name (aliases resolved)
    image_size: int
    subset_sha256: str  # the ordered list of image paths: order = dataset index of the loss
    num_images: int
    flip: bool  # 2 flip states stored, else 1
    numerics: str  # device type and autocast dtype: bf16 outputs differ from float32 ones

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)}, sort_keys=True)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @property
    def filename(self) -> str:
        return f"{self.digest[:32]}.pt"


def subset_digest(paths: Sequence[str]) -> str:
    """SHA-256 of the ordered paths (another order is another cache: indices would differ)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(str(p).encode())
        h.update(b"\0")
    return h.hexdigest()


def numerics_tag(device: torch.device, hp: HParams) -> str:
    """What changes the teacher's numbers besides its weights and inputs (engine.autocast)."""
    device = torch.device(device)
    if device.type == "cuda":
        dtype = "bf16" if hp.amp else "fp32"
        return f"cuda-{dtype}-{'channels_last' if hp.channels_last else 'contiguous'}"
    return f"{device.type}-fp32"


def checkpoint_digest(path: str | Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"teacher checkpoint {path} does not exist")
    return sha256_file(path)


def make_key(arch: str, checkpoint: str | Path, paths: Sequence[str], image_size: int,
             hp: HParams, device: torch.device) -> CacheKey:
    return CacheKey(
        teacher_sha256=checkpoint_digest(checkpoint),
        arch=resolve_name(arch),
        image_size=int(image_size),
        subset_sha256=subset_digest(paths),
        num_images=len(paths),
        flip=hp.flipping,  # `augment` without "flip", or flip: false, stores one state
        numerics=numerics_tag(device, hp),
    )


class _LRU:
    def __init__(self, size: int):
        self.size = size
        self.items: OrderedDict[str, TeacherCache] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, digest: str) -> TeacherCache | None:
        with self.lock:
            hit = self.items.get(digest)
            if hit is not None:
                self.items.move_to_end(digest)
            return hit

    def put(self, digest: str, cache: TeacherCache) -> None:
        with self.lock:
            self.items[digest] = cache
            self.items.move_to_end(digest)
            while len(self.items) > self.size:
                self.items.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.items.clear()


MEMORY = _LRU(MEMORY_ENTRIES)  # per process: shared by the trials one Ray actor runs


def clear_memory() -> None:
    """Forget the in-process copies (tests, benchmarks: as in a fresh worker)."""
    MEMORY.clear()


def _valid(obj: object, key: CacheKey) -> TeacherCache | None:
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or obj.get("key") != key.to_json():
        return None
    logits, features = obj.get("logits"), obj.get("features")
    if not isinstance(logits, torch.Tensor) or not isinstance(features, torch.Tensor):
        return None
    if logits.dtype != torch.float32 or features.dtype != torch.float32:
        return None
    cache = TeacherCache(logits, features)
    try:
        cache.check(key.num_images, key.flip)
    except ValueError:
        return None
    if not (torch.isfinite(logits).all() and torch.isfinite(features).all()):
        return None
    return cache


class TeacherStore:
    """Cached teacher outputs: in-process LRU, then `cache_dir` (when given), else computed."""

    def __init__(self, cache_dir: str | Path | None, memory: _LRU = MEMORY):
        self.memory = memory
        self.folder: Path | None = None
        if cache_dir is not None:
            if "://" in str(cache_dir):
                log.warning("teacher cache %s is a URI, not a folder: using the in-process cache only",
                            cache_dir)
            else:
                self.folder = Path(cache_dir)

    def path(self, key: CacheKey) -> Path | None:
        return self.folder / key.filename if self.folder is not None else None

    def get(self, key: CacheKey) -> TeacherCache | None:
        hit = self.memory.get(key.digest)
        if hit is not None:
            return hit
        path = self.path(key)
        if path is None or not path.is_file():
            return None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated, not a torch file, pickled code
            log.warning("teacher cache %s does not load (%s: %s): recomputing it",
                        path, exc.__class__.__name__, str(exc)[:200])
            return None
        cache = _valid(obj, key)
        if cache is None:
            log.warning("teacher cache %s does not match its key %s: recomputing it", path, key.to_json())
            return None
        self.memory.put(key.digest, cache)
        return cache

    def put(self, key: CacheKey, cache: TeacherCache) -> TeacherCache:
        """Keep `cache` (as float32 CPU tensors, returned) in memory and in the folder."""
        cache = TeacherCache(cache.logits.detach().float().cpu().contiguous(),
                             cache.features.detach().float().cpu().contiguous())
        self.memory.put(key.digest, cache)
        path = self.path(key)
        if path is None:
            return cache
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as f:
                torch.save({"format": FORMAT, "key": key.to_json(),
                            "logits": cache.logits, "features": cache.features}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            tmp = None
        except OSError as exc:  # a cache that cannot be written only costs time
            log.warning("teacher cache %s cannot be written (%s): continuing without it", path, exc)
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
        return cache

    def get_or_compute(self, key: CacheKey, compute: Callable[[], TeacherCache]) -> TeacherCache:
        cache = self.get(key)
        return cache if cache is not None else self.put(key, compute())
