"""FaceForensics++ extracted frames with the official train/val/test pair lists.

Layout (frames beside the `videos/` folder, one folder per video):
    <root>/original_sequences/youtube/<compression>/frames/<id>/*.png
    <root>/manipulated_sequences/<Method>/<compression>/frames/<a>_<b>/*.png
    <split_dir>/{train,val,test}.json   # [["071", "054"], ...]
A pair [a, b] puts reals a and b and fakes a_b and b_a of each method in that split.
Videos listed but not extracted are skipped; a split left with no image is an error.
Ids: "youtube/071", "Deepfakes/071_054"; source: "youtube" or the method name.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import pandas as pd

from trainables.data.index import (
    FAKE,
    REAL,
    SPLITS,
    frame_rows,
    list_images,
    register_reader,
    require_dir,
    to_frame,
)
from trainables.errors import DataError

log = logging.getLogger(__name__)

DEFAULT_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
KNOWN_METHODS = DEFAULT_METHODS + ("FaceShifter",)  # same a_b naming and splits


@register_reader("ffpp")
def read_ffpp(
    root: str,
    compression: str = "c23",
    methods: Sequence[str] | None = None,
    split_dir: str | None = None,
) -> pd.DataFrame:
    root_dir = require_dir(root, "FaceForensics++ root")
    methods = DEFAULT_METHODS if methods is None else methods
    if isinstance(methods, str) or not isinstance(methods, (list, tuple)) or not methods:
        raise DataError(f"methods={methods!r} must be a non-empty list, e.g. {list(DEFAULT_METHODS)}")
    methods = list(methods)
    unknown = [m for m in methods if m not in KNOWN_METHODS]
    if unknown:
        raise DataError(f"unknown FaceForensics++ method(s) {unknown}; known: {list(KNOWN_METHODS)}")
    splits_dir = root_dir / "splits" if split_dir is None else require_dir(split_dir, "split_dir")
    sources = {"youtube": _frames_dir(root_dir / "original_sequences" / "youtube", compression)}
    for m in methods:
        sources[m] = _frames_dir(root_dir / "manipulated_sequences" / m, compression)

    pairs = {split: _read_pairs(splits_dir / f"{split}.json") for split in SPLITS}

    rows: list[tuple] = []
    for split in SPLITS:
        wanted: dict[tuple[str, str], int] = {}  # (source, video) -> label, listed once each
        for a, b in pairs[split]:
            wanted.update({("youtube", a): REAL, ("youtube", b): REAL})
            wanted.update({(m, vid): FAKE for m in methods for vid in (f"{a}_{b}", f"{b}_{a}")})
        split_rows, skipped = [], 0
        for (source, vid), label in wanted.items():
            video_dir = sources[source] / vid
            frames = list_images(video_dir, recursive=False) if video_dir.is_dir() else []
            skipped += not frames
            split_rows += frame_rows(frames, label, f"{source}/{vid}", split, source)
        if not split_rows:
            raise DataError(
                f"FaceForensics++ split {split!r} ({splits_dir / f'{split}.json'}) has no extracted "
                f"frames under {root_dir} for compression {compression!r} and methods {methods}"
            )
        if skipped:
            log.warning("FaceForensics++ %s: %d listed videos have no frames on disk, skipped", split, skipped)
        rows += split_rows
    return to_frame(rows)


def _frames_dir(method_dir: Path, compression: str) -> Path:
    comp_dir = method_dir / str(compression)
    if not comp_dir.is_dir():
        have = sorted(p.name for p in method_dir.iterdir() if p.is_dir()) if method_dir.is_dir() else []
        raise DataError(
            f"compression folder {comp_dir} does not exist (found {have or 'nothing'} in {method_dir}); "
            f"set data.compression or check data.root"
        )
    frames = comp_dir / "frames"
    if not frames.is_dir():
        raise DataError(f"no extracted frames at {frames}: extract frames to frames/<video>/NNN.png first")
    return frames


def _read_pairs(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        raise DataError(f"FaceForensics++ split file {path} does not exist; set data.split_dir to the folder "
                        f"holding train.json, val.json and test.json")
    try:
        pairs = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"split file {path} is not valid JSON: {exc}") from None
    ok = isinstance(pairs, list) and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in pairs
    )
    if not ok:
        raise DataError(f"split file {path} must be a JSON list of id pairs like [[\"071\", \"054\"], ...]")
    return [(a, b) for a, b in pairs]
