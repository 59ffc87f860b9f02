"""One trial's hyperparameters, converted once from a plain dict (Ray config, YAML, Optuna).

`HParams.from_dict(config)` rejects unknown keys and impossible values with a
message naming the key; after that the code reads `hp.tau`, never `config["tau"]`.
Defaults are the paper's (tau 0.05, lambda 0.1, batch 24, K 32).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Mapping

from trainables.errors import ConfigError

METHODS = ("vt", "kd", "rkd", "ckd")
Z_MODES = ("first_batch", "none", "running")
NEGATIVES = ("opposite_class", "instance")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class HParams:
    method: str = "vt"
    epochs: int = 10
    min_steps: int = 0  # total steps at least this: tiny subsets get enough updates
    batch_size: int = 24  # paper
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    schedule: str = "cosine"  # teachers trained with a constant lr were too weak (FACTS.md)
    warmup_epochs: int = 0
    lam: float = 0.1  # weight of the distillation term; paper's lambda for CKD
    tau: float = 0.05  # paper
    k: int = 32  # paper; 10 with 10 images
    embed_dim: int = 128  # CRD's common space
    z_mode: str = "first_batch"  # CRD's normaliser; "none" = paper's Eq. 7 literally
    negatives: str = "opposite_class"  # paper, and CRD's script for two classes; "instance": any other image
    symmetric: bool = False  # add CRD's student-anchor term against a teacher bank
    momentum: float = 0.5  # memory-bank momentum (CRD)
    kd_t: float = 4.0  # Hinton temperature
    rkd_distance_w: float = 25.0
    rkd_angle_w: float = 50.0
    flip: bool = True  # horizontal-flip augmentation
    seed: int = 0
    amp: bool = True  # bf16 autocast on CUDA; no-op on CPU
    channels_last: bool = True  # CUDA only

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], *, where: str = "hyperparameters") -> "HParams":
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(config) - set(known))
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {unknown}; known keys are {sorted(known)}"
            )
        values = {}
        for name, value in config.items():
            values[name] = _cast(name, value, type(getattr(cls(), name)), where)
        hp = cls(**values)
        hp.validate(where)
        return hp

    def replace(self, **changes: Any) -> "HParams":
        return HParams.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, where: str = "hyperparameters") -> None:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"{where}: {key}={getattr(self, key)!r} {why}")

        for key, allowed in (
            ("method", METHODS),
            ("z_mode", Z_MODES),
            ("negatives", NEGATIVES),
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
        ):
            if getattr(self, key) not in allowed:
                raise bad(key, f"is not one of {list(allowed)}")
        for key in ("epochs", "batch_size", "k", "embed_dim"):
            if getattr(self, key) <= 0:
                raise bad(key, "must be > 0")
        for key in ("lr", "tau", "kd_t"):
            if not getattr(self, key) > 0:
                raise bad(key, "must be > 0")
        for key in ("lam", "weight_decay", "rkd_distance_w", "rkd_angle_w", "min_steps", "warmup_epochs"):
            if getattr(self, key) < 0:
                raise bad(key, "must be >= 0")
        if not 0.0 <= self.momentum < 1.0:
            raise bad("momentum", "must be in [0, 1)")


def _cast(name: str, value: Any, kind: type, where: str) -> Any:
    """Cast a YAML/Optuna/MLflow value to the field's type, refusing lossy or odd casts."""
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
    except (TypeError, ValueError):
        pass
    raise ConfigError(f"{where}: {name}={value!r} is not a valid {kind.__name__}")
