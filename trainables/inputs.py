"""What `study predict` checks before it loads anything: the model reference's form and the
input folder's files. Standard library only, so that a mistake is named in a fraction of a
second (torch, MLflow and the model are imported only for inputs that can be scored)."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from trainables.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


# a run: its id, or runs:/<run id>/<model name> (what `study export` prints; `runs:/<id>/model` of older studies)
RUN_REF = re.compile(r"(?:runs:/)?([0-9a-f]{32})(?:/[^/]+/?)?")


def run_of_ref(model: str) -> str | None:
    """The run id `model` names as a run (see `RUN_REF`), else None."""
    found = RUN_REF.fullmatch(model)
    return found.group(1) if found else None


def model_ref_kind(model: str) -> str:
    """"folder", "run" (a run id, or runs:/<run id>/<name>: its logged model, found by its source
    run) or "uri" (models:/…, other runs:/ paths); a UserError for anything else."""
    if Path(model).is_dir():
        return "folder"
    if run_of_ref(model):
        return "run"
    if model.startswith(("runs:/", "models:/")):
        return "uri"
    raise UserError(f"--model {model!r}: give a run id, runs:/<run id>/<model name>, models:/<name>/<version> "
                    "or a local MLflow model folder")


def find_files(root: Path, suffixes: Sequence[str]) -> tuple[list[Path], int]:
    """(files under `root` with one of `suffixes`, any case, sorted; how many others were passed over).
    Hidden files and folders are skipped."""
    found, other = [], 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if f.startswith("."):
                continue
            if Path(f).suffix.lower() in suffixes:
                found.append(Path(dirpath) / f)
            else:
                other += 1
    return sorted(found), other
