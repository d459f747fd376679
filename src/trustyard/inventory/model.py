"""What a scan finds: certificates and keys at locations, and findings about them."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtensionOID

from ..units import format_time
from ..x509.chain import label
from ..x509.keys import spki_der
from ..x509.names import name_text
from ..x509.summary import is_self_signed, serial_text

_E = TypeVar("_E", bound=x509.ExtensionType)


class Severity(enum.IntEnum):
    INFO = 0
    WARNING = 1
    ERROR = 2
    CRITICAL = 3

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"unknown severity {text!r}: choose info, warning, error or critical") from None

    def __str__(self) -> str:
        return self.name.lower()


@dataclass
class CertItem:
    """One certificate at one location. ``group`` ties together what was found side by
    side (one file, one keystore entry, one Secret), so keys can be paired with certs."""

    cert: x509.Certificate
    location: str
    group: str
    environment: str | None = None
    trust_store: bool = False  # found where clients look for anchors (bundle, truststore, ca.crt)
    served: bool = False  # sent by a live endpoint
    position: int = 0  # index within its group's chain (0 = first / leaf)

    def __post_init__(self) -> None:
        c = self.cert
        # the DER once (cryptography re-encodes the certificate for a fingerprint too): a
        # streamed scan's ledger keeps it, and hashing it here saves a second encoding
        self.der = c.public_bytes(Encoding.DER)
        self.fingerprint = hashlib.sha256(self.der).hexdigest()
        # the key, the extensions and the names once each: every rule that reads them reads these
        # (each access to the certificate's builds new Python objects)
        self.public_key = c.public_key()
        self.spki = hashlib.sha256(spki_der(self.public_key)).hexdigest()  # type: ignore[arg-type]
        self.extensions: dict[x509.ObjectIdentifier, Any] = {e.oid: e.value for e in c.extensions}
        bc = self.extensions.get(ExtensionOID.BASIC_CONSTRAINTS)
        self.is_ca = isinstance(bc, x509.BasicConstraints) and bool(bc.ca)
        self.subject_name, self.issuer_name = c.subject, c.issuer
        # names first: is_self_signed remembers what it checks, and a leaf need not be remembered
        self.self_signed = self.issuer_name == self.subject_name and is_self_signed(c)
        # What the certificate is used as; ``judge.classify`` refines these from the whole scan.
        self.service = not self.is_ca
        self.root = self.is_ca and self.self_signed

    def extension(self, kind: type[_E]) -> _E | None:
        """The extension of this type, or None (``get_extension_for_class`` without a search)."""
        value = self.extensions.get(kind.oid)
        return value if isinstance(value, kind) else None

    @property
    def roles(self) -> list[str]:
        """``service``, ``root``, both, or ``intermediate`` (a CA that is not self-signed)."""
        out = (["service"] if self.service else []) + (["root"] if self.root else [])
        return out or ["intermediate"]

    # Text forms are made when a report or a finding needs them, once: rendering a
    # name costs more than parsing the certificate, and most certificates need neither.
    @cached_property
    def subject_text(self) -> str:
        return self.subject_name.rfc4514_string()

    @cached_property
    def issuer_text(self) -> str:
        return self.issuer_name.rfc4514_string()

    @cached_property
    def sans(self) -> list[x509.GeneralName]:
        san = self.extension(x509.SubjectAlternativeName)
        return list(san) if san is not None else []

    @cached_property
    def label(self) -> str:
        """The subject, or the SANs when the subject is empty (see ``x509.chain.label``)."""
        return self.subject_text or label(self.cert)

    @property
    def leaf_self_signed(self) -> bool:
        """Self-signed and used as a service certificate (see ``roles``)."""
        return self.self_signed and self.service

    def to_json(self) -> dict[str, Any]:
        c = self.cert
        return {
            "location": self.location,
            "subject": self.subject_text,
            "issuer": self.issuer_text,
            "sans": [name_text(n) for n in self.sans],
            "not_before": format_time(c.not_valid_before_utc),
            "not_after": format_time(c.not_valid_after_utc),
            "serial": serial_text(c.serial_number),
            "fingerprint_sha256": self.fingerprint,
            "spki_sha256": self.spki,
            "self_signed": self.self_signed,
            "is_ca": self.is_ca,
            "environment": self.environment,
            "roles": self.roles,
        }


@dataclass
class KeyItem:
    """A private key at a location; ``spki`` is None when it is encrypted and no password fit."""

    location: str
    group: str
    spki: str | None
    encrypted: bool
    mode: int | None = None  # file permission bits, None inside containers
    environment: str | None = None
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"location": self.location, "spki_sha256": self.spki, "encrypted": self.encrypted,
                "mode": None if self.mode is None else oct(self.mode), "environment": self.environment}


@dataclass(frozen=True)
class Finding:
    code: str
    severity: Severity
    locations: tuple[str, ...]
    detail: str
    subject: str | None = None
    fingerprint: str | None = None  # the certificate it is about (SHA-256), when it is about one
    fix: str = ""  # the trustyard commands that replace what is wrong
    facts: tuple[tuple[str, Any], ...] = ()  # more fields for the JSON form (file, line, ... of code)

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "severity": str(self.severity), "locations": list(self.locations),
                "detail": self.detail, "fingerprint_sha256": self.fingerprint, "fix": self.fix, **dict(self.facts)}


@dataclass(frozen=True)
class InsecureUse:
    """A place in code, configuration or a script that switches certificate verification off.
    ``suppressed_by`` is the reason it is not a finding: an inline ``trustyard: allow-insecure
    <reason>`` marker or an ``--ignore`` pattern."""

    path: str
    line: int
    language: str
    construct: str
    match: str  # the matched text (its first line)
    target: str | None  # the host or URL it talks to, when the same line or call names it
    fix: str
    suppressed_by: str | None = None

    CODE = "verification_disabled"

    @property
    def location(self) -> str:
        return f"{self.path}:{self.line}"

    def finding(self, severity: Severity) -> Finding:
        to = f" for {self.target}" if self.target else ""
        facts: tuple[tuple[str, Any], ...] = (
            ("file", self.path), ("line", self.line), ("language", self.language), ("construct", self.construct),
            ("match", self.match), ("target", self.target))
        if self.suppressed_by:
            facts += (("suppressed_by", self.suppressed_by),)
        return Finding(self.CODE, severity, (self.location,),
                       f"{self.construct} turns certificate verification off{to} ({self.language}): {self.match}",
                       fix=self.fix, facts=facts)


@dataclass
class ReadError:
    location: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"location": self.location, "detail": self.detail}


@dataclass
class Inventory:
    certificates: list[CertItem] = field(default_factory=list)
    keys: list[KeyItem] = field(default_factory=list)
    errors: list[ReadError] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    insecure: list[InsecureUse] = field(default_factory=list)
    suppressed: list[Finding] = field(default_factory=list)  # findings an allow marker or --ignore silenced

    def extend(self, other: Inventory) -> None:
        self.certificates += other.certificates
        self.keys += other.keys
        self.errors += other.errors
        self.insecure += other.insecure

    def to_json(self) -> dict[str, Any]:
        return {
            "certificates": [c.to_json() for c in self.certificates],
            "keys": [k.to_json() for k in self.keys],
            "findings": [f.to_json() for f in self.findings],
            "suppressed": [f.to_json() for f in self.suppressed],
            "errors": [e.to_json() for e in self.errors],
        }
