"""Losses of the student: task cross-entropy plus one distillation term per teacher.

`build_loss(hp, ctx)` is the only constructor the engine needs; each method is
one file here, registered by name in `LOSSES` when its module is imported below.
"""
from trainables.losses import ce, ckd, kd, rkd  # noqa: F401  (importing registers the methods)
from trainables.losses.base import DistillTerm, LossContext, Outputs
from trainables.losses.ckd import contrastive_nce_loss
from trainables.losses.ensemble import StudentLoss
from trainables.losses.registry import LOSSES, build_loss, register_loss

__all__ = [
    "LOSSES",
    "DistillTerm",
    "LossContext",
    "Outputs",
    "StudentLoss",
    "build_loss",
    "contrastive_nce_loss",
    "register_loss",
]
