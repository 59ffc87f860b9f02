"""Named Optuna search spaces over a distillation method's hyperparameters.

A space is a pure define-by-run function `space(trial, volume) -> dict`: it declares
parameters with `trial.suggest_*` and returns constants (never does I/O). `get_space`
binds the training-set volume and gives the one-argument function Optuna and Ray's
`OptunaSearch` take. Adding a space: one file here, decorated with `@register_space`.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

from trainables.errors import ConfigError

Space = Callable[..., dict[str, Any]]
SPACES: dict[str, Space] = {}
# which methods a space can tune; "paper" serves every method with registered paper values
SPACE_METHODS: dict[str, tuple[str, ...]] = {}
# method -> its paper values at a volume (its own options and lambda; `paper` adds the batch size)
PAPER: dict[str, Callable[[int | None], dict[str, Any]]] = {}
SMALL_VOLUME = 10  # at and below this the paper uses batch 10 (and CKD K 10)


def register_space(name: str, methods: tuple[str, ...]):
    def wrap(fn: Space) -> Space:
        SPACES[name] = fn
        SPACE_METHODS[name] = methods
        return fn
    return wrap


def register_paper(method: str):
    """Decorator: `fn(volume) -> dict`, the paper's (or the method's authors') values of
    `method`'s own hyperparameters, served by the `paper` space."""
    def wrap(fn: Callable[[int | None], dict[str, Any]]):
        if method in PAPER:
            raise ValueError(f"paper values of {method!r} registered twice")
        PAPER[method] = fn
        SPACE_METHODS["paper"] = tuple(PAPER)
        return fn
    return wrap


def has_method(method: str, module: str | None = None) -> bool:
    """Whether `method` has paper values and a search space of its own (importing `module`, where
    its declaration says they live, when it is not one of this package's)."""
    if module and method not in PAPER:
        import importlib
        try:
            importlib.import_module(module)
        except ModuleNotFoundError:
            return False
    return method in PAPER and any(method in ms for name, ms in SPACE_METHODS.items() if name != "paper")


def get_space(name: str, method: str, volume: int | None) -> Callable[[Any], dict[str, Any]]:
    """The define-by-run function of space `name` for `method` at `volume` training images."""
    if name not in SPACES:
        raise ConfigError(f"unknown search space {name!r}; known: {sorted(SPACES)}")
    if method not in SPACE_METHODS[name]:
        raise ConfigError(
            f"search space {name!r} tunes {list(SPACE_METHODS[name])}, not method {method!r}"
        )
    return functools.partial(SPACES[name], method=method, volume=volume)


class _KeyRecorder:
    """A stand-in trial that records what a define-by-run space declares, answering each
    `suggest_*` with its first choice or lower bound (the spaces here do not branch)."""

    def __init__(self):
        self.params: dict[str, Any] = {}

    def suggest_float(self, name: str, low: float, high: float, **_):
        return self.params.setdefault(name, low)

    def suggest_int(self, name: str, low: int, high: int, **_):
        return self.params.setdefault(name, low)

    def suggest_categorical(self, name: str, choices):
        return self.params.setdefault(name, list(choices)[0])


def paper_values(method: str, volume: int | None) -> dict[str, Any]:
    """The `paper` space's constants for `method` at `volume` (it declares nothing to search)."""
    return get_space("paper", method, volume)(_KeyRecorder())


def space_keys(name: str, method: str, volume: int | None) -> tuple[str, ...]:
    """The hyperparameters space `name` sets for `method`: those it searches and the
    constants it returns (not `method`). Pure: no Optuna study is made."""
    trial = _KeyRecorder()
    constants = get_space(name, method, volume)(trial) or {}
    return tuple(sorted(set(trial.params) | {k for k in constants if k != "method"}))


# shared choices: every method's space searches the same optimiser knobs (equal footing)
BATCH_SIZES = [8, 16, 24, 32]
K_CHOICES = [8, 16, 32, 64, 128]  # the paper's Fig. 4 goes up to 128


def suggest_common(trial) -> None:
    trial.suggest_categorical("batch_size", BATCH_SIZES)
    trial.suggest_float("lr", 1e-4, 3e-3, log=True)
    trial.suggest_float("weight_decay", 1e-5, 1e-2, log=True)


def _register_all() -> None:
    """Import every module of this package: each registers its space (and paper values)."""
    import importlib
    import pkgutil

    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{module}")


_register_all()
