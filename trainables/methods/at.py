"""Attention transfer (AT, Zagoruyko & Komodakis 2017): the student's spatial attention maps
matched to the teacher's at several stages (loss: losses/at.py)."""
from __future__ import annotations

from dataclasses import dataclass, field

from trainables.errors import ConfigError
from trainables.hparams import check
from trainables.methods import declare_method


@dataclass(frozen=True)
class ATOptions:
    """AT's own options: the attention map's power p, and the stages whose maps are matched
    (indices into the model's timm `feature_info`, negative from the last; every stage but the
    stem by default, as RepDistiller matches every block's output but the first)."""

    p: float = field(default=2.0, metadata={"label": "p (attention power)"})
    stages: tuple[int, ...] = (1, 2, 3, 4)

    def map_stages(self) -> tuple[int, ...]:
        return self.stages

    def validate(self, where: str) -> None:
        check(self, where, positive=("p",))
        if not self.stages or len(set(self.stages)) != len(self.stages):
            raise ConfigError(f"{where}: stages={list(self.stages)} must list one or more distinct stages")


declare_method("at", options=ATOptions, unlabeled_rows=True, ablatable=("lam", "p"))  # maps only: labels unused
