"""A dataset as one table: `read_index(spec)` -> DataFrame[path, label, video, split, source].

`spec` is a study config's `data` section: `kind` picks a reader registered with
`@register_reader(kind)`; the other keys are that reader's keyword arguments
(unknown or missing keys are errors naming the key). Adding a layout is one file
in `trainables/data/readers/` plus its import there.

Everywhere: label 0 = real, 1 = fake; `path` absolute; `video` unique across
sources ("Deepfakes/071_054"); `split` in train/val/test; rows sorted by path.
"""
from __future__ import annotations

import inspect
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

import numpy as np
import pandas as pd

from trainables.errors import DataError

COLUMNS = ("path", "label", "video", "split", "source")
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
REAL, FAKE = 0, 1

READERS: dict[str, Callable[..., pd.DataFrame]] = {}

F = TypeVar("F", bound=Callable[..., pd.DataFrame])


def register_reader(kind: str) -> Callable[[F], F]:
    """Function decorator: make `fn(**spec_without_kind)` the reader of `kind`."""

    def add(fn: F) -> F:
        if kind in READERS:
            raise ValueError(f"reader {kind!r} registered twice ({READERS[kind].__name__}, {fn.__name__})")
        READERS[kind] = fn
        return fn

    return add


def read_index(spec: Mapping[str, Any]) -> pd.DataFrame:
    """Index the dataset described by `spec` (see module docstring)."""
    if not isinstance(spec, Mapping):
        raise DataError(f"data spec must be a mapping with a 'kind' key, got {type(spec).__name__}: {spec!r}")
    if "kind" not in spec:
        raise DataError(f"data spec {dict(spec)!r} has no 'kind'; known kinds: {sorted(READERS)}")
    kind = spec["kind"]
    if kind not in READERS:
        raise DataError(f"data kind {kind!r} is unknown; known kinds: {sorted(READERS)}")
    reader = READERS[kind]
    params = {k: v for k, v in spec.items() if k != "kind"}
    _check_params(kind, reader, params)
    return finalize_index(reader(**params), what=f"data kind {kind!r}")


def _check_params(kind: str, reader: Callable, params: Mapping[str, Any]) -> None:
    sig = inspect.signature(reader).parameters
    unknown = sorted(set(params) - set(sig))
    if unknown:
        raise DataError(f"data kind {kind!r} does not take key(s) {unknown}; it takes {sorted(sig)}")
    missing = [n for n, p in sig.items() if p.default is inspect.Parameter.empty and n not in params]
    if missing:
        raise DataError(f"data kind {kind!r} needs key(s) {missing} in the data spec")


def finalize_index(df: pd.DataFrame, what: str = "index") -> pd.DataFrame:
    """Fix column order and dtypes, sort by path, and reject empty or inconsistent indexes."""
    if list(df.columns) != list(COLUMNS):
        df = df.reindex(columns=list(COLUMNS))
    if len(df) == 0:
        raise DataError(f"{what}: no images found")
    df = df.astype({"path": str, "label": "int64", "video": str, "split": str, "source": str})
    df = df.sort_values("path", kind="stable").reset_index(drop=True)
    bad_split = sorted(set(df["split"]) - set(SPLITS))
    if bad_split:
        raise DataError(f"{what}: unknown split name(s) {bad_split}; use {list(SPLITS)}")
    bad_label = sorted(set(df["label"]) - {REAL, FAKE})
    if bad_label:
        raise DataError(f"{what}: labels must be 0 (real) or 1 (fake), found {bad_label}")
    check_no_video_leak(df)  # before the duplicate check: a leak also duplicates paths
    dup = df["path"][df["path"].duplicated()]
    if len(dup):
        raise DataError(f"{what}: {len(dup)} image(s) listed twice, e.g. {dup.iloc[0]}")
    mixed = df.groupby("video")["label"].nunique()
    mixed = mixed[mixed > 1]
    if len(mixed):
        raise DataError(f"{what}: video(s) with both real and fake frames: {list(mixed.index[:5])}")
    return df


def check_no_video_leak(index: pd.DataFrame) -> None:
    """Raise DataError if any video has frames in more than one split."""
    n_splits = index.groupby("video")["split"].nunique()
    leaked = list(n_splits.index[n_splits > 1])
    if leaked:
        examples = {v: sorted(set(index.loc[index["video"] == v, "split"])) for v in leaked[:5]}
        raise DataError(
            f"{len(leaked)} video(s) have frames in several splits (leak), e.g. {examples}: "
            f"fix the split files or folders so each video sits in one split"
        )


# ---- helpers shared by the readers ------------------------------------------------------


def abs_path(path: str | os.PathLike) -> Path:
    """Absolute path with `~` expanded; symlinks are kept as written."""
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def require_dir(path: str | os.PathLike, what: str) -> Path:
    p = abs_path(path)
    if not p.is_dir():
        raise DataError(f"{what} {p} does not exist or is not a folder")
    return p


def is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()


def list_images(folder: Path, recursive: bool = True) -> list[Path]:
    """Image files (png/jpg/jpeg, any case) under `folder`, sorted; hidden files and folders skipped."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p for p in found
        if is_image(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def frame_rows(frames: Iterable[Path], label: int, video: str, split: str, source: str) -> list[tuple]:
    return [(str(p), label, video, split, source) for p in frames]


def to_frame(rows: Sequence[tuple]) -> pd.DataFrame:
    return pd.DataFrame.from_records(list(rows), columns=list(COLUMNS))


def check_fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise DataError(f"{name}={value!r} must be a number in [0, 1)")
    return float(value)


def check_seed(value: Any, name: str = "seed") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise DataError(f"{name}={value!r} must be a non-negative integer")
    return int(value)


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def split_counts(n: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """How many of `n` groups go to each held-out split; the rest go to train.

    Counts are rounded half up; once there are 3 or more groups each split with a
    positive fraction gets at least one, and train always keeps at least one.
    """
    counts = {}
    for split, frac in fractions.items():
        k = _round_half_up(n * frac)
        counts[split] = max(k, 1) if (frac > 0 and n >= 3) else k
    while sum(counts.values()) >= n and any(counts.values()):  # keep one for train
        largest = max(counts, key=lambda s: counts[s])
        counts[largest] -= 1
    return counts


def assign_splits(
    groups: Mapping[str, str], fractions: Mapping[str, float], seed: int
) -> dict[str, str]:
    """Seeded split of whole groups: {group: stratum} -> {group: split}.

    Each stratum (e.g. the label) is shuffled and cut separately, so every split gets
    its share of each; the result depends only on the groups, strata and seed.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, str] = {}
    for stratum in sorted(set(groups.values())):
        members = sorted(g for g, s in groups.items() if s == stratum)
        members = [members[i] for i in rng.permutation(len(members))]
        start = 0
        for split, k in split_counts(len(members), fractions).items():
            out.update({g: split for g in members[start:start + k]})
            start += k
        out.update({g: "train" for g in members[start:]})
    return out
