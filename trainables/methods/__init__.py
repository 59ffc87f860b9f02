"""The distillation methods, torch-free: each one is ONE declaration, `declare_method(...)` in a
module of this package, and everything else asks the declaration, never a method's name.

A declaration holds:
- its options: a frozen dataclass with defaults whose field annotations give the types
  (`float`, `int`, `bool`, `str`, `float | None`, `Literal["a", "b"]`, `tuple[int, ...]`),
  with an optional `validate(where)`; a study writes them in the method's own section,
  `students.hparams: {ckd: {tau: 0.1}}`, and a trial logs them under their own names;
- whether it is the baseline (VT: no teacher, the method every other is compared with);
- whether its term takes rows without a label (an unlabeled transfer set);
- which of its options an ablation may vary (`ablatable`: CKD's `k` is the paper's Fig. 4);
- which features it reads: the pooled embedding and logits always; intermediate feature maps
  when its options' `map_stages()` names stages (AT, FitNet, SP on maps);
- where its loss term and its search space live (by default `trainables.losses.<name>` and
  `search_spaces.<name>`; a method kept outside this project names its own modules).

`check_method(name)` checks a declaration for completeness when a config is read (before
anything runs): no option named like a common key, the loss module present, its paper values
and a search space registered. Adding a method is three files of its own and no shared file
edited: this package's, its loss in `trainables/losses/`, its paper values and space in
`search_spaces/`.
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
    ablatable: tuple[str, ...] = ()  # options an ablation may vary (ablations.vary: {<name>.<option>: [...]})
    loss: str = ""  # the module that registers its term (@register_loss(name))
    space: str = ""  # the module that registers its paper values and search space
    label: str = ""  # how tables and figures name it (default: the name in capitals)
    module: str = ""  # where it is declared

    @property
    def needs_teachers(self) -> bool:
        return not self.baseline

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self.options))

    def map_stages(self, options: object) -> tuple[int, ...]:
        """The feature-map stages this method reads with `options` (indices into the model's
        `feature_info`, negative from the last); () when it reads the pooled embedding only."""
        stages = getattr(options, "map_stages", None)
        return tuple(stages()) if stages is not None else ()


METHODS: dict[str, MethodSpec] = {}


@dataclass(frozen=True)
class NoOptions:
    """A method without hyperparameters of its own."""


def declare_method(name: str, *, options: type = NoOptions, baseline: bool = False,
                   unlabeled_rows: bool = False, ablatable: tuple[str, ...] = (), loss: str | None = None,
                   space: str | None = None, label: str | None = None) -> MethodSpec:
    """Declare method `name`; what can be wrong with it beyond its shape is found by
    `check_method` when a config names it (an exit 2 that says what to fix, not an import error)."""
    if name in METHODS:
        raise ValueError(f"method {name!r} declared twice")
    if not dataclasses.is_dataclass(options):
        raise TypeError(f"options of method {name!r} must be a dataclass, got {options!r}")
    if baseline and any(m.baseline for m in METHODS.values()):
        raise ValueError(f"a second baseline method {name!r}: there is one ({baseline_method()})")
    import sys
    spec = MethodSpec(name, options, baseline, unlabeled_rows, tuple(ablatable),
                      loss or f"trainables.losses.{name}", space or f"search_spaces.{name}", label or name.upper(),
                      sys._getframe(1).f_globals.get("__name__", "?"))
    METHODS[name] = spec
    return spec


def check_method(name: str, where: str = "students.methods") -> MethodSpec:
    """The declaration of `name`, checked for completeness (ConfigError naming what is missing):
    option names that no common key uses, a loss module, paper values and a search space."""
    from trainables.hparams import HParams, option_types
    spec = method_spec(name, where)
    head = f"{where}: method {name!r} (declared in {spec.module})"
    clash = sorted(set(spec.option_names) & set(HParams.common_keys()) | set(spec.option_names) & {"method"})
    if clash:
        raise ConfigError(f"{head}: option(s) {clash} are named like common hyperparameters, so one value "
                          "would set both: rename them in its options dataclass")
    option_types(spec.options, where=head)  # every annotation a type the config can read
    bad = sorted(set(spec.ablatable) - set(spec.option_names) - set(HParams.common_keys()))
    if bad:
        raise ConfigError(f"{head}: ablatable={list(bad)} are not options of it")
    if not module_exists(spec.loss):
        raise ConfigError(f"{head}: its loss module {spec.loss!r} does not exist: write it, with "
                          f"@register_loss({name!r}) on its term")
    import search_spaces
    if not search_spaces.has_method(name, spec.space):
        raise ConfigError(f"{head}: no paper values or no search space for it in {spec.space!r}: register them "
                          f"there with @register_paper({name!r}) and @register_space(..., methods=({name!r},))")
    return spec


def module_exists(dotted: str) -> bool:
    """Whether module `dotted` can be found, without importing it or its packages (importing
    `trainables.losses` would import torch, which reading a config never does)."""
    import importlib.machinery
    import importlib.util
    parts = dotted.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        return False
    for i in range(1, len(parts)):
        paths = spec.submodule_search_locations if spec is not None else None
        if not paths:
            return False
        spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: i + 1]), list(paths))
    return spec is not None


def option_label(option: str) -> str | None:
    """How figures name a method's option: its field's `metadata={"label": ...}` in the method's
    options (the first method declaring one for that name), else None."""
    for m in method_names():
        for f in dataclasses.fields(METHODS[m].options):
            if f.name == option and f.metadata.get("label"):
                return f.metadata["label"]
    return None


def method_label(name: str) -> str:
    """How tables and figures name method `name` (its declared label)."""
    return METHODS[name].label if name in METHODS else name.upper()


def ablatable_options() -> dict[str, tuple[str, ...]]:
    """method -> the options its declaration lets an ablation vary."""
    return {m: METHODS[m].ablatable for m in method_names() if METHODS[m].ablatable}


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
