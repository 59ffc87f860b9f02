"""Hinton KD: T^2 KL between softened outputs (loss: losses/kd.py)."""
from __future__ import annotations

from dataclasses import dataclass, field

from trainables.hparams import check
from trainables.methods import declare_method


@dataclass(frozen=True)
class KDOptions:
    kd_t: float = field(default=4.0, metadata={"label": "T (KD temperature)"})  # Hinton's temperature T

    def validate(self, where: str) -> None:
        check(self, where, positive=("kd_t",))


declare_method("kd", options=KDOptions, unlabeled_rows=True, ablatable=("kd_t", "lam"))  # logits only: labels unused
