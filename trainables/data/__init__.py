"""Datasets as one index table, image decoding, few-sample subsets, synthetic task.

`read_index(spec)` indexes a dataset (columns path, label, video, split, source;
label 0 = real, 1 = fake); `balanced_subset` / `balanced_split` choose rows;
`load_images` decodes them into a uint8 tensor (N, 3, size, size).
"""
from trainables.data.index import (
    COLUMNS,
    READERS,
    SPLITS,
    check_no_video_leak,
    read_index,
    register_reader,
)

from trainables.data import readers  # noqa: E402,F401  (registration)
from trainables.data.images import load_images
from trainables.data.subsets import balanced_split, balanced_subset
from trainables.data.synthetic import generate, self_blend

__all__ = [
    "COLUMNS",
    "READERS",
    "SPLITS",
    "balanced_split",
    "balanced_subset",
    "check_no_video_leak",
    "generate",
    "load_images",
    "read_index",
    "register_reader",
    "self_blend",
]
