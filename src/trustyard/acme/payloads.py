"""What the fields of a client's payload may hold: identifiers, contacts, a CSR, revocation reasons.

Each check returns the value in its canonical form or raises the ``AcmeError`` the RFC names
for it (rejectedIdentifier, unsupportedIdentifier, invalidContact, ...).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from cryptography import x509

from ..ca.authority import REVOCATION_REASONS
from ..x509.csr import CSRError, ParsedCSR, parse_csr
from ..x509.names import Name, name_text, normalize_dns, parse_name, reads_as_ip
from .jws import b64d
from .problems import AcmeCode, AcmeError

# RFC 5280 CRLReason codes ACME clients send, to the authority's names (8, removeFromCRL, is not a reason).
REASON_CODES = {0: "unspecified", 1: "keyCompromise", 2: "cACompromise", 3: "affiliationChanged",
                4: "superseded", 5: "cessationOfOperation", 6: "certificateHold", 9: "privilegeWithdrawn",
                10: "aACompromise"}
assert set(REASON_CODES.values()) <= set(REVOCATION_REASONS)


def identifier(ident: Any) -> tuple[str, str]:
    """An order's identifier as (type, canonical value): a DNS name (``*.`` kept) or an IP address."""
    if not isinstance(ident, dict) or set(ident) - {"type", "value"} or not isinstance(ident.get("value"), str):
        raise AcmeError(AcmeCode.MALFORMED, "an identifier is {\"type\": ..., \"value\": ...}")
    kind, value = ident.get("type"), ident["value"]
    if kind == "dns":
        if ":" in value or "/" in value:
            raise AcmeError(AcmeCode.REJECTED_IDENTIFIER, f"{value[:100]!r} is not a DNS name")
        try:
            name = normalize_dns(value)
        except ValueError as exc:
            raise AcmeError(AcmeCode.REJECTED_IDENTIFIER, str(exc)[:200]) from None
        if reads_as_ip(name):  # else proved by dns-01 and issued as an IP SAN
            raise AcmeError(AcmeCode.REJECTED_IDENTIFIER, f"{value[:100]!r} is an IP address: order it as an ip identifier")
        return "dns", name
    if kind == "ip":
        try:
            return "ip", str(ipaddress.ip_address(value))
        except ValueError:
            raise AcmeError(AcmeCode.REJECTED_IDENTIFIER, f"{value[:100]!r} is not an IP address") from None
    raise AcmeError(AcmeCode.UNSUPPORTED_IDENTIFIER, f"identifier type {str(kind)[:20]!r} is not supported (dns, ip)")


def contacts(value: Any) -> list[str]:
    """An account's contact list: up to 10 mailto: URLs of one address each."""
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value) or len(value) > 10:
        raise AcmeError(AcmeCode.MALFORMED, "contact must be a list of up to 10 URLs")
    for contact in value:
        if not contact.startswith("mailto:"):
            raise AcmeError(AcmeCode.UNSUPPORTED_CONTACT, "only mailto: contacts are supported")
        address = contact[len("mailto:"):]
        if "@" not in address or "," in address or "?" in address or len(contact) > 255 or not contact.isascii():
            raise AcmeError(AcmeCode.INVALID_CONTACT, "a contact is mailto:one-address@domain")
    return value


def csr_for_order(value: Any, identifiers: Iterable[tuple[str, str]]) -> tuple[ParsedCSR, list[str]]:
    """A finalize request's CSR (base64url DER), which must name exactly the order's
    identifiers and ask for no CA certificate; and those names in issuance order (DNS first)."""
    try:
        csr = parse_csr(b64d(value, "csr"))
    except CSRError as exc:
        raise AcmeError(AcmeCode.BAD_C_S_R, str(exc)) from None
    if csr.asks_for_ca:
        raise AcmeError(AcmeCode.BAD_C_S_R, "the CSR asks for a CA certificate (basicConstraints CA:TRUE)")
    wanted = {parse_name(v) for _t, v in identifiers}
    asked = set(csr.names)
    if asked != wanted:
        missing = sorted(name_text(n) for n in wanted - asked)
        extra = sorted(name_text(n) for n in asked - wanted)
        raise AcmeError(AcmeCode.BAD_C_S_R, "the CSR must name exactly the order's identifiers"
                        + (f"; missing: {', '.join(missing)}" if missing else "")
                        + (f"; not in the order: {', '.join(extra)[:300]}" if extra else ""))
    return csr, [name_text(n) for n in _sorted_names(wanted)]


def _sorted_names(names: set[Name]) -> list[Name]:
    return sorted(names, key=lambda n: (not isinstance(n, x509.DNSName), name_text(n)))
