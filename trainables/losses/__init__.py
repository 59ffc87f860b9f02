"""Losses of the student: task cross-entropy plus one distillation term per teacher.

`build_loss(hp, ctx)` is the only constructor the engine needs. Each method is one
module here that registers its term with `@register_loss`, under the name (and with the
options) it is declared with in `trainables.methods`; every module of this package is
imported below.
"""
import importlib
import pkgutil

from trainables.losses.base import UNLABELED, DistillTerm, LossContext, Mix, Outputs, TransferRows
from trainables.losses.registry import (
    LOSSES, NoOptions, baseline_method, build_loss, check_complete, get_method, method_names, needs_teachers,
    register_loss,
)

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")  # registers the method it defines, if any
check_complete()  # every method declared in trainables.methods has its term

from trainables.losses.ckd import contrastive_nce_loss  # noqa: E402
from trainables.losses.ensemble import StudentLoss  # noqa: E402

__all__ = [
    "LOSSES",
    "DistillTerm",
    "LossContext",
    "Mix",
    "NoOptions",
    "Outputs",
    "StudentLoss",
    "TransferRows",
    "UNLABELED",
    "baseline_method",
    "build_loss",
    "contrastive_nce_loss",
    "get_method",
    "method_names",
    "needs_teachers",
    "register_loss",
]
