"""Celeb-DF v2 extracted frames; the official test list gives the test split.

Frames rule, per folder F in Celeb-real, YouTube-real, Celeb-synthesis:
    <root>/F/frames/<stem>/*.png   when <root>/F/frames/ exists (FF++ style), else
    <root>/F/<stem>/*.png
where <stem> is the video file name without `.mp4` (`Celeb-real/frames/id0_0000/000.png`).
`<root>/List_of_testing_videos.txt` lines read `<label> <F>/<stem>.mp4` with
1 = real, 0 = fake (the inverse of ours); those videos form the test split and
the others are split by video into train/val (`val_fraction`, seeded, per class).
A missing folder is allowed (e.g. YouTube-real not extracted); listed videos
without frames are skipped. Ids: "Celeb-real/id0_0000"; source: the folder.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from trainables.data.index import (
    FAKE,
    REAL,
    assign_splits,
    check_fraction,
    check_seed,
    frame_rows,
    list_images,
    register_reader,
    require_dir,
    to_frame,
)
from trainables.errors import DataError

log = logging.getLogger(__name__)

FOLDERS = {"Celeb-real": REAL, "YouTube-real": REAL, "Celeb-synthesis": FAKE}
TEST_LIST = "List_of_testing_videos.txt"
LIST_LABELS = {"1": REAL, "0": FAKE}  # Celeb-DF's list: 1 = real, 0 = fake


@register_reader("celebdf")
def read_celebdf(root: str, val_fraction: float = 0.1, seed: int = 0) -> pd.DataFrame:
    root_dir = require_dir(root, "Celeb-DF root")
    val_fraction = check_fraction("val_fraction", val_fraction)
    seed = check_seed(seed)
    test_videos = _read_test_list(root_dir / TEST_LIST)

    videos: dict[str, tuple[int, list[Path]]] = {}  # "F/stem" -> (label, frames)
    for folder, label in FOLDERS.items():
        base = _frames_base(root_dir / folder)
        if base is None:
            continue
        for video_dir in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
            frames = list_images(video_dir, recursive=False)
            if frames:
                videos[f"{folder}/{video_dir.name}"] = (label, frames)
    if not videos:
        raise DataError(
            f"no frames found under {root_dir}: expected {list(FOLDERS)} folders holding "
            f"frames/<video>/*.png or <video>/*.png"
        )
    listed = [v for v in test_videos if v in videos]
    if not listed:
        raise DataError(f"none of the {len(test_videos)} videos in {root_dir / TEST_LIST} has frames under {root_dir}")
    if len(listed) < len(test_videos):
        log.warning("Celeb-DF: %d test videos have no frames on disk, skipped", len(test_videos) - len(listed))

    rest = {v: str(videos[v][0]) for v in videos if v not in test_videos}
    split_of = assign_splits(rest, {"val": val_fraction}, seed)
    split_of.update({v: "test" for v in listed})
    rows = []
    for video, (label, frames) in videos.items():
        rows += frame_rows(frames, label, video, split_of[video], video.split("/")[0])
    return to_frame(rows)


def _frames_base(folder: Path) -> Path | None:
    if (folder / "frames").is_dir():
        return folder / "frames"
    return folder if folder.is_dir() else None


def _read_test_list(path: Path) -> dict[str, int]:
    """{"F/stem": our label} from the official list; errors name the line number."""
    if not path.is_file():
        raise DataError(f"Celeb-DF test list {path} does not exist: it ships with Celeb-DF v2; put it in data.root")
    out: dict[str, int] = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        where = f"{path} line {n} ({line.strip()!r})"
        if len(parts) != 2 or parts[0] not in LIST_LABELS:
            raise DataError(f"{where}: expected '<1 real|0 fake> <folder>/<file>.mp4'")
        folder, _, file = parts[1].replace("\\", "/").partition("/")
        if folder not in FOLDERS or not file:
            raise DataError(f"{where}: unknown folder {folder!r}; expected one of {list(FOLDERS)}")
        label = LIST_LABELS[parts[0]]
        if label != FOLDERS[folder]:
            raise DataError(
                f"{where}: label {parts[0]} disagrees with folder {folder} (in this list 1 = real, 0 = fake)"
            )
        out[f"{folder}/{Path(file).stem}"] = label
    return out
