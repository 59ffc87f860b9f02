"""The paper's contrastive KD (CKD), with CRD's memory bank (loss: losses/ckd.py)."""
from __future__ import annotations

from dataclasses import dataclass

from trainables.hparams import check
from trainables.methods import declare_method

Z_MODES = ("first_batch", "none", "running")
NEGATIVES = ("opposite_class", "instance")


@dataclass(frozen=True)
class CKDOptions:
    """CKD's own hyperparameters (the paper's tau and K; CRD's 128-d space and momentum)."""

    tau: float = 0.05  # paper
    k: int = 32  # paper; 10 with 10 images
    embed_dim: int = 128  # CRD's common space
    z_mode: str = "first_batch"  # CRD's normaliser; "none" = paper's Eq. 7 literally
    negatives: str = "opposite_class"  # paper, and CRD's script for two classes; "instance": any other image
    symmetric: bool = False  # add CRD's student-anchor term against a teacher bank
    momentum: float = 0.5  # memory-bank momentum (CRD)

    def validate(self, where: str) -> None:
        check(self, where, choices={"z_mode": Z_MODES, "negatives": NEGATIVES},
              positive=("tau", "k", "embed_dim"), unit=("momentum",))


# unlabeled rows: a bank row each; they draw their negatives as "instance" does (losses/ckd.py)
declare_method("ckd", options=CKDOptions, unlabeled_rows=True)
