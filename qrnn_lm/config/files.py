"""Configs in and out: nested dicts (checkpoints), TOML files and ``--set section.key=value``
overrides, with the declared types checked (precedence: command line > TOML file > defaults).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

from .checks import validate
from .sections import _SECTIONS, Config, ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


def _type_name(tp: Any) -> str:
    return tp if isinstance(tp, str) else getattr(tp, "__name__", str(tp))


def _coerce(where: str, declared: str, value: Any) -> Any:
    """Check ``value`` against the dataclass field's declared type (a string under
    ``from __future__ import annotations``); ints are accepted where floats are expected."""
    if declared == "bool":
        ok = isinstance(value, bool)
    elif declared == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif declared == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
            ok = math.isfinite(value)
    elif declared == "str":
        ok = isinstance(value, str)
    elif declared == "list[int]":
        ok = isinstance(value, list) and all(
            isinstance(item, int) and not isinstance(item, bool) for item in value
        )
    else:  # pragma: no cover - a new field type must be added above
        raise TypeError(f"unsupported config field type {declared} for {where}")
    if not ok:
        raise ConfigError(f"config key '{where}' must be {declared}, got {value!r}")
    return value


def _section_from_dict(section: str, cls: type, values: Any) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"config section [{section}] must be a table, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            valid = ", ".join(sorted(fields))
            raise ConfigError(f"unknown config key '{section}.{key}'; valid keys in [{section}]: {valid}")
        kwargs[key] = _coerce(f"{section}.{key}", _type_name(fields[key].type), value)
    return cls(**kwargs)


def config_from_dict(values: dict) -> Config:
    """Build a Config from nested dicts (a parsed TOML file); unknown keys raise ConfigError."""
    if not isinstance(values, dict):
        raise ConfigError(f"a config must be a table of sections, got {values!r}")
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key == "name":
            kwargs["name"] = _coerce("name", "str", value)
        elif key in _SECTIONS:
            kwargs[key] = _section_from_dict(key, _SECTIONS[key], value)
        else:
            valid = ", ".join(["name", *(f"[{s}]" for s in _SECTIONS)])
            raise ConfigError(f"unknown config key '{key}'; valid top-level keys: {valid}")
    config = Config(**kwargs)
    validate(config)
    return config


def config_to_dict(config: Config) -> dict:
    """Nested plain dicts (the form stored in checkpoints and written as TOML)."""
    return dataclasses.asdict(config)


def parse_override(text: str) -> tuple[str, str, Any]:
    """Split ``section.key=value``; the value is read as a TOML literal (``3``, ``0.5``,
    ``true``, ``[1, 2]``, ``"text"``), falling back to a bare string (``--set data.dataset=ptb``)."""
    target, sep, raw = text.partition("=")
    if not sep or not target.strip():
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    target, raw = target.strip(), raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    if target == "name":
        return "", "name", value
    section, dot, key = target.partition(".")
    if not dot or not key:
        raise ConfigError(f"--set expects section.key=value (e.g. train.lr=10), got {text!r}")
    return section, key, value


def read_toml(path: str | Path, what: str, where_to_look: str) -> dict:
    """The TOML file ``path`` as dicts; ConfigError (one line, naming ``what`` it is) when it is
    missing, with ``where_to_look``, or not valid TOML."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist; {where_to_look}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{what} {path} is not valid TOML: {error}") from None


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Read a TOML recipe (or the defaults when ``path`` is None) and apply ``--set`` overrides."""
    values: dict = {}
    if path is not None:
        values = read_toml(path, "config file", "pick one from configs/")
    for text in overrides:
        section, key, value = parse_override(text)
        if section:
            table = values.setdefault(section, {})
            if not isinstance(table, dict):
                raise ConfigError(f"config section [{section}] must be a table")
            table[key] = value
        else:
            values[key] = value
    return config_from_dict(values)


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string literal (as written in recipes and read by ``--set``)."""
    escaped = "".join(_TOML_ESCAPES.get(char, f"\\u{ord(char):04x}" if ord(char) < 0x20 or char == "\x7f" else char)
                      for char in text)
    return f'"{escaped}"'


_TOML_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\b": "\\b", "\f": "\\f"}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(config: Config) -> str:
    """The resolved config as a TOML recipe that ``load_config`` reads back to an equal Config."""
    data = config_to_dict(config)
    lines = [f"name = {_toml_value(data.pop('name'))}"]
    for section, values in data.items():
        lines.append(f"\n[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
    return "\n".join(lines) + "\n"
