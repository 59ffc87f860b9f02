"""A stage's Ray Tune state, kept whole across a full disk.

Ray Tune 2.60 writes a stage's state (`experiment_state-<session>.json`, the search
algorithm's state, the callbacks' state) in a staging folder and then copies it into the
stage's folder, overwriting the files in place. When the study's disk fills up during that
copy, a file is left cut short; `Tuner.restore` then logs "Failed to restore the run state",
restarts the stage with trials that carry no configuration, and the study fails on them
(seen in the disk-full drill). So each time Ray saves, `StateKeeper` copies the state files
that are now in the stage's folder, if every one of them reads, into `<stage>/.last-good/`
(a new folder swapped in whole, so it is never half written either); and before a restore,
`repair` finds a damaged file, sets every state file aside in `<stage>/.damaged-<time>/` and
puts the last good set in their place. That set is one save behind at most: trials that
ended after it run again on resume, and their MLflow runs, found by trial id, are not
written twice. With no good copy the damage is an error that names the file.
"""
from __future__ import annotations

import json
import pickletools
import shutil
import time
from pathlib import Path

from ray import tune
from ray.tune.callback import CallbackList
from ray.tune.execution.tune_controller import TuneController
from ray.tune.search import BasicVariantGenerator, SearchGenerator, Searcher

from trainables.errors import UserError

GOOD = ".last-good"
TUNER_FILE = "tuner.pkl"
# the files Tune restores a stage from, newest session last by name (as Tune picks them)
PATTERNS = tuple(t.format("*") for t in (TuneController.CKPT_FILE_TMPL, BasicVariantGenerator.CKPT_FILE_TMPL,
                                         SearchGenerator.CKPT_FILE_TMPL, Searcher.CKPT_FILE_TMPL,
                                         CallbackList.CKPT_FILE_TMPL))


def newest(folder: Path) -> list[Path]:
    """The state files Tune would restore `folder` from: tuner.pkl and the newest of each kind."""
    files = [folder / TUNER_FILE] if (folder / TUNER_FILE).exists() else []
    for pattern in PATTERNS:
        found = sorted(folder.glob(pattern))
        if found:
            files.append(found[-1])
    return files


def readable(path: Path) -> bool:
    """Whether the file reads whole: JSON that parses, or a pickle whose opcodes run to its STOP
    (walked, not loaded: nothing is imported or built). Tune writes some pickles under .json names."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if not data:
        return False
    try:
        json.loads(data)
        return True
    except ValueError:
        pass
    try:
        for opcode, _arg, _pos in pickletools.genops(data):
            if opcode.name == "STOP":
                return True
    except Exception:  # cut short: the opcode stream ends early or breaks off
        return False
    return False


def damaged(folder: Path) -> list[Path]:
    files = newest(folder)
    if files and not any(f.name.startswith("experiment_state-") for f in files):
        return [folder / TuneController.CKPT_FILE_TMPL.format("<session>")]  # tuner.pkl without its state
    return [f for f in files if not readable(f)]


def keep_good_copy(folder: Path) -> bool:
    """Copy `folder`'s state files into `folder/.last-good` when all of them read; False when
    they do not or the copy fails (a full disk): the previous good copy stays."""
    files = newest(folder)
    if not files or damaged(folder):
        return False
    fresh, old = folder / f"{GOOD}.new", folder / f"{GOOD}.old"
    try:
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir()
        for f in files:
            shutil.copy2(f, fresh / f.name)
        if not all(readable(fresh / f.name) for f in files):
            raise OSError("a copy did not read back")
        shutil.rmtree(old, ignore_errors=True)
        if (folder / GOOD).exists():
            (folder / GOOD).rename(old)
        fresh.rename(folder / GOOD)
        shutil.rmtree(old, ignore_errors=True)
        return True
    except OSError:
        shutil.rmtree(fresh, ignore_errors=True)
        if not (folder / GOOD).exists() and old.exists():
            old.rename(folder / GOOD)
        return False


def repair(path: str) -> str | None:
    """Before a restore: put the last good state back when a state file is damaged. Returns
    what was done (for the terminal), None when nothing was damaged."""
    if "://" in path:
        return None  # remote storage: Ray reads it; nothing to look at here
    folder = Path(path)
    if not (folder / TUNER_FILE).exists() and not (folder / GOOD).exists():
        return None
    bad = damaged(folder)
    if not bad:
        return None
    good = folder / GOOD
    if not good.is_dir() or damaged(good):
        raise UserError(
            f"cannot resume the stage in {folder}: Ray's saved state {', '.join(f.name for f in bad)} is damaged "
            "(cut short, as a full disk leaves it) and no good copy of it is kept. The trials that finished are "
            "recorded in MLflow; run the study again under another name or --workdir to redo the rest")
    aside = folder / time.strftime(".damaged-%Y%m%d-%H%M%S")
    aside.mkdir()
    for pattern in (TUNER_FILE, *PATTERNS):
        for f in folder.glob(pattern):
            f.rename(aside / f.name)
    for f in good.iterdir():
        shutil.copy2(f, folder / f.name)
    return (f"Ray's saved state of {folder.name} was damaged ({', '.join(f.name for f in bad)}): resumed from its "
            f"last good copy (kept the damaged files in {aside}); trials that ended after that copy run again")


class StateKeeper(tune.Callback):
    """Keeps `<stage>/.last-good` (see the module's docstring). Tune asks every callback for its
    state right after it has written the stage's state files to its staging folder, and copies
    them into the stage's folder after that: at each ask, what the stage's folder holds is
    the previous save, whole or not."""

    def __init__(self, folder: str):
        self.folder = folder

    def get_state(self):
        if "://" not in self.folder:
            keep_good_copy(Path(self.folder))
        return None

    def on_experiment_end(self, trials, **info):
        if "://" not in self.folder:
            keep_good_copy(Path(self.folder))
