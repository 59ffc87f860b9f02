"""The synthetic task (self-blended or face-swapped): generated into `root` on first use, then read as `folder`.

`root/SYNTHETIC.json` (written last) marks a finished dataset and records its
parameters; a root made with other parameters is an error, never overwritten.
Generation goes to a temporary sibling folder renamed into place, so trials that
start together never see or write half a dataset.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pandas as pd

from trainables.data import synthetic
from trainables.data.index import abs_path, register_reader
from trainables.data.readers.folder import read_folder
from trainables.errors import DataError


@register_reader("synthetic")
def read_synthetic(
    root: str, num_images: int = 2000, size: int = 64, seed: int = 0, frames_per_video: int = 4,
    manipulation: str = "blend",
) -> pd.DataFrame:
    root_dir = abs_path(root)
    params = synthetic.marker_params(num_images, size, seed, frames_per_video, manipulation)
    want = {**synthetic.MARKER_DEFAULTS, **params}  # a marker without a key was made with its default
    if not (root_dir / synthetic.MARKER).is_file():
        _build(root_dir, num_images, size, seed, frames_per_video, manipulation)
    have = {**synthetic.MARKER_DEFAULTS, **_read_marker(root_dir / synthetic.MARKER)}
    differ = {k: have.get(k) for k in want if have.get(k) != want[k]}
    if differ:
        raise DataError(
            f"{root_dir} holds a synthetic dataset made with {differ}, not "
            f"{ {k: want[k] for k in differ} }: choose another data.root (or delete {root_dir})"
        )
    return read_folder(str(root_dir), source="synthetic")


def _build(root_dir: Path, num_images: int, size: int, seed: int, frames_per_video: int, manipulation: str) -> None:
    if root_dir.exists() and (not root_dir.is_dir() or any(root_dir.iterdir())):
        raise DataError(
            f"{root_dir} exists but holds no finished synthetic dataset (no {synthetic.MARKER}; an "
            f"interrupted run?): delete it or choose another data.root"
        )
    tmp = root_dir.parent / f".{root_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        synthetic.generate(tmp, num_images, size=size, seed=seed, frames_per_video=frames_per_video,
                           manipulation=manipulation)
        try:
            os.rename(tmp, root_dir)  # atomic; fails if another process filled root_dir first
        except OSError:
            if not (root_dir / synthetic.MARKER).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_marker(path: Path) -> dict:
    try:
        marker = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"synthetic marker {path} cannot be read ({exc}): delete its folder to regenerate") from None
    if not isinstance(marker, dict):
        raise DataError(f"synthetic marker {path} is not a JSON object: delete its folder to regenerate")
    return marker
