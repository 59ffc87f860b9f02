"""One trial's hyperparameters, converted once from a plain dict (Ray config, YAML, Optuna).

`HParams.from_dict(config)` takes the flat keys of a trial: the ones every method has
(optimiser, schedule, batch, epochs, lambda, ...) and the keys of `method`'s own options
(e.g. CKD's `tau`, `k`; the method's `options` dataclass, in `trainables.methods`), and rejects
anything else, and impossible values, with a message naming the key. After that the
code reads `hp.lr` and `hp.options.tau`, never `config["tau"]`; `to_dict()` gives back
the common keys plus this method's options only (what a run logs as params). A list of
names (`augment`) is a tuple here, and reads back from a YAML list or the string MLflow
logs ("('flip', 'crop')") alike.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Literal, Mapping, Union

from trainables.errors import ConfigError

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "constant")
# what `augment` may list, in the order a step applies them (trainables/augment.py)
AUGMENTATIONS = ("flip", "crop", "color", "mixup", "cutmix")
# a teacher's outputs under these depend on the image and one of few states only (flipped or
# not), so they are computed once per (image, state) and cached; any other augmentation makes
# a new view every step, and the teachers then run live on it
CACHEABLE_AUGMENTATIONS = ("flip",)


# field metadata: a key added after trials were first identified by their hyperparameters; at its
# default it is left out of `identity()`, so what was trained before it existed keeps its identity
# (a finished teacher is still found and reused)
LATER = {"later": True}


def _baseline() -> str:
    from trainables.methods import baseline_method  # torch-free (it imports `check` from here)
    return baseline_method()


def options_class(method: str, where: str = "hyperparameters") -> type:
    """The declared options dataclass of `method` (ConfigError naming the known methods)."""
    from trainables.methods import method_spec
    return method_spec(method, where).options


@dataclass(frozen=True)
class HParams:
    method: str = field(default_factory=_baseline)  # the baseline (vanilla training) unless given
    epochs: int = 10
    min_steps: int = 0  # total steps at least this: tiny subsets get enough updates
    batch_size: int = 24  # paper
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    schedule: str = "cosine"  # quickstart teachers trained at a constant lr were weaker than 1000-image students
    warmup_epochs: int = 0
    lam: float = 0.1  # weight of the distillation term; paper's lambda for CKD
    flip: bool = True  # horizontal flips; false removes "flip" from `augment` (the older switch)
    # what a step applies to each image, teacher and student seeing the same view
    # (AUGMENTATIONS; order does not matter); anything beyond "flip" runs the teachers live
    augment: tuple[str, ...] = field(default=("flip",), metadata=LATER)
    # crop: area kept uniform in [crop_scale, 1] (torchvision's 0.08 may keep 8 % of a face)
    crop_scale: float = field(default=0.5, metadata=LATER)
    # color: brightness, contrast, saturation x U[1 - s, 1 + s] (timm's 0.4)
    color_strength: float = field(default=0.4, metadata=LATER)
    mixup_alpha: float = field(default=1.0, metadata=LATER)  # mixup: lambda ~ Beta(a, a); 1: uniform on [0, 1]
    cutmix_alpha: float = field(default=1.0, metadata=LATER)  # cutmix: area kept ~ Beta(a, a) (Yun et al. 2019: 1)
    seed: int = 0
    amp: bool = True  # bf16 autocast on CUDA; no-op on CPU
    channels_last: bool = True  # CUDA only
    options: Any = None  # the method's own options (its registered dataclass); defaults when None

    def __post_init__(self):
        if self.options is None:
            object.__setattr__(self, "options", options_class(self.method)())
        if isinstance(self.augment, (tuple, list)):  # one spelling per set: the order they apply in
            rank = {a: i for i, a in enumerate(AUGMENTATIONS)}
            names = sorted(dict.fromkeys(self.augment), key=lambda a: rank.get(a, len(rank)))
            object.__setattr__(self, "augment", tuple(names))

    @property
    def augmentations(self) -> tuple[str, ...]:
        """What a step applies: `augment`, less "flip" when `flip` is false."""
        return tuple(a for a in self.augment if a != "flip" or self.flip)

    @property
    def flipping(self) -> bool:
        """Whether a step flips images (half of them, drawn per image)."""
        return "flip" in self.augmentations

    @property
    def teacher_cacheable(self) -> bool:
        """Whether the teachers' outputs can be computed once and cached: only flips are
        applied. Otherwise every step makes new views and the teachers run live on them."""
        return set(self.augmentations) <= set(CACHEABLE_AUGMENTATIONS)

    @property
    def map_stages(self) -> tuple[int, ...]:
        """The feature-map stages this method reads with these options (its declaration); ()
        for a method that reads the pooled embedding and logits only."""
        from trainables.methods import method_spec
        return method_spec(self.method).map_stages(self.options)

    @property
    def teachers_cached(self) -> bool:
        """Whether the teachers' outputs are computed once and cached: flips only, and no maps
        (a cache holds logits and embeddings). Otherwise the teachers run live every step."""
        return self.teacher_cacheable and not self.map_stages

    @staticmethod
    def common_keys() -> tuple[str, ...]:
        return tuple(f.name for f in fields(HParams) if f.name != "options")

    @staticmethod
    def keys(method: str) -> tuple[str, ...]:
        """Every flat key a trial of `method` takes."""
        return HParams.common_keys() + tuple(f.name for f in fields(options_class(method)))

    @staticmethod
    def subset(config: Mapping[str, Any], method: str) -> dict[str, Any]:
        """The entries of `config` that a trial of `method` takes (others' options dropped)."""
        keys = set(HParams.keys(method))
        return {k: v for k, v in config.items() if k in keys}

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], *, where: str = "hyperparameters") -> "HParams":
        method = config.get("method", _baseline())
        if not isinstance(method, str):
            raise ConfigError(f"{where}: method={method!r} is not a valid str")
        opt_cls = options_class(method, where)
        common = {f.name: f for f in fields(cls) if f.name != "options"}
        own = {f.name: f for f in fields(opt_cls)}
        unknown = sorted(set(config) - set(common) - set(own))
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {unknown} for method {method!r}; known keys are "
                f"{sorted({*common, *own})}"
            )
        kinds, opt_kinds = option_types(cls, where), option_types(opt_cls, where)
        values = {k: _cast(k, v, kinds[k], where) for k, v in config.items() if k in common}
        opts = {k: _cast(k, v, opt_kinds[k], where) for k, v in config.items() if k in own}
        hp = cls(**values, options=opt_cls(**opts))
        hp.validate(where)
        return hp

    def replace(self, **changes: Any) -> "HParams":
        """A copy with `changes`; changing the method drops the old method's options."""
        base = self.to_dict()
        if changes.get("method", self.method) != self.method:
            base = {k: v for k, v in base.items() if k in self.common_keys()}
        return HParams.from_dict({**base, **changes})

    def to_dict(self) -> dict[str, Any]:
        """The flat keys: the common ones and this method's options (no other method's)."""
        out = {k: getattr(self, k) for k in self.common_keys()}
        out.update(dataclasses.asdict(self.options))
        return out

    def identity(self) -> dict[str, Any]:
        """`to_dict()` less the keys marked LATER that are at their defaults: what a trial's
        identity (its config hash) is made of."""
        later = {f.name: f.default for f in fields(self) if f.metadata.get("later")}
        return {k: v for k, v in self.to_dict().items() if not (k in later and v == later[k])}

    def validate(self, where: str = "hyperparameters") -> None:
        check(self, where, choices={"optimizer": OPTIMIZERS, "schedule": SCHEDULES},
              positive=("epochs", "batch_size", "lr", "mixup_alpha", "cutmix_alpha"),
              non_negative=("lam", "weight_decay", "min_steps", "warmup_epochs"),
              unit=("color_strength",))
        unknown = [a for a in self.augment if a not in AUGMENTATIONS]
        if unknown:
            raise ConfigError(f"{where}: augment={list(self.augment)} has unknown augmentation(s) {unknown}; "
                              f"allowed: {list(AUGMENTATIONS)}")
        if not 0.0 < self.crop_scale <= 1.0:
            raise ConfigError(f"{where}: crop_scale={self.crop_scale!r} must be in (0, 1]: the smallest "
                              "share of the image's area a crop keeps")
        validate = getattr(self.options, "validate", None)
        if validate is not None:
            validate(where)


def for_method(hparams: Mapping[str, Any], method: str) -> dict[str, Any]:
    """A trial's flat keys from a config's scoped hyperparameters: the common keys, then the
    method's own section (`{"lr": 0.002, "ckd": {"tau": 0.1}}` gives CKD `lr` and `tau`, KD
    only `lr`). Other methods' sections are dropped; the flat form is what a trial logs."""
    from trainables.methods import METHODS
    flat = {k: v for k, v in hparams.items() if k not in METHODS}
    return {**flat, **dict(hparams.get(method) or {})}


def steps_per_epoch(n: int, hp: HParams) -> int:
    """Optimiser steps an epoch of `n` training images takes: a pass over them, or more when
    `min_steps` spread over the epochs asks for more."""
    per_epoch = math.ceil(n / min(hp.batch_size, n))
    return max(per_epoch, math.ceil(hp.min_steps / hp.epochs))


def total_steps(n: int, hp: HParams) -> int:
    """The training budget of `n` images: every optimiser step of every epoch."""
    return hp.epochs * steps_per_epoch(n, hp)


def check(obj: Any, where: str, *, choices: Mapping[str, Iterable] = {}, positive: Iterable[str] = (),
          non_negative: Iterable[str] = (), unit: Iterable[str] = ()) -> None:
    """Raise ConfigError naming the first field of `obj` out of its range: one of `choices`,
    > 0, >= 0, or in [0, 1) (`unit`). Options dataclasses call it from their `validate`."""
    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"{where}: {key}={getattr(obj, key)!r} {why}")

    for key, allowed in choices.items():
        if getattr(obj, key) not in tuple(allowed):
            raise bad(key, f"is not one of {list(allowed)}")
    for key in positive:
        if not getattr(obj, key) > 0:
            raise bad(key, "must be > 0")
    for key in non_negative:
        if getattr(obj, key) < 0:
            raise bad(key, "must be >= 0")
    for key in unit:
        if not 0.0 <= getattr(obj, key) < 1.0:
            raise bad(key, "must be in [0, 1)")


# the field types a config, an Optuna trial and an MLflow param (a string) can all give
SCALARS = (bool, int, float, str)


def option_types(cls: type, where: str = "hyperparameters") -> dict[str, Any]:
    """Field name -> its annotated type, for the dataclass `cls` (HParams or a method's options);
    ConfigError naming a field whose type a config cannot give (supported: bool, int, float, str,
    `X | None`, `Literal[...]` of those, `tuple[X, ...]`)."""
    kinds = _hints(cls)
    for f in fields(cls):
        if f.name != "options" and not _readable(kinds[f.name]):
            raise ConfigError(f"{where}: option {f.name!r} of {cls.__name__} is annotated {kinds[f.name]!r}, which a "
                              "config cannot give: use bool, int, float, str, X | None, Literal[...] or tuple[X, ...]")
    return kinds


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _readable(kind: Any) -> bool:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind in SCALARS or kind is Any:
        return True
    if origin in (Union, types.UnionType):
        return all(a is type(None) or _readable(a) for a in args)
    if origin is Literal:
        return all(type(a) in SCALARS for a in args)
    if origin is tuple:
        return len(args) == 2 and args[1] is Ellipsis and args[0] in SCALARS
    return False


def _cast(name: str, value: Any, kind: Any, where: str) -> Any:
    """Cast a YAML/Optuna/MLflow value to the field's annotated type, refusing lossy or odd casts."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "~")):
            if type(None) in args:
                return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _cast(name, value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {name}={value!r} is not a valid {_type_text(kind)}")
    if origin is Literal:
        for allowed in args:
            if value == allowed and type(value) is type(allowed) or (isinstance(value, str) and value == str(allowed)):
                return allowed
        raise ConfigError(f"{where}: {name}={value!r} is not one of {list(args)}")
    if origin is tuple:
        try:
            items = _names(value) if args[0] is str else _items(value)
            return tuple(_cast(name, v, args[0], where) for v in items)
        except (TypeError, ValueError, SyntaxError, ConfigError):
            what = "names" if args[0] is str else args[0].__name__
            raise ConfigError(f"{where}: {name}={value!r} is not a valid list of {what}") from None
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            if value in (0, 1):
                return bool(value)
            raise ValueError
        if kind is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind is str:
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError, SyntaxError):
        pass
    raise ConfigError(f"{where}: {name}={value!r} is not a valid {_type_text(kind)}")


def _type_text(kind: Any) -> str:
    return kind.__name__ if isinstance(kind, type) else str(kind).replace("typing.", "")


def _items(value: Any) -> list:
    """A list of values from a YAML list or the string MLflow logs ("(1, 2)")."""
    if isinstance(value, str):
        text = value.strip()
        value = ast.literal_eval(text) if text[:1] in "([" else [v.strip() for v in text.split(",") if v.strip()]
        value = [value] if not isinstance(value, (list, tuple)) else value
    if not isinstance(value, (list, tuple)):
        raise ValueError
    return list(value)


def _names(value: Any) -> tuple[str, ...]:
    """A tuple of names from a YAML list or tuple, or from the strings a param reads back as:
    MLflow's str() of a tuple, "('flip', 'crop')", or "flip,crop" (a command line's)."""
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in "([":  # also "" (no names)
            value = ast.literal_eval(text) if text else ()
        else:
            value = [v.strip() for v in text.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError
    return tuple(value)
