"""Environments with their own roots: which environment a chain leads to.

A CA made with ``trustyard init --environment staging`` names its root and intermediate after
the environment (``trustyard staging Root CA``) and records it (``[ca] environment``). Machines
of another environment list the roots they must never trust, so ``check``, ``doctor`` and
``scan`` can say ``wrong_environment`` (naming both) instead of a generic unknown issuer::

    environment = "production"          # this machine's (client.toml; [ca] environment on a CA)
    [environments]                      # the others' roots
    staging = ["sha256:3f1c...", "staging-root.crt"]

Each entry is a root's SHA-256 fingerprint (``sha256:`` + hex, colons allowed) or a PEM file
(relative to the file that names it). A chain leads to an environment when one of its
certificates has a listed fingerprint, or when a listed root, or a certificate at hand with a
listed fingerprint, signed the chain's topmost certificate. A chain served without its root
(the usual leaf + intermediate) is therefore recognized from a fingerprint only when the
intermediate's fingerprint is listed too, or the root is among the certificates at hand (the
trust bundle, a scan's files); a PEM entry always works.

The sources, merged in this order (a later one wins for ``environment``): the CA home's
``trustyard.toml``, the client's ``client.toml``, a ``--environments FILE`` (this same TOML shape).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from .errors import ConfigError
from .x509.chain import issued
from .x509.summary import fingerprint_sha256, load_pem_bundle

_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")
_HEX = re.compile(r"^[0-9a-f]{64}$")


def check_name(text: object) -> str:
    """An environment's name: a lower-case DNS label of at most 32 characters (``staging``,
    ``eu-prod``); ValueError otherwise."""
    if not isinstance(text, str) or not _NAME.match(text):
        raise ValueError(f"an environment name is a lower-case DNS label (letters, digits, '-', at most 32, "
                         f"not starting or ending with '-'), like staging or eu-prod, not {text!r}")
    return text


def parse_fingerprint(text: str) -> str | None:
    """``sha256:AB:CD...`` / ``abcd...`` as lower-case hex; None when it is not a SHA-256 fingerprint."""
    value = text.strip().lower().removeprefix("sha256:").replace(":", "")
    return value if _HEX.match(value) else None


@dataclass(frozen=True)
class Environments:
    current: str | None = None  # this machine's (or the expected) environment
    fingerprints: Mapping[str, frozenset[str]] = field(default_factory=dict)  # other environment -> roots
    roots: Mapping[str, tuple[x509.Certificate, ...]] = field(default_factory=dict)  # from PEM entries

    def __bool__(self) -> bool:
        return bool(self.fingerprints or self.roots)

    def merged(self, later: Environments) -> Environments:
        names = set(self.fingerprints) | set(later.fingerprints)
        return Environments(
            current=later.current or self.current,
            fingerprints={n: self.fingerprints.get(n, frozenset()) | later.fingerprints.get(n, frozenset())
                          for n in names},
            roots={n: (*self.roots.get(n, ()), *later.roots.get(n, ())) for n in set(self.roots) | set(later.roots)})

    def lead_to(self, chain: Sequence[x509.Certificate], at_hand: Iterable[x509.Certificate] = ()) -> str | None:
        """The other environment ``chain`` (leaf first) leads to, or None."""
        if not chain:
            return None
        in_chain = {fingerprint_sha256(c) for c in chain}
        top = chain[-1]
        known = list(at_hand)
        for name in sorted(set(self.fingerprints) | set(self.roots)):
            if name == self.current:
                continue
            listed = self.fingerprints.get(name, frozenset())
            if in_chain & listed:
                return name
            issuers = [*self.roots.get(name, ()), *(c for c in known if fingerprint_sha256(c) in listed)]
            if any(issued(root, top) for root in issuers):
                return name
        return None

    def explain(self, other: str) -> str:
        """The detail of a ``wrong_environment`` finding: both environments, and what to do."""
        here = f"environment {self.current!r}" if self.current else "this environment"
        return (f"the chain leads to the root of environment {other!r}, not to {here}'s: a certificate of "
                f"{other!r} was deployed here; issue one from {here}'s CA")


def from_table(data: Mapping[str, Any], where: str, base: Path, current: Any = None) -> Environments:
    """The ``environment`` key (or ``current``) and ``[environments]`` table of a parsed TOML
    document; ConfigError naming ``where`` when malformed."""
    raw = current if current is not None else data.get("environment")
    try:
        name = check_name(raw) if raw else None
    except ValueError as exc:
        raise ConfigError(f"{where}: environment: {exc}") from None
    table = data.get("environments", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [environments] must be a table of environment = [root fingerprints]")
    fingerprints: dict[str, frozenset[str]] = {}
    roots: dict[str, tuple[x509.Certificate, ...]] = {}
    for env, entries in table.items():
        try:
            check_name(env)
        except ValueError as exc:
            raise ConfigError(f"{where}: [environments] {exc}") from None
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise ConfigError(f"{where}: [environments] {env} must be a list of sha256: fingerprints or PEM files")
        fps, certs = set(), []
        for entry in entries:
            fp = parse_fingerprint(entry)
            if fp is not None:
                fps.add(fp)
                continue
            path = Path(entry).expanduser()
            path = path if path.is_absolute() else base / path
            try:
                loaded = load_pem_bundle(path.read_bytes())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{where}: [environments] {env}: {entry!r} is neither a sha256: fingerprint nor "
                                  f"a readable PEM file ({getattr(exc, 'strerror', None) or exc})") from None
            certs += loaded
            fps |= {fingerprint_sha256(c) for c in loaded}
        fingerprints[env] = frozenset(fps)
        roots[env] = tuple(certs)
    return Environments(current=name, fingerprints=fingerprints, roots=roots)


def load_file(path: str | Path, *, missing_ok: bool = False) -> Environments:
    """An environments TOML file (``environment`` and ``[environments]``; other keys are ignored,
    so ``client.toml`` is one)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        if missing_ok:
            return Environments()
        raise ConfigError(f"cannot read the environments file {path}: it does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the environments file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return from_table(data, str(path), path.parent)
