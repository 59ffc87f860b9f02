"""The paper's contrastive KD (CKD), with CRD's memory bank (loss: losses/ckd.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from trainables.hparams import check
from trainables.methods import declare_method


@dataclass(frozen=True)
class CKDOptions:
    """CKD's own hyperparameters (the paper's tau and K; CRD's 128-d space and momentum)."""

    tau: float = field(default=0.05, metadata={"label": "τ (CKD temperature)"})  # paper
    k: int = field(default=32, metadata={"label": "K (negatives)"})  # paper; 10 with 10 images
    embed_dim: int = 128  # CRD's common space
    # CRD's normaliser; "none" = paper's Eq. 7 literally
    z_mode: Literal["first_batch", "none", "running"] = field(default="first_batch", metadata={"label": "Z mode"})
    # paper, and CRD's script for two classes; "instance": any other image
    negatives: Literal["opposite_class", "instance"] = "opposite_class"
    symmetric: bool = field(default=False, metadata={"label": "symmetric term"})  # CRD's student-anchor term
    momentum: float = 0.5  # memory-bank momentum (CRD)

    def validate(self, where: str) -> None:
        check(self, where, positive=("tau", "k", "embed_dim"), unit=("momentum",))


# unlabeled rows: a bank row each; they draw their negatives as "instance" does (losses/ckd.py).
# K is the paper's Fig. 4; tau and lambda its other sensitivities
declare_method("ckd", options=CKDOptions, unlabeled_rows=True, ablatable=("k", "tau", "lam"))
