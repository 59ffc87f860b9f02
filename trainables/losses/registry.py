"""Method name -> distillation term: `@register_loss("kd")`, then `build_loss(hp, ctx)`.

Adding a method is one file in this package plus its import in `__init__.py`;
nothing else branches on the method name.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, TypeVar

from trainables.errors import ConfigError
from trainables.hparams import HParams
from trainables.losses.base import DistillTerm, LossContext

if TYPE_CHECKING:
    from trainables.losses.ensemble import StudentLoss

LOSSES: dict[str, type[DistillTerm]] = {}

T = TypeVar("T", bound=type[DistillTerm])


def register_loss(name: str) -> Callable[[T], T]:
    """Class decorator: make `cls` the distillation term of method `name`."""

    def add(cls: T) -> T:
        if name in LOSSES:
            raise ValueError(f"loss {name!r} registered twice ({LOSSES[name].__name__}, {cls.__name__})")
        cls.name = name
        LOSSES[name] = cls
        return cls

    return add


def build_loss(hp: HParams, ctx: LossContext) -> StudentLoss:
    """The student's whole loss for `hp.method`: CE + hp.lam * sum of per-teacher terms."""
    from trainables.losses.ensemble import StudentLoss  # ensemble imports ce, which registers here
    if hp.method not in LOSSES:
        raise ConfigError(
            f"method={hp.method!r} has no registered loss; registered: {sorted(LOSSES)}"
        )
    return StudentLoss(hp, ctx, LOSSES[hp.method])
