"""An unlabeled transfer set: images beside a student's labelled subset that only the
distillation terms see (a study's `students.transfer: {source, size}`; trainables/engine.py).

    train_unlabeled  `size` further images of the train split, from videos the labelled subset
                     does not use (the video rule: no video shared with the subset, and none
                     with val or test, whose videos never sit in the train split), in a fixed
                     order seeded by the subset's draw: videos shuffled, frames dealt round-robin
                     across them (`subsets.pick_order`, on a stream of its own). The label
                     column is dropped before anything is chosen: no label is ever read.
    sbi              `size` images made from the subset's own real images: a self-blended
                     pseudo-fake (`synthetic.self_blend`, the blend `study data sbi` writes,
                     trainables/data/sbi.py), then its real source, then the next pair. Real
                     images are taken in subset order, again from the first when all have been
                     used (each pass a new fake of each: copy c of an image draws from
                     `sbi.image_rng(seed, path, c)`). Blended at the training resolution, from
                     the decoded subset (`study data sbi` blends the files at theirs).

A transfer set is images only (uint8, like the subset's), with one key per image naming
what it is (a path, or how a fake was made) for the teachers' output cache. The volume of
a cell still counts its labelled images alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from trainables.data.index import check_seed
from trainables.data.sbi import VERSION as SBI_VERSION, image_rng
from trainables.data.subsets import _split_rows, pick_order
from trainables.data.synthetic import self_blend
from trainables.errors import ConfigError, DataError

from trainables.spec import SOURCES, TransferSpec  # noqa: E402,F401  (torch-free: a trial's spec holds it)
UNLABELED_STREAM = 2  # pick_order's stream for the transfer draw (0 and 1: the subset's classes)


@dataclass(frozen=True)
class TransferImages:
    keys: tuple[str, ...]  # what each image is: its file, or how a fake was made from one
    images: Tensor  # (N, 3, S, S) uint8


def unlabeled_frame(index: pd.DataFrame, subset: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """`size` train rows (path, video, split, source; no label) from videos `subset` does not use."""
    seed = check_seed(seed)
    train = _split_rows(index, "train").drop(columns="label")  # never read
    used = set(subset["video"])
    rows = train[~train["video"].isin(used)].reset_index(drop=True)
    if size > len(rows):
        raise DataError(
            f"students.transfer: train_unlabeled size={size} needs {size} train images outside the "
            f"{len(used)} video(s) of the {len(subset)}-image subset, but only {len(rows)} exist "
            f"({len(train)} train images in {train['video'].nunique()} videos): use a size of at most "
            f"{len(rows)}, or a smaller volume")
    return rows.iloc[pick_order(rows, seed, UNLABELED_STREAM)[:size]].reset_index(drop=True)


def sbi_set(real_images: Tensor, real_paths: Sequence[str], size: int, seed: int) -> TransferImages:
    """`size` images: (self-blended fake, its real source) pairs of the subset's real images."""
    seed = check_seed(seed)
    if len(real_images) == 0 or len(real_images) != len(real_paths):
        raise DataError(f"students.transfer: sbi needs the subset's real images, got {len(real_images)} "
                        f"images and {len(real_paths)} paths")
    hwc = real_images.permute(0, 2, 3, 1).numpy()  # (R, S, S, 3) uint8
    keys, out = [], []
    for j in range(size):
        r, copy = (j // 2) % len(real_paths), (j // 2) // len(real_paths)
        path = str(real_paths[r])
        if j % 2:  # the real source
            keys.append(path)
            out.append(real_images[r])
            continue
        fake = self_blend(np.ascontiguousarray(hwc[r]), image_rng(seed, PurePosixPath(path), copy))
        keys.append(f"sbi-v{SBI_VERSION}:seed{seed}:copy{copy}:{path}")
        out.append(torch.from_numpy(fake).permute(2, 0, 1))
    return TransferImages(tuple(keys), torch.stack(out).contiguous())


def transfer_set(spec: TransferSpec, index: pd.DataFrame, subset: pd.DataFrame, subset_images: Tensor,
                 seed: int, load: Callable[[pd.DataFrame], Tensor]) -> TransferImages:
    """The transfer set of a subset drawn with `seed` (`subset`: its rows, `subset_images`
    their decoded images); `load(frame)` decodes a frame's images as the subset's were."""
    if spec.source == "train_unlabeled":
        frame = unlabeled_frame(index, subset, spec.size, seed)
        return TransferImages(tuple(str(p) for p in frame["path"]), load(frame))
    real = torch.as_tensor(subset["label"].to_numpy() == 0)  # the labelled subset's own labels
    return sbi_set(subset_images[real], [str(p) for p in subset.loc[real.numpy(), "path"]], spec.size, seed)
