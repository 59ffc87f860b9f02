"""Plain folders: `root/real/**` and `root/fake/**` (real = 0, fake = 1, not sorted order).

Split: from `root/<train|val|test>/real|fake/` when those split folders exist,
otherwise a seeded split of whole videos (`val_fraction`, `test_fraction`).
Video: the folder a frame sits in below real|fake (`real/<video>/000.png`), or the
file stem for flat files (`real/0001.png`); ids are "<source>/<real|fake>/<video>".
A seeded split keeps a name together across classes (`real/v1`, `fake/v1` land in
one split), so a fake made from a real clip never sits beside it in another split.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from trainables.data.index import (
    FAKE,
    REAL,
    SPLITS,
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

CLASSES = {"real": REAL, "fake": FAKE}


@register_reader("folder")
def read_folder(
    root: str,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    source: str = "folder",
) -> pd.DataFrame:
    root_dir = require_dir(root, "folder dataset root")
    seed = check_seed(seed)
    fractions = {"val": check_fraction("val_fraction", val_fraction),
                 "test": check_fraction("test_fraction", test_fraction)}
    if fractions["val"] + fractions["test"] >= 1:
        raise DataError(f"val_fraction + test_fraction = {sum(fractions.values())} leaves nothing to train on")
    split_dirs = [s for s in SPLITS if (root_dir / s).is_dir()]
    class_dirs = [c for c in CLASSES if (root_dir / c).is_dir()]
    if split_dirs and class_dirs:
        raise DataError(
            f"{root_dir} has both split folders {split_dirs} and class folders {class_dirs}: "
            f"use either <root>/<split>/real|fake or <root>/real|fake"
        )
    if split_dirs:
        rows = []
        for split in split_dirs:
            split_rows = _read_classes(root_dir / split, source, split)
            if not split_rows:
                raise DataError(f"{root_dir / split} has no images in real/ or fake/")
            rows += split_rows
        return to_frame(rows)
    if not class_dirs:
        raise DataError(
            f"{root_dir} has neither real/ and fake/ folders nor train|val|test/real|fake folders"
        )
    rows = _read_classes(root_dir, source, "train")
    if not rows:
        raise DataError(f"{root_dir}/real and {root_dir}/fake hold no .png/.jpg/.jpeg images")
    return _seeded_split(to_frame(rows), source, fractions, seed)


def _read_classes(base: Path, source: str, split: str) -> list[tuple]:
    rows = []
    for name, label in CLASSES.items():
        class_dir = base / name
        if not class_dir.is_dir():
            continue
        for path in list_images(class_dir):
            rel = path.parent.relative_to(class_dir).as_posix()
            video = path.stem if rel == "." else rel
            rows += frame_rows([path], label, f"{source}/{name}/{video}", split, source)
    return rows


def _seeded_split(df: pd.DataFrame, source: str, fractions: dict[str, float], seed: int) -> pd.DataFrame:
    # group = video name without source and class, stratum = which classes the name has
    group = df["video"].str.slice(len(source) + 1).str.split("/", n=1).str[1]
    strata = df.groupby(group)["label"].agg(lambda s: ",".join(map(str, sorted(set(s)))))
    split_of = assign_splits(strata.to_dict(), fractions, seed)
    return df.assign(split=group.map(split_of))
