"""The trial record: what a trial is (`RunTags`, planned by `study.plan`) and what the
tracking callback adds, as MLflow tags. One schema, written by `study.tracking` and read
by `analysis.runs`: the tag names and their types live here and nowhere else.
Torch-free, so that reading a study's results needs no torch.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

FULL = "full"  # the volume label of a run trained on the whole train split (a teacher)


@dataclass(frozen=True)
class RunTags:
    """The planned identity of one trial, typed; `to_mlflow` / `from_mlflow` are the only
    conversions to and from MLflow's strings."""

    stage: str  # teachers | budget | sweep | grid | ablations
    source: str  # the dataset source (an FF++ manipulation, Celeb-DF, synthetic, ...)
    method: str
    student: str  # the trained model (a teacher run: the teacher's architecture)
    seed: int  # the student's initial weights and training order
    volume: int | None  # training images; None: the whole train split
    cell: str  # source/pair/method/volume/seed (…/d<draw>s<seed> with students.draws): one table cell and seed
    teachers: str = ""  # "+"-joined teacher names; "" when the method distils from none
    pair: str = ""  # "teachers->student"
    teacher_name: str = ""  # a teacher run's own name
    hparams_from: str = ""  # sweep | paper | from_run: where the grid's hyperparameters came from
    ablation: str = ""  # efficiency, or the option an ablation varies (k: the paper's Fig. 4 K)
    k: int | None = None  # the K ablation's K, as runs recorded before `value` existed give it
    value: str = ""  # the varied option's value in an ablation of an option (its text, as MLflow keeps it)
    space: str = ""  # a sweep trial's search space
    config_hash: str = ""  # what was trained (TrialSpec identity + hyperparameters), set by the plan
    budget: int | None = None  # the budget stage's trial: the min_steps it tries
    draw: int | None = None  # which images form the subset (students.draws); None: runs recorded before draws
                             # existed, whose subset was drawn with the seed (`draw_or_seed`)
    arm: str | None = None  # the grid's arm (students.arms: a recipe of augmentations / transfer set); None: none

    @property
    def draw_or_seed(self) -> int:
        """The subset draw: `draw`, or the seed for runs whose subset the seed drew."""
        return self.seed if self.draw is None else self.draw

    @property
    def volume_label(self) -> str:
        return FULL if self.volume is None else str(self.volume)

    def with_hash(self, config_hash: str) -> "RunTags":
        return replace(self, config_hash=config_hash)

    def to_mlflow(self) -> dict[str, str]:
        """MLflow's strings; a tag that does not apply to the run (None, or "" for an optional
        text tag: a grid run's `ablation`, a student's `teacher_name`) is not written. `teachers`
        is always written: a VT run's "" says it distils from none."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "volume":
                out["volume"] = self.volume_label
            elif value is not None and (value != "" or f.name in ALWAYS_WRITTEN):
                out[f.name] = str(value)
        return out

    @classmethod
    def from_mlflow(cls, tags: Mapping[str, Any]) -> "RunTags":
        """From MLflow's strings (or a dict `to_mlflow` made); missing optional tags take their
        defaults, so runs recorded before a tag existed still read."""
        def integer(value: Any) -> int | None:
            text = str(value).strip()
            return int(text) if text.lstrip("-").isdigit() else None

        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = tags.get(f.name)
            if f.name == "volume":
                values["volume"] = None if raw in (None, "", FULL) else integer(raw)
            elif f.name == "arm":
                values["arm"] = None if raw in (None, "") else str(raw)
            elif f.name in ("seed", "k", "draw", "budget"):
                parsed = integer(raw) if raw is not None else None
                values[f.name] = (parsed if parsed is not None else -1) if f.name == "seed" else parsed
            else:
                values[f.name] = "" if raw is None else str(raw)
        if not values["value"] and values["ablation"] == "k" and values["k"] is not None:
            values["value"] = str(values["k"])  # a K-ablation run recorded before `value` existed
        return cls(**values)


ALWAYS_WRITTEN = ("teachers", "cell", "source", "method", "student", "stage")  # even when ""
# What the tracking callback adds to every trial run (strings), beside RunTags.
RECORD_TAGS = (
    "study", "kind", "trial_id", "code_version",  # whose run, which trial, which code
    "node_id", "node_ids", "node_ip",  # where it ran
    "val_rows", "test_rows",  # digests of the rows it was scored on
    "checkpoint_path", "checkpoint_sha256",  # a teacher's weights, once recorded
    "error",  # why it failed
)
# Strings a trial reports with its metrics that become tags (trainables.tune -> the callback).
RESULT_TAGS = ("node_ip", "node_id", "val_rows", "test_rows")
TAG_NAMES = tuple(f.name for f in fields(RunTags)) + RECORD_TAGS
