"""Reading a study's YAML: plain data only (`safe_load`, duplicate keys refused), typed access
to each mapping with errors that name the file, the key and the value; `--set` overrides
applied to the mapping before it is validated; the difference of two configs, key by key.

Torch-free: a config is checked in a fraction of a second. Only the model names need timm
(and so torch), and `models_checked_last` runs those lookups after every other check.
"""
from __future__ import annotations

import copy
import re
import shlex
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import yaml

from trainables.errors import ConfigError


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


_PENDING_MODELS: ContextVar[list | None] = ContextVar("pending_model_names", default=None)


@contextmanager
def models_checked_last() -> Iterator[None]:
    """Inside, `model_name` only notes each name; leaving without an error looks them all up.
    timm's registry is only reachable by importing timm and torch (seconds), so every other
    mistake of a config is reported first, without them."""
    pending: list = []
    token = _PENDING_MODELS.set(pending)
    try:
        yield
    finally:
        _PENDING_MODELS.reset(token)
    for r, key, name in pending:
        _check_model(r, key, name)


def model_name(r: Reader, key: str, name: str) -> None:
    pending = _PENDING_MODELS.get()
    if pending is None:
        _check_model(r, key, name)
    else:
        pending.append((r, key, name))


def _check_model(r: Reader, key: str, name: str) -> None:
    from trainables.model_names import ALIASES, is_timm_model  # torch-free (timm's list, cached)

    if not is_timm_model(name):
        raise r.error(key, name, f"unknown model {name!r}: use an alias {sorted(ALIASES)} or a timm model name "
                                 "(see timm.list_models())")


BYTE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
              "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def byte_count(r: Reader, key: str, default: int | None) -> int | None:
    """`key` as a number of bytes: an integer, or a string such as "512MB", "2 GiB"."""
    value = r.mapping.get(key, default)
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", value) if isinstance(value, str) else None
    if m is None or m.group(2).upper() not in BYTE_UNITS:
        raise r.error(r.key(key), value, 'must be a number of bytes: an integer or e.g. "512MB", "4GiB"')
    return int(float(m.group(1)) * BYTE_UNITS[m.group(2).upper()])


# --- `--set KEY=VALUE` overrides -------------------------------------------------------------

def set_options(overrides: Sequence[str]) -> str:
    """The overrides as command-line options, quoted for a shell ('' when none)."""
    return " ".join(f"--set {shlex.quote(o)}" for o in overrides)


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """`students.seeds=[0,1,2]` -> (("students", "seeds"), [0, 1, 2]): a dotted key into the
    YAML mapping and a value read as YAML (plain data only, as the config file)."""
    key, sep, value = text.partition("=")
    parts = tuple(p.strip() for p in key.split("."))
    if not sep or not all(parts):
        raise ConfigError(f"--set {text}: write --set KEY=VALUE with a dotted KEY, e.g. --set students.seeds=[0,1,2]")
    try:
        return parts, yaml.load(value, Loader=UniqueKeyLoader)
    except yaml.YAMLError as exc:
        why = " ".join(str(exc).split())
        raise ConfigError(f"--set {text}: the value is not valid YAML (plain data only, no tags): {why}") from None


def apply_overrides(raw: Any, overrides: Sequence[str], sections: set[str]) -> Any:
    """A copy of `raw` with each `KEY=VALUE` set in turn (a later one wins). The key must lead
    to a mapping of the config: its first part a known section (`sections`; one the file
    leaves out is created), every other part but the last an existing mapping. The values are
    validated with the rest of the config, afterwards."""
    if not overrides or not isinstance(raw, Mapping):
        return raw  # (a file that is not a mapping is reported by the validation)
    out = copy.deepcopy(dict(raw))
    for text in overrides:
        parts, value = parse_override(text)
        if parts[0] not in sections:
            raise ConfigError(f"--set {text}: {parts[0]!r} is not a section of a study config; "
                              f"sections are {sorted(sections)}")
        node = out
        for i, part in enumerate(parts[:-1]):
            if i == 0 and node.get(part) is None:
                node[part] = {}  # a known section the file leaves out (e.g. resources)
            if i > 0 and parts[i - 1] == "hparams" and node.get(part) is None and _is_method(part):
                node[part] = {}  # a method's own section of hyperparameters: --set students.hparams.ckd.tau=0.1
            child = node.get(part)
            where = ".".join(parts[: i + 1])
            if child is None:
                raise ConfigError(f"--set {text}: the config has no mapping {where!r} to set "
                                  f"{'.'.join(parts[i + 1:])!r} in; set it whole, e.g. --set '{where}={{...}}'")
            if not isinstance(child, dict):
                kind = "a list" if isinstance(child, list) else f"the value {child!r}"
                raise ConfigError(f"--set {text}: {where} is {kind}, not a mapping: "
                                  f"set it whole, e.g. --set '{where}=[...]'")
            node = child
        node[parts[-1]] = value
    return out


def _is_method(name: str) -> bool:
    from trainables.methods import METHODS  # torch-free
    return name in METHODS


def name_overrides(exc: ConfigError, overrides: Sequence[str]) -> ConfigError:
    """`exc` with the overrides it is about named first (`--set KEY=VALUE: ...`): those whose
    key the message names, or whose parent mapping and last part it names (hyperparameters:
    `students.hparams: tau=...`), unless a later override replaced it. An error about the file
    alone is returned as it is."""
    message = str(exc)
    culprit = re.sub(r"(allowed here|known keys are): \[[^\]]*\]", "", message)  # lists of valid keys name no culprit
    keys = [tuple(p.strip() for p in text.partition("=")[0].split(".")) for text in overrides]
    named = []
    for i, (text, parts) in enumerate(zip(overrides, keys)):
        if any(later == parts[:len(later)] for later in keys[i + 1:]):
            continue  # replaced by a later override (of this key or of a mapping above it)
        if _names(culprit, ".".join(parts)) or (
                len(parts) > 1 and _names(culprit, ".".join(parts[:-1])) and _names(culprit, parts[-1])):
            named.append(text)
    if not named:
        return exc
    return ConfigError(f"{', '.join(f'--set {t}' for t in named)}: {message}")


def _names(message: str, key: str) -> bool:
    return re.search(rf"(?<![\w.-]){re.escape(key)}(?=[=\[.':]|$)", message) is not None


# --- comparing two configs -------------------------------------------------------------------

ABSENT = "(absent)"


def config_diff(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) of every leaf where two YAML mappings differ; a list
    is a leaf (compared whole); a key one side lacks has the value ABSENT there."""
    if not (isinstance(old, Mapping) and isinstance(new, Mapping)):
        return [] if old == new else [(prefix or "(config)", old, new)]
    out = []
    for key in sorted(set(old) | set(new), key=str):
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in old or key not in new:
            out.append((where, old.get(key, ABSENT), new.get(key, ABSENT)))
        else:
            out.extend(config_diff(old[key], new[key], where))
    return out
