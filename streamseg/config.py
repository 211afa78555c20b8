"""Strict YAML -> frozen dataclass loading, shared by the runtime and training configs.

One YAML section maps to one dataclass. Unknown keys are errors that name the
nearest valid key; values are type-checked against the annotations; ``null``
means "not given". ``--set a.b=value`` overrides go through the same checks.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration file or override is invalid.

    The message names the key and the fix.
    """


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: Iterable[str] = ()
) -> T:
    """Build ``cls`` from a YAML file and ``key.path=value`` overrides.

    Args:
        cls: A (frozen) dataclass whose fields may be nested dataclasses.
        path: YAML file; ``None`` starts from the dataclass defaults.
        overrides: Strings such as ``"smoothing.time_constant_s=0.2"``; the
            value is parsed as YAML (``true``, ``0.2``, ``[1, 2]``, ``null``).

    Raises:
        ConfigError: Unreadable file, unknown key, wrong type or failed check.

    Example:
        >>> @dataclasses.dataclass(frozen=True)
        ... class C:
        ...     n: int = 1
        >>> load_config(C, None, ["n=3"]).n
        3
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(
                f"{path}: cannot read config ({error.strerror or error})"
            ) from error
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error})") from error
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"{path}: expected a mapping at the top level, "
                f"got {type(loaded).__name__}"
            )
        data = loaded
    for override in overrides:
        apply_override(data, override)
    where = f"{path}: " if path is not None else ""
    try:
        return from_mapping(cls, data, "")
    except ConfigError as error:
        raise ConfigError(f"{where}{error}") from None


def apply_override(data: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` inside nested dict ``data`` (value parsed as YAML)."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            f"--set {override!r}: expected key.path=value, e.g. smoothing.enabled=false"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(
            f"--set {override!r}: value is not valid YAML ({error})"
        ) from error
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {override!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


# Keys that existed once, with what replaces them (named in the error).
REMOVED_KEYS = {
    "smoothing.on_threshold": "the smoother turns on at the model's threshold: "
    "set model.threshold instead",
    "smoothing.off_threshold": "the smoother turns off hysteresis_gap below the "
    "model's threshold: set smoothing.hysteresis_gap instead",
}


def from_mapping(cls: type[T], data: Mapping[str, Any], prefix: str) -> T:
    """Build dataclass ``cls`` from ``data``, checking keys and types (recursively)."""
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{prefix or 'config'}: expected a section (mapping), got {data!r}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in fields and name in REMOVED_KEYS:
            raise ConfigError(f"{name}: no longer a setting; {REMOVED_KEYS[name]}")
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = (
                f"; did you mean {close[0]!r}?"
                if close
                else f"; valid keys: {', '.join(fields)}"
            )
            raise ConfigError(f"{name}: unknown key{hint}")
        kwargs[key] = _convert(hints[key], value, name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {error}") from None


def _convert(hint: Any, value: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _convert(option, value, name)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(
            errors[0]
            if len(errors) == 1
            else f"{name}: expected {_describe(hint)}, got {value!r}"
        )
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(
            f"{name}: expected one of {', '.join(repr(a) for a in args)}, got {value!r}"
        )
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value if value is not None else {}, f"{name}.")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(
                _convert(args[0], v, f"{name}[{i}]") for i, v in enumerate(value)
            )
        if len(value) != len(args):
            raise ConfigError(
                f"{name}: expected {len(args)} values, got {len(value)}: {value!r}"
            )
        return tuple(
            _convert(a, v, f"{name}[{i}]")
            for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    if hint is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"{name}: expected a path, got {value!r}")
    raise ConfigError(f"{name}: unsupported field type {hint!r} (a streamseg bug)")


def _describe(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return " or ".join(getattr(a, "__name__", str(a)) for a in args) + " or null"


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as plain YAML-friendly data.

    Paths become strings and tuples become lists.
    """

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {
                f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)
            }
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, Mapping):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, Path):
            return str(value)
        return value

    return plain(config)
