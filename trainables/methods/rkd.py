"""Relational KD (Park et al. 2019): distance and angle terms (loss: losses/rkd.py)."""
from __future__ import annotations

from dataclasses import dataclass, field

from trainables.hparams import check
from trainables.methods import declare_method


@dataclass(frozen=True)
class RKDOptions:
    rkd_distance_w: float = field(default=25.0, metadata={"label": "RKD distance weight"})  # Park et al.'s weights
    rkd_angle_w: float = field(default=50.0, metadata={"label": "RKD angle weight"})

    def validate(self, where: str) -> None:
        check(self, where, non_negative=("rkd_distance_w", "rkd_angle_w"))


declare_method("rkd", options=RKDOptions, unlabeled_rows=True,
               ablatable=("rkd_distance_w", "rkd_angle_w", "lam"))  # features only: labels unused
