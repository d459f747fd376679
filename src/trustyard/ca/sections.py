"""Checking one ``[section]`` of trustyard.toml against the dataclass that holds it.

TOML lets any key hold any type; a section's dataclass defaults say what each key must be.
``ca/config.py`` and the sections kept beside what they configure (``ca/alerts.py``,
``ca/crl.py``) check their tables here, so every section refuses alike, naming the key.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..units import parse_duration


def field_defaults(cls: Any) -> dict[str, Any]:
    return {f.name: f.default_factory() if f.default_factory is not MISSING else f.default
            for f in fields(cls)}


def check_type(path: Path, where: str, value: Any, default: Any) -> None:
    """A value of the type the setting's default has."""
    if isinstance(default, bool):
        ok, wanted = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, wanted = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, wanted = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(default, tuple):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        wanted = "a list of strings"
    elif isinstance(default, dict):
        ok = isinstance(value, dict) and all(isinstance(keys, dict) and all(isinstance(k, str) for k in keys.values())
                                             for keys in value.values())
        wanted = "tables of strings"
    else:
        ok, wanted = isinstance(value, str), "a string"
    if not ok:
        raise ConfigError(f"{path}: {where} must be {wanted}, not {short(value)}")


def section(path: Path, name: str, table: Any, cls: Any) -> dict[str, Any]:
    """``table`` (the ``[name]`` section) checked against ``cls``: a table, known keys only, each
    of its default's type; the keyword arguments for ``cls``."""
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{name}] must be a table")
    defaults = field_defaults(cls)
    unknown = set(table) - set(defaults)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) in [{name}]: {', '.join(sorted(unknown))}")
    for key, value in table.items():
        check_type(path, f"[{name}] {key}", value, defaults[key])
    return table


def duration(where: str, text: Any, allow_zero: bool = False) -> timedelta:
    """A duration setting; a ConfigError naming ``where`` (``[crl] delay``) when it is not one."""
    try:
        return parse_duration(text, allow_zero=allow_zero)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."
