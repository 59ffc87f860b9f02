"""DeepfakeBench dataset JSON (its `preprocessing/dataset_json/*.json`).

Shape, with or without the compression level (Celeb-DF has none; told apart by
whether a split's values are videos, i.e. dicts with "frames"):
    {dataset: {label_name: {train|val|test: {compression: {video: {"label": ..., "frames": [...]}}}}}}
    {dataset: {label_name: {train|val|test: {video: {"label": ..., "frames": [...]}}}}}
`label_map` maps every label name to 0 (real) or 1 (fake), like DeepfakeBench's
`label_dict`. Relative frame paths are joined to `root` if given, else to the JSON
file's folder; Windows separators are accepted. Every frame must exist.
Ids: "<label_name>/<video>"; source: the label name.
"""
from __future__ import annotations

import json as jsonlib
import os
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from trainables.data.index import SPLITS, abs_path, frame_rows, register_reader, require_dir, to_frame
from trainables.errors import DataError

MAX_LISTED = 5


@register_reader("deepfakebench")
def read_deepfakebench(
    json: str,  # the spec key users write; the module is imported as jsonlib
    label_map: Mapping[str, int],
    root: str | None = None,
    compression: str = "c23",
) -> pd.DataFrame:
    path = abs_path(json)
    doc = _load(path)
    if not isinstance(label_map, Mapping) or any(v not in (0, 1) or isinstance(v, bool) for v in label_map.values()):
        raise DataError(f"label_map={label_map!r} must map label names to 0 (real) or 1 (fake)")
    base = require_dir(root, "DeepfakeBench frames root") if root is not None else path.parent

    rows: list[tuple] = []
    missing: list[str] = []
    for dataset, by_label in _items(doc, f"{path}"):
        for label_name, by_split in _items(by_label, f"{path}: {dataset}"):
            for split, node in _items(by_split, f"{path}: {dataset}/{label_name}"):
                where = f"{path}: {dataset}/{label_name}/{split}"
                if split not in SPLITS:
                    raise DataError(f"{where}: unknown split {split!r}; expected {list(SPLITS)}")
                for video, entry in _videos(node, compression, where):
                    name = entry.get("label", label_name)
                    if name not in label_map:
                        raise DataError(
                            f"{where}/{video}: label {name!r} is not in label_map {dict(label_map)}; add it as 0 or 1"
                        )
                    frames = [_resolve(base, f) for f in entry["frames"]]
                    missing += [str(f) for f in frames if not f.is_file()]
                    rows += frame_rows(frames, int(label_map[name]), f"{label_name}/{video}", split, label_name)
    if missing:
        raise DataError(
            f"{path}: {len(missing)} frame file(s) do not exist, e.g. {missing[:MAX_LISTED]}; "
            f"set data.root to the folder the JSON's relative paths start from"
        )
    return to_frame(rows)


def _load(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"DeepfakeBench JSON {path} does not exist")
    try:
        return jsonlib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, jsonlib.JSONDecodeError) as exc:
        raise DataError(f"DeepfakeBench JSON {path} cannot be read: {exc}") from None


def _items(node: Any, where: str) -> list[tuple[str, Any]]:
    if not isinstance(node, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(node).__name__}")
    return sorted(node.items())


def _is_video(entry: Any) -> bool:
    return isinstance(entry, dict) and "frames" in entry


def _videos(node: Any, compression: str, where: str) -> list[tuple[str, dict]]:
    """The {video: entry} of one split, going through the compression level if there is one."""
    items = _items(node, where)
    if items and not _is_video(items[0][1]):  # a compression level
        levels = dict(items)
        if compression not in levels:
            raise DataError(f"{where}: no compression {compression!r}; found {sorted(levels)}: set data.compression")
        where, items = f"{where}/{compression}", _items(levels[compression], f"{where}/{compression}")
    for video, entry in items:
        if not _is_video(entry) or not isinstance(entry["frames"], list):
            raise DataError(f"{where}/{video}: expected {{\"label\": ..., \"frames\": [paths]}}")
    return items


def _resolve(base: Path, frame: str) -> Path:
    frame = frame.replace("\\", "/") if os.sep == "/" else frame
    p = Path(os.path.expanduser(frame))
    return p if p.is_absolute() else Path(os.path.abspath(base / p))
