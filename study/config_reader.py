"""Reading a study's YAML: plain data only (`safe_load`, duplicate keys refused), typed access
to each mapping with errors that name the file, the key and the value."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml

from trainables.errors import ConfigError
from trainables.models import resolve_name


class Reader:
    """Typed access to one mapping of the YAML, naming `file: key.path` in errors."""

    def __init__(self, file: str, where: str, mapping: Any):
        self.file, self.where = file, where
        if not isinstance(mapping, Mapping):
            raise self.error(where, mapping, "must be a mapping (key: value)")
        self.mapping = mapping

    def error(self, key: str, value: Any, why: str) -> ConfigError:
        return ConfigError(f"{self.file}: {key}={value!r}: {why}")

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def check_keys(self, allowed: set[str]) -> None:
        unknown = sorted(set(self.mapping) - allowed)
        if unknown:
            raise ConfigError(
                f"{self.file}: unknown key(s) {[self.key(u) for u in unknown]}; "
                f"allowed here: {sorted(allowed)}"
            )

    def get(self, name: str, kind: type | tuple, default: Any = ..., *, positive: bool = False):
        if name not in self.mapping:
            if default is ...:
                raise ConfigError(f"{self.file}: missing key {self.key(name)!r}")
            return default
        value = self.mapping[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise self.error(self.key(name), value, f"must be {' or '.join(k.__name__ for k in kinds)}")
        if positive and not value > 0:
            raise self.error(self.key(name), value, "must be > 0")
        return value

    def ints(self, name: str, default: Any = ..., *, even: bool = False) -> tuple[int, ...]:
        values = self.get(name, list, default)
        out = []
        for i, v in enumerate(values):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0 or (even and (v < 2 or v % 2)):
                need = "a positive even integer (half real, half fake)" if even else "a non-negative integer"
                raise self.error(f"{self.key(name)}[{i}]", v, f"must be {need}")
            out.append(v)
        return tuple(out)

    def sub(self, name: str, default: Any = ...) -> "Reader":
        return Reader(self.file, self.key(name), self.get(name, dict, default))


class UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that also refuses a key written twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def expand(value: str, workdir: Path) -> str:
    return str(Path(value.replace("{workdir}", str(workdir))).expanduser())


def existing_file(r: Reader, key: str, workdir: Path) -> str | None:
    """An optional path to an existing file (checkpoint, weights)."""
    value = r.get(key, (str, type(None)), None)
    if value is None:
        return None
    value = expand(value, workdir)
    if not Path(value).is_file():
        raise r.error(r.key(key), value, "file does not exist")
    return value


def model_name(r: Reader, key: str, name: str) -> None:
    try:
        resolve_name(name)
    except ConfigError as exc:
        raise r.error(key, name, str(exc)) from None
