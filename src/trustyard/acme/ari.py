"""ACME Renewal Information (RFC 9773).

A certificate's ARI id is ``base64url(AKI keyIdentifier) "." base64url(serial)``. The suggested
renewal window follows trustyard's renewal rule: it opens at 2/3 of the lifetime and closes
at 3/4, so renewal lands well before expiry with room to retry; the window of a revoked
certificate, or of one an emergency replaces (``ca.emergency``), is already open (renew now).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509

from ..x509.summary import serial_text
from .jws import b64d, b64e
from .problems import AcmeCode, AcmeError

WINDOW_START, WINDOW_END = 2 / 3, 3 / 4


def serial_bytes(serial: int) -> bytes:
    """The DER INTEGER content octets of a (positive) serial: big-endian, minimal, sign bit clear."""
    return serial.to_bytes(serial.bit_length() // 8 + 1, "big")


def cert_id(cert: x509.Certificate) -> str:
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier or b""
    return f"{b64e(aki)}.{b64e(serial_bytes(cert.serial_number))}"


@dataclass(frozen=True)
class CertId:
    key_identifier: bytes
    serial: int

    @property
    def serial_text(self) -> str:
        return serial_text(self.serial)


def parse_cert_id(text: str) -> CertId:
    aki_text, sep, serial_part = text.partition(".")
    if not sep or not aki_text or not serial_part:
        raise AcmeError(AcmeCode.MALFORMED, "a renewalInfo id is base64url(AKI).base64url(serial)")
    aki, serial = b64d(aki_text, "the AKI part"), b64d(serial_part, "the serial part")
    if not serial or serial[0] & 0x80 or len(serial) > 21:
        raise AcmeError(AcmeCode.MALFORMED, "the serial part is not a positive certificate serial")
    return CertId(aki, int.from_bytes(serial, "big"))


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    retry_after: timedelta


def suggested_window(not_before: datetime, not_after: datetime, revoked: bool, now: datetime) -> Window:
    lifetime = not_after - not_before
    retry = min(max(lifetime / 12, timedelta(minutes=1)), timedelta(hours=6))
    if revoked:
        return Window(now - timedelta(minutes=1), now, retry)
    return Window(not_before + lifetime * WINDOW_START, not_before + lifetime * WINDOW_END, retry)
