"""The loss registry: each method's distillation term, registered once by name.

    @register_loss("kd")
    class KD(DistillTerm): ...

The method itself (its own hyperparameters, whether it needs teachers, whether it is the
baseline) is declared torch-free in `trainables.methods`, so that a study's config is
validated without torch; `register_loss` attaches that record to the term (`cls.options`,
`cls.baseline`, `cls.needs_teachers`). Every module of this package is imported (and so
registered) by `trainables.losses`, which then checks that every declared method has a term.
`config`, `plan`, the engine and the trial ask these registries, never a method's name.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, TypeVar

from trainables.methods import NoOptions, baseline_method, method_names, method_spec, needs_teachers

if TYPE_CHECKING:
    from trainables.hparams import HParams
    from trainables.losses.base import DistillTerm, LossContext
    from trainables.losses.ensemble import StudentLoss

__all__ = ["LOSSES", "NoOptions", "baseline_method", "build_loss", "check_complete", "get_method",
           "method_names", "needs_teachers", "register_loss"]

LOSSES: dict[str, type["DistillTerm"]] = {}

T = TypeVar("T")


def register_loss(name: str) -> Callable[[T], T]:
    """Class decorator: make `cls` the distillation term of method `name` (declared in
    `trainables.methods`, whose options and flags it takes)."""

    def add(cls: T) -> T:
        spec = method_spec(name, where=f"register_loss({cls.__name__})")
        if name in LOSSES:
            raise ValueError(f"loss {name!r} registered twice ({LOSSES[name].__name__}, {cls.__name__})")
        if bool(getattr(cls, "needs_teachers", True)) != spec.needs_teachers:
            raise TypeError(f"{cls.__name__}.needs_teachers must be {spec.needs_teachers} "
                            f"(method {name!r}{' is the baseline' if spec.baseline else ''})")
        cls.name, cls.options, cls.baseline = name, spec.options, spec.baseline
        cls.unlabeled_rows = spec.unlabeled_rows
        LOSSES[name] = cls
        return cls

    return add


def check_complete() -> None:
    """Every declared method has a registered term (run once all of this package is imported;
    a method declared outside this project has its loss module imported here)."""
    import importlib
    for name in sorted(set(method_names()) - set(LOSSES)):
        try:
            importlib.import_module(method_spec(name).loss)
        except ModuleNotFoundError:
            pass
    # this project's methods must be whole at import; another package's are checked when used (get_method)
    missing = sorted(m for m in set(method_names()) - set(LOSSES)
                     if method_spec(m).module.startswith("trainables.methods"))
    if missing:
        raise TypeError(f"methods {missing} are declared in trainables.methods but no loss registers them")


def get_method(name: str, where: str = "hyperparameters") -> type["DistillTerm"]:
    """The registered term of method `name` (ConfigError naming the known methods)."""
    spec = method_spec(name, where)
    import trainables.losses  # noqa: F401  (importing the package registers every term)
    if name not in LOSSES:  # declared after the package was imported (a method of another package)
        import importlib
        importlib.import_module(spec.loss)
    if name not in LOSSES:
        from trainables.errors import ConfigError
        raise ConfigError(f"{where}: method {name!r}: its loss module {spec.loss!r} registers no term: "
                          f"decorate its DistillTerm with @register_loss({name!r})")
    return LOSSES[name]


def build_loss(hp: "HParams", ctx: "LossContext") -> "StudentLoss":
    """The student's whole loss for `hp.method`: CE + hp.lam * sum of per-teacher terms."""
    from trainables.losses.ensemble import StudentLoss
    return StudentLoss(hp, ctx, get_method(hp.method))
