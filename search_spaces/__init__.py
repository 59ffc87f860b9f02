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
# which methods a space can tune; "paper" serves all of them
SPACE_METHODS: dict[str, tuple[str, ...]] = {}


def register_space(name: str, methods: tuple[str, ...]):
    def wrap(fn: Space) -> Space:
        SPACES[name] = fn
        SPACE_METHODS[name] = methods
        return fn
    return wrap


def get_space(name: str, method: str, volume: int | None) -> Callable[[Any], dict[str, Any]]:
    """The define-by-run function of space `name` for `method` at `volume` training images."""
    if name not in SPACES:
        raise ConfigError(f"unknown search space {name!r}; known: {sorted(SPACES)}")
    if method not in SPACE_METHODS[name]:
        raise ConfigError(
            f"search space {name!r} tunes {list(SPACE_METHODS[name])}, not method {method!r}"
        )
    return functools.partial(SPACES[name], method=method, volume=volume)


# shared choices
BATCH_SIZES = [8, 16, 24, 32]
K_CHOICES = [8, 16, 32, 64, 128]  # the paper's Fig. 4 goes up to 128


def suggest_common(trial) -> None:
    trial.suggest_categorical("batch_size", BATCH_SIZES)
    trial.suggest_float("lr", 1e-4, 3e-3, log=True)


from search_spaces import ckd, kd, paper, rkd, vt  # noqa: E402,F401  (registration)
