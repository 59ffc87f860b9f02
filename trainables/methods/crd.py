"""CRD as published (Tian, Krishnan & Isola, ICLR 2020): contrastive representation distillation
with two memory banks, the positive read from the bank, both anchors, NCE with a fixed Z
(loss: losses/crd.py); beside the paper's CKD, the other reading of one idea."""
from __future__ import annotations

from dataclasses import dataclass, field

from trainables.hparams import check
from trainables.methods import declare_method


@dataclass(frozen=True)
class CRDOptions:
    """CRD's own hyperparameters, its defaults (RepDistiller's): nce_t 0.07, nce_m 0.5, a 128-d
    space. Its nce_k, 16,384 negatives for CIFAR's 50,000 images, is 4,096 here: with 10-1000
    images the negatives are drawn with replacement from the other class anyway, and the
    scores of 16,385 bank rows per anchor would make a CPU step several times slower."""

    tau: float = field(default=0.07, metadata={"label": "τ (CRD temperature)"})  # nce_t
    k: int = field(default=4096, metadata={"label": "K (CRD negatives)"})  # nce_k
    momentum: float = 0.5  # nce_m: of the banks' update
    embed_dim: int = 128  # feat_dim

    def validate(self, where: str) -> None:
        check(self, where, positive=("tau", "k", "embed_dim"), unit=("momentum",))


# its negatives are images of the other class: it reads labels, so it takes no unlabeled rows
declare_method("crd", options=CRDOptions, ablatable=("k", "tau", "lam"))
