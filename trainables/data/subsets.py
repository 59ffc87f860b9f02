"""Few-sample training subsets and balanced evaluation sets drawn from an index.

Each class of the train split gets one fixed, seeded order: videos shuffled, then
frames dealt round-robin across videos (first one frame of every video, then a
second, ...). A subset of `volume` images takes the first volume/2 of each class,
so for one seed the 10 images lie inside the 100, inside the 1000, and small
subsets spread over as many videos as they can. Rows alternate real, fake in
pick order: the 10-subset is also the first 10 rows of the 100-subset, and the
row position (fresh RangeIndex) is the sample index of the memory bank.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from trainables.data.index import COLUMNS, FAKE, REAL, SPLITS, check_no_video_leak, check_seed
from trainables.errors import DataError

CLASS_NAMES = {REAL: "real", FAKE: "fake"}


def pick_order(rows: pd.DataFrame, seed: int, label: int) -> np.ndarray:
    """Positions into `rows` (one class, sorted by path) in their fixed seeded pick order."""
    rng = np.random.default_rng([seed, label])
    videos = np.array(sorted(rows["video"].unique()))
    video_rank = dict(zip(videos[rng.permutation(len(videos))], range(len(videos))))
    rank = rows["video"].map(video_rank).to_numpy()
    round_ = pd.Series(rng.random(len(rows))).groupby(rows["video"].to_numpy()).rank(method="first").to_numpy()
    return np.lexsort((rank, round_))  # by round, then by video rank


def balanced_subset(index: pd.DataFrame, volume: int, seed: int) -> pd.DataFrame:
    """`volume` train images, half real and half fake, nested across volumes for a seed."""
    if isinstance(volume, bool) or not isinstance(volume, (int, np.integer)) or volume < 2 or volume % 2:
        raise DataError(f"volume={volume!r} must be an even integer >= 2 (half real, half fake)")
    seed = check_seed(seed)
    train = _split_rows(index, "train")
    need = int(volume) // 2
    picked = []
    for label, name in CLASS_NAMES.items():
        rows = train[train["label"] == label].reset_index(drop=True)
        if len(rows) == 0:
            raise DataError(f"the train split has no {name} images (label {label}): a balanced subset needs both")
        if need > len(rows):
            raise DataError(
                f"volume={volume} needs {need} {name} train images but only {len(rows)} exist: "
                f"use a volume of at most {2 * min((train['label'] == c).sum() for c in CLASS_NAMES)}"
            )
        chosen = rows.iloc[pick_order(rows, seed, label)[:need]]
        picked.append(chosen.assign(_slot=2 * np.arange(need) + label))  # real, fake, real, ...
    out = pd.concat(picked).sort_values("_slot").drop(columns="_slot")
    return out.reset_index(drop=True)


def balanced_split(
    index: pd.DataFrame, split: str, seed: int, max_per_class: int | None = None
) -> pd.DataFrame:
    """A class-balanced `split` (val or test): the larger class downsampled, seeded; rows by path."""
    if split not in SPLITS:
        raise DataError(f"split={split!r} is not one of {list(SPLITS)}")
    if max_per_class is not None and (
        isinstance(max_per_class, bool) or not isinstance(max_per_class, (int, np.integer)) or max_per_class < 1
    ):
        raise DataError(f"max_per_class={max_per_class!r} must be a positive integer or None")
    seed = check_seed(seed)
    rows = _split_rows(index, split)
    counts = {name: int((rows["label"] == label).sum()) for label, name in CLASS_NAMES.items()}
    if min(counts.values()) == 0:
        raise DataError(f"the {split} split has {counts} images: a balanced {split} set needs both classes")
    n = min(counts.values()) if max_per_class is None else min(min(counts.values()), int(max_per_class))
    parts = []
    for label in CLASS_NAMES:
        cls = rows[rows["label"] == label].reset_index(drop=True)
        parts.append(cls.iloc[pick_order(cls, seed, label)[:n]])
    return pd.concat(parts).sort_values("path", kind="stable").reset_index(drop=True)


def whole_split(index: pd.DataFrame, split: str) -> pd.DataFrame:
    """Every row of `split` (val or test), by path: the evaluation set the paper scores on."""
    if split not in SPLITS:
        raise DataError(f"split={split!r} is not one of {list(SPLITS)}")
    rows = _split_rows(index, split)
    counts = {name: int((rows["label"] == label).sum()) for label, name in CLASS_NAMES.items()}
    if min(counts.values()) == 0:
        raise DataError(f"the {split} split has {counts} images: an evaluation set needs both classes")
    return rows


def rows_digest(frame: pd.DataFrame) -> str:
    """A short SHA-256 of a set's rows (path and label, in order): equal digests, equal rows."""
    text = "\n".join(f"{p}\t{int(y)}" for p, y in zip(frame["path"], frame["label"]))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _split_rows(index: pd.DataFrame, split: str) -> pd.DataFrame:
    missing = [c for c in COLUMNS if c not in index.columns]
    if missing:
        raise DataError(f"index lacks column(s) {missing}; build it with trainables.data.read_index")
    check_no_video_leak(index)
    return index[index["split"] == split].sort_values("path", kind="stable").reset_index(drop=True)
