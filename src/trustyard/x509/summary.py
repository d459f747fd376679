"""What a person (or a JSON consumer) needs to know about a certificate."""

from __future__ import annotations

import functools
import hashlib
import itertools
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from ..units import format_time
from .keys import describe_key, spki_der
from .names import name_text, sans_of


def fingerprint_sha256(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def spki_sha256(cert: x509.Certificate) -> str:
    return hashlib.sha256(spki_der(cert.public_key())).hexdigest()  # type: ignore[arg-type]


_HEX_DIGITS = frozenset("0123456789abcdef")


def serial_text(value: int | str) -> str:
    """The one spelling of a serial number: lower-case hex, no leading zeros, no prefix.

    An ``int`` (as ``cryptography`` gives it) or hex text (as a person or a client sends it, in any
    case, with leading zeros) both come out the same; anything else is a ``ValueError``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"a serial number is an int or hex text, not {type(value).__name__}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a serial number is not negative: {value}")
        return format(value, "x")
    text = value.strip().lower()
    if not text or not _HEX_DIGITS.issuperset(text):
        raise ValueError(f"a serial number is hex digits, not {value[:64]!r}")
    return text.lstrip("0") or "0"


def serial_int(value: str | int) -> int:
    """The integer a serial number's hex text (or int) stands for; ``ValueError`` on anything else."""
    return int(serial_text(value), 16)


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


@functools.lru_cache(maxsize=16384)
def is_self_signed(cert: x509.Certificate) -> bool:
    """Signed by its own key. Remembered per certificate (by its DER): a scan meets the same root
    or self-signed copy in thousands of bundles, and a signature check costs more than the parse."""
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
        return True
    except Exception:
        return False


def summarize(cert: x509.Certificate, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    not_after = cert.not_valid_after_utc
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "sans": [name_text(n) for n in sans_of(cert)],
        "serial": serial_text(cert.serial_number),
        "not_before": format_time(cert.not_valid_before_utc),
        "not_after": format_time(not_after),
        "seconds_left": int((not_after - now).total_seconds()),
        "key_type": describe_key(cert.public_key()),
        "is_ca": is_ca(cert),
        "self_signed": is_self_signed(cert),
        "fingerprint_sha256": fingerprint_sha256(cert),
        "spki_sha256": spki_sha256(cert),
    }


def chain_order(certs: list[x509.Certificate]) -> list[str]:
    """For each certificate after the first: does it issue the one before it?"""
    notes = []
    for child, parent in itertools.pairwise(certs):
        ok = child.issuer == parent.subject
        notes.append("ok" if ok else f"out of order: {parent.subject.rfc4514_string()} did not issue "
                     f"{child.subject.rfc4514_string()}")
    return notes


def pem_bundle(certs: Iterable[x509.Certificate]) -> str:
    return "".join(c.public_bytes(Encoding.PEM).decode() for c in certs)


def load_pem_bundle(data: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM blob; ValueError when there is none."""
    try:
        certs = x509.load_pem_x509_certificates(data)
    except Exception as exc:
        raise ValueError(f"no PEM certificate found: {exc}") from None
    return certs
