"""Config loading for every edgekit component: TOML into typed sections, one coercion, overrides that merge.

A config is a dataclass whose fields are plain values or nested section dataclasses. Declare a field with
:func:`opt` to give it a check (a callable raising ``ValueError``), mark it as a path, or document it. :func:`build`
turns one or more *layers* (mappings, e.g. the TOML file and then the environment) into an instance: a later layer
overrides an earlier one key by key, so overriding ``update.probation_s`` keeps the rest of the ``[update]`` table.
Every problem raises the caller's :class:`~edgekit.errors.ConfigError` subclass naming the dotted key.

Environment variables ``<PREFIX><SECTION>__<KEY>`` (e.g. ``EDGEKIT_AGENT__MQTT__HOST``) become a layer through
:func:`env_layer`; their values are strings and are coerced like the file's values.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

from .errors import ConfigError

T = TypeVar("T")
Check = Callable[[Any], None]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def opt(default: Any, check: Check | None = None, *, path: bool = False, doc: str = "") -> Any:
    """A config field: its default, an optional check (raises ValueError), whether it is a path, a one-line doc."""
    meta = {"check": check, "path": path, "doc": doc}
    if isinstance(default, (dict, list)):
        factory: Callable[[], Any] = functools.partial(type(default), default)
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# --- checks shared by the configs ------------------------------------------------------------------------------------


def port(v: int) -> None:
    if not 0 <= v <= 65535:
        raise ValueError("must be a TCP port between 0 and 65535")


def positive(v: float) -> None:
    if v <= 0:
        raise ValueError("must be positive")


def non_negative(v: float) -> None:
    if v < 0:
        raise ValueError("must not be negative")


def at_least(low: float) -> Check:
    def check(v: float) -> None:
        if v < low:
            raise ValueError(f"must be at least {low:g}")
    return check


def one_of(*choices: str) -> Check:
    def check(v: str) -> None:
        if v not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
    return check


# --- layers ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One source of values: a nested mapping, the directory its relative paths are relative to, and its name."""

    data: Mapping[str, Any]
    base: Path | None = None
    source: str = "config"


def parse_toml(text: str, name: str = "config", *, error: type[ConfigError] = ConfigError,
               hint: str | None = None) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{name} is not valid TOML: {exc}", hint=hint or "fix the syntax") from exc


def read_toml(path: str | os.PathLike, *, error: type[ConfigError] = ConfigError,
              hint: str | None = None) -> dict[str, Any]:
    """Read and parse a TOML file; FileNotFoundError is left to the caller (each says what to do about it)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"cannot read config file {path}: {exc}") from exc
    return parse_toml(text, str(path), error=error, hint=hint)


def env_layer(environ: Mapping[str, str], prefix: str, *, error: type[ConfigError] = ConfigError) -> Layer:
    """``<prefix>MQTT__HOST=x`` → ``{"mqtt": {"host": "x"}}``; relative paths are relative to the working directory."""
    out: dict[str, Any] = {}
    for name, value in sorted(environ.items()):
        if not name.startswith(prefix):
            continue
        parts = [p.lower() for p in name[len(prefix):].split("__") if p]
        if not parts:
            continue
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise error(f"environment variable {name} conflicts with another override", key=".".join(parts))
        if isinstance(node.get(parts[-1]), dict):
            raise error(f"environment variable {name} conflicts with another override", key=".".join(parts))
        node[parts[-1]] = value
    return Layer(out, Path.cwd(), "environment")


# --- building --------------------------------------------------------------------------------------------------------


@functools.cache
def _hints(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def is_section(typ: Any) -> bool:
    return isinstance(typ, type) and dataclasses.is_dataclass(typ)


def config_fields(cls: type) -> list[dataclasses.Field]:
    """The fields a config file may set (``internal`` ones are not read)."""
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]


def coerce(key: str, typ: Any, value: Any, *, error: type[ConfigError] = ConfigError) -> Any:
    """The one coercion: strings (environment values) become bools and numbers; ints widen to floats; an integral
    float is accepted for an int; a bool is never a number."""
    if typ is bool:
        if isinstance(value, str):
            low = value.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
        if not isinstance(value, bool):
            raise error(f"config key {key} must be true or false, got {value!r}", key=key)
        return value
    if typ in (int, float):
        what = "an integer" if typ is int else "a number"
        if isinstance(value, str):
            try:
                value = float(value.strip()) if typ is float or "." in value else int(value.strip())
            except ValueError:
                raise error(f"config key {key} must be {what}, got {value!r}", key=key) from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise error(f"config key {key} must be {what}, got {value!r}", key=key)
        if typ is int and value != int(value):
            raise error(f"config key {key} must be {what}, got {value!r}", key=key)
        return typ(value)
    if typ is str and not isinstance(value, str):
        raise error(f"config key {key} must be a string, got {value!r}", key=key)
    return value


def _value(key: str, f: dataclasses.Field, typ: Any, value: Any, layer: Layer, error: type[ConfigError]) -> Any:
    value = coerce(key, typ, value, error=error)
    check = f.metadata.get("check")
    if check is not None:
        try:
            check(value)
        except ValueError as exc:
            raise error(f"config key {key} = {value!r} is invalid: {exc}", key=key) from None
    if f.metadata.get("path") and value and layer.base is not None and not os.path.isabs(value):
        value = str((layer.base / value).resolve())
    return value


def build(cls: type[T], layers: Sequence[Layer | Mapping[str, Any]], *, prefix: str = "",
          error: type[ConfigError] = ConfigError) -> T:
    """An instance of the config dataclass ``cls`` from ``layers`` (later ones override earlier ones key by key)."""
    given_layers = [x if isinstance(x, Layer) else Layer(x) for x in layers]
    fields = {f.name: f for f in config_fields(cls)}
    hints = _hints(typing.cast(Any, cls))
    for layer in given_layers:
        if not isinstance(layer.data, Mapping):
            key = prefix.rstrip(".")
            raise error(f"config key {key} must be a table", key=key)
        for name in layer.data:
            if name not in fields:
                key = f"{prefix}{name}"
                raise error(f"unknown config key {key}", key=key,
                            hint=f"known keys: {', '.join(prefix + n for n in fields)}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key, typ = f"{prefix}{name}", hints[name]
        given = [layer for layer in given_layers if name in layer.data]
        if is_section(typ):
            subs = [Layer(layer.data[name], layer.base, layer.source) for layer in given]
            kwargs[name] = build(typ, subs, prefix=key + ".", error=error)
        elif given:
            layer = given[-1]
            kwargs[name] = _value(key, f, typ, layer.data[name], layer, error)
    return cls(**kwargs)


def check(cfg: Any, *, error: type[ConfigError] = ConfigError) -> None:
    """Run every key's check on a config built in code (the checks a file's values get from :func:`build`)."""
    build(type(cfg), [to_dict(cfg)], error=error)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as nested plain data (what :func:`build` reads back), without ``internal`` fields."""
    out: dict[str, Any] = {}
    for f in config_fields(type(cfg)):
        value = getattr(cfg, f.name)
        out[f.name] = to_dict(value) if dataclasses.is_dataclass(value) else value
    return out


def to_toml(cfg: Any) -> str:
    import tomli_w

    return tomli_w.dumps(to_dict(cfg))

