"""Which identities may call this service: an allow-list loaded from TOML.

.. code-block:: toml

    # Each [[allow]] grants the identities (any of them) the methods (default: all) on
    # the path prefixes (default: all). A request is allowed when one rule grants it.
    [[allow]]
    identities = ["spiffe://prod.internal/orders", "spiffe://prod.internal/billing/*"]
    paths = ["/api/orders"]
    methods = ["GET", "POST"]

    [[allow]]
    identities = ["*.ops.internal"]     # any DNS name below ops.internal

Identity patterns: an exact URI or DNS name; a URI ending in ``*`` (a prefix, e.g.
``spiffe://prod.internal/*``); ``*.suffix`` for DNS names strictly below ``suffix``;
``*`` for any authenticated identity. A URI pattern matches only URI SANs, and only in
normal form (``trustyard.policy.uris``); a DNS pattern only DNS SANs; an IP pattern only IP
SANs. A path prefix matches whole segments: ``/api`` covers ``/api`` and ``/api/x`` but
not ``/apix``. The request path is judged exactly as the application routes it, without
normalization: a path with ``.``/``..`` segments, encoded ``/``, ``.`` or ``\\``, or a NUL is
never allowed (``trustyard.tls.paths``; the middleware answers 400).
"""

from __future__ import annotations

import os
import posixpath
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..policy.patterns import NamePattern
from ..x509.names import Name, parse_name
from .identity import PeerIdentity
from .paths import path_problem

_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "*"}


@dataclass(frozen=True)
class IdentityPattern:
    """The issuance policy's name patterns (``trustyard.policy.NamePattern``), plus ``*``:
    any authenticated identity, whatever its kind."""

    text: str
    pattern: NamePattern | None  # None for "*"

    @classmethod
    def parse(cls, text: str) -> IdentityPattern:
        raw = str(text).strip()
        if raw == "*":
            return cls(raw, None)
        try:
            pattern = NamePattern.parse(raw)
        except ValueError as exc:
            raise ValueError(f"invalid identity pattern {text!r} ({exc}); expected a URI, a URI prefix ending "
                             "in *, a DNS name, *.suffix, an IP or CIDR, or *") from None
        return cls(pattern.text, pattern)

    def matches_name(self, name: str) -> bool:
        """Match a name as typed (a string: ``://`` makes it a URI, else an IP or DNS name)."""
        try:
            return self.matches_san(parse_name(name))
        except ValueError:
            return self.pattern is None

    def matches_san(self, san: Name) -> bool:
        """Match one SAN of its own type: a URI pattern only URI SANs, and so on."""
        return self.pattern is None or self.pattern.matches(san)

    def matches(self, identity: PeerIdentity) -> bool:
        return any(self.matches_san(san) for san in identity.sans)


def _normalize_path(path: str) -> str:
    # One leading slash first: POSIX normpath keeps a leading "//" as a distinct root.
    return posixpath.normpath("/" + path.lstrip("/"))


@dataclass(frozen=True)
class Rule:
    identities: tuple[IdentityPattern, ...]
    paths: tuple[str, ...] = ("/",)
    methods: tuple[str, ...] = ("*",)

    def covers(self, method: str, path: str) -> bool:
        if "*" not in self.methods and method.upper() not in self.methods:
            return False
        return any(p == "/" or path == p or path.startswith(p + "/") for p in self.paths)

    def allows(self, identity: PeerIdentity, method: str, path: str) -> bool:
        return self.covers(method, path) and any(i.matches(identity) for i in self.identities)


@dataclass(frozen=True)
class IdentityPolicy:
    rules: tuple[Rule, ...]

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "policy") -> IdentityPolicy:
        unknown = set(data) - {"allow"}
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}; expected [[allow]] tables")
        entries = data.get("allow", [])
        if not isinstance(entries, list):
            raise ConfigError(f"{source}: allow must be [[allow]] tables")
        rules = []
        for i, entry in enumerate(entries):
            where = f"{source}: allow[{i}]"
            if not isinstance(entry, dict):
                raise ConfigError(f"{where}: must be a table")
            extra = set(entry) - {"identities", "paths", "methods"}
            if extra:
                raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
            rules.append(_rule(entry, where))
        return cls(tuple(rules))

    @classmethod
    def from_toml(cls, text: str, source: str = "policy") -> IdentityPolicy:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
        return cls.from_dict(data, source)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> IdentityPolicy:
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read identity policy {path}: {exc.strerror}") from None
        return cls.from_toml(text, str(path))

    def allows(self, identity: PeerIdentity, method: str, path: str) -> bool:
        """Judged on ``path`` exactly as the application routes it; an ambiguous path
        (``..``, encoded ``/``...: :func:`~trustyard.tls.paths.path_problem`) is never allowed."""
        if path_problem(path) is not None:
            return False
        return any(rule.allows(identity, method, path) for rule in self.rules)


def _strings(value: Any, where: str, key: str, default: Iterable[str]) -> list[str]:
    if value is None:
        return list(default)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: {key} must be a non-empty list of strings")
    return value


def _rule(entry: dict[str, Any], where: str) -> Rule:
    if "identities" not in entry:
        raise ConfigError(f"{where}: identities is required")
    try:
        identities = tuple(IdentityPattern.parse(t) for t in _strings(entry["identities"], where, "identities", ()))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    paths = []
    for p in _strings(entry.get("paths"), where, "paths", ["/"]):
        if not p.startswith("/"):
            raise ConfigError(f"{where}: path prefix {p!r} must start with /")
        problem = path_problem(p)
        if problem:
            raise ConfigError(f"{where}: path prefix {p!r} has {problem}")
        paths.append(_normalize_path(p))
    methods = [m.upper() for m in _strings(entry.get("methods"), where, "methods", ["*"])]
    bad = [m for m in methods if m not in _METHODS]
    if bad:
        raise ConfigError(f"{where}: unknown HTTP method(s) {', '.join(bad)}")
    return Rule(identities, tuple(paths), tuple(methods))
