"""The method registry: a method is its distillation term, registered once by name.

    @register_loss("kd", options=KDOptions)
    class KD(DistillTerm): ...

The registered class is the method's one record on the training side: its term
(`forward`), its own hyperparameters (`options`, a small frozen dataclass that
`HParams` parses and logs for this method only), whether it needs teachers, and
whether it is the baseline the others are compared against (VT, no teacher). Its
paper defaults and search space(s) are registered beside it in `search_spaces/`.
Every module of this package is imported (and so registered) by `trainables.losses`;
`config`, `plan`, the engine and the trial ask this registry, never a method's name.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable, TypeVar

from trainables.errors import ConfigError

if TYPE_CHECKING:
    from trainables.hparams import HParams
    from trainables.losses.base import DistillTerm, LossContext
    from trainables.losses.ensemble import StudentLoss

LOSSES: dict[str, type["DistillTerm"]] = {}

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """A method without hyperparameters of its own."""


def register_loss(name: str, *, options: type = NoOptions, baseline: bool = False) -> Callable[[T], T]:
    """Class decorator: make `cls` the distillation term (and record) of method `name`.
    `options`: the method's own hyperparameters (a frozen dataclass with defaults);
    `baseline`: the method without a teacher that every other is compared against."""

    def add(cls: T) -> T:
        if name in LOSSES:
            raise ValueError(f"loss {name!r} registered twice ({LOSSES[name].__name__}, {cls.__name__})")
        if not dataclasses.is_dataclass(options):
            raise TypeError(f"options of method {name!r} must be a dataclass, got {options!r}")
        if baseline and getattr(cls, "needs_teachers", True):
            raise TypeError(f"the baseline method {name!r} must not need teachers (needs_teachers = False)")
        if baseline and any(c.baseline for c in LOSSES.values()):
            raise ValueError(f"a second baseline method {name!r}: there is one ({baseline_method()})")
        cls.name, cls.options, cls.baseline = name, options, baseline
        LOSSES[name] = cls
        return cls

    return add


def _registered() -> dict[str, type["DistillTerm"]]:
    import trainables.losses  # noqa: F401  (importing the package registers every method)
    return LOSSES


def method_names() -> tuple[str, ...]:
    """Every registered method, the baseline first, then by name."""
    return tuple(sorted(_registered(), key=lambda m: (not LOSSES[m].baseline, m)))


def get_method(name: str, where: str = "hyperparameters") -> type["DistillTerm"]:
    methods = _registered()
    if name not in methods:
        raise ConfigError(f"{where}: method={name!r} is not one of {list(method_names())}")
    return methods[name]


def baseline_method() -> str:
    """The name of the method without teachers that the others are compared against."""
    return next(name for name, cls in _registered().items() if cls.baseline)


def needs_teachers(name: str) -> bool:
    return bool(get_method(name).needs_teachers)


def build_loss(hp: "HParams", ctx: "LossContext") -> "StudentLoss":
    """The student's whole loss for `hp.method`: CE + hp.lam * sum of per-teacher terms."""
    from trainables.losses.ensemble import StudentLoss
    return StudentLoss(hp, ctx, get_method(hp.method))
