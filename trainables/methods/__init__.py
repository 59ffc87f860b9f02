"""The distillation methods, torch-free: each one's name, its own hyperparameters (a small
frozen dataclass with defaults, which `HParams` parses and logs for that method only), whether
it distils from teachers, and which one is the baseline (VT: no teacher) that every other is
compared against. Validating a study's config, planning it and reading its results need only
this, so they run without torch (as `model_names.py` does for the models).

Each method is one module of this package (`kd.py`: `KDOptions` and `declare_method("kd",
options=KDOptions)`); every module here is imported below. Its loss term registers under the
same name in `trainables/losses/` (`@register_loss("kd")`), taking its options and flags from
here; importing `trainables.losses` checks that every method has a term and every term a
method. Adding a method is three files of its own, and no shared file edited: this package's,
its loss in `trainables/losses/`, its paper values and search space in `search_spaces/`.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from dataclasses import dataclass

from trainables.errors import ConfigError


@dataclass(frozen=True)
class MethodSpec:
    name: str
    options: type  # the method's own hyperparameters: a frozen dataclass with defaults
    baseline: bool = False  # the method without teachers that the others are compared against
    # its distillation term takes rows without a label (label -1, dataset index >= M): the images of
    # an unlabeled transfer set (a study's students.transfer) may be put beside the labelled batch
    unlabeled_rows: bool = False

    @property
    def needs_teachers(self) -> bool:
        return not self.baseline


METHODS: dict[str, MethodSpec] = {}


@dataclass(frozen=True)
class NoOptions:
    """A method without hyperparameters of its own."""


def declare_method(name: str, *, options: type = NoOptions, baseline: bool = False,
                   unlabeled_rows: bool = False) -> None:
    if name in METHODS:
        raise ValueError(f"method {name!r} declared twice")
    if not dataclasses.is_dataclass(options):
        raise TypeError(f"options of method {name!r} must be a dataclass, got {options!r}")
    if baseline and any(m.baseline for m in METHODS.values()):
        raise ValueError(f"a second baseline method {name!r}: there is one ({baseline_method()})")
    METHODS[name] = MethodSpec(name, options, baseline, unlabeled_rows)


def method_names() -> tuple[str, ...]:
    """Every method, the baseline first, then by name."""
    return tuple(sorted(METHODS, key=lambda m: (not METHODS[m].baseline, m)))


def method_spec(name: str, where: str = "hyperparameters") -> MethodSpec:
    if name not in METHODS:
        raise ConfigError(f"{where}: method={name!r} is not one of {list(method_names())}")
    return METHODS[name]


def baseline_method() -> str:
    """The name of the method without teachers that the others are compared against."""
    return next(m.name for m in METHODS.values() if m.baseline)


def needs_teachers(name: str) -> bool:
    return method_spec(name).needs_teachers


def takes_unlabeled_rows(name: str) -> bool:
    """Whether method `name`'s distillation term takes rows without labels (a transfer set)."""
    return method_spec(name).unlabeled_rows


for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")  # declares the method it defines
