"""Relational KD (Park et al. 2019): distance and angle terms (loss: losses/rkd.py)."""
from __future__ import annotations

from dataclasses import dataclass

from trainables.hparams import check
from trainables.methods import declare_method


@dataclass(frozen=True)
class RKDOptions:
    rkd_distance_w: float = 25.0  # Park et al.'s weights
    rkd_angle_w: float = 50.0

    def validate(self, where: str) -> None:
        check(self, where, non_negative=("rkd_distance_w", "rkd_angle_w"))


declare_method("rkd", options=RKDOptions, unlabeled_rows=True)  # features only: labels unused
