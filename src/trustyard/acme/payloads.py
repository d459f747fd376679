"""What the fields of a client's payload may hold: identifiers, contacts, revocation reasons.

Each check returns the value in its canonical form or raises the ``AcmeError`` the RFC names
for it (rejectedIdentifier, unsupportedIdentifier, invalidContact, ...).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from ..ca.authority import REVOCATION_REASONS
from ..x509.names import normalize_dns, reads_as_ip
from .problems import AcmeError

# RFC 5280 CRLReason codes ACME clients send, to the authority's names (8, removeFromCRL, is not a reason).
REASON_CODES = {0: "unspecified", 1: "keyCompromise", 2: "cACompromise", 3: "affiliationChanged",
                4: "superseded", 5: "cessationOfOperation", 6: "certificateHold", 9: "privilegeWithdrawn",
                10: "aACompromise"}
assert set(REASON_CODES.values()) <= set(REVOCATION_REASONS)


def identifier(ident: Any) -> tuple[str, str]:
    """An order's identifier as (type, canonical value): a DNS name (``*.`` kept) or an IP address."""
    if not isinstance(ident, dict) or set(ident) - {"type", "value"} or not isinstance(ident.get("value"), str):
        raise AcmeError("malformed", "an identifier is {\"type\": ..., \"value\": ...}")
    kind, value = ident.get("type"), ident["value"]
    if kind == "dns":
        if ":" in value or "/" in value:
            raise AcmeError("rejectedIdentifier", f"{value[:100]!r} is not a DNS name")
        try:
            name = normalize_dns(value)
        except ValueError as exc:
            raise AcmeError("rejectedIdentifier", str(exc)[:200]) from None
        if reads_as_ip(name):  # else proved by dns-01 and issued as an IP SAN
            raise AcmeError("rejectedIdentifier", f"{value[:100]!r} is an IP address: order it as an ip identifier")
        return "dns", name
    if kind == "ip":
        try:
            return "ip", str(ipaddress.ip_address(value))
        except ValueError:
            raise AcmeError("rejectedIdentifier", f"{value[:100]!r} is not an IP address") from None
    raise AcmeError("unsupportedIdentifier", f"identifier type {str(kind)[:20]!r} is not supported (dns, ip)")


def contacts(value: Any) -> list[str]:
    """An account's contact list: up to 10 mailto: URLs of one address each."""
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value) or len(value) > 10:
        raise AcmeError("malformed", "contact must be a list of up to 10 URLs")
    for contact in value:
        if not contact.startswith("mailto:"):
            raise AcmeError("unsupportedContact", "only mailto: contacts are supported")
        address = contact[len("mailto:"):]
        if "@" not in address or "," in address or "?" in address or len(contact) > 255 or not contact.isascii():
            raise AcmeError("invalidContact", "a contact is mailto:one-address@domain")
    return value
