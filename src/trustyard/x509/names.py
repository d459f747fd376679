"""Lenient at the edge, typed inside: one function turns ``orders.internal``,
``10.0.0.7``, ``::1`` or ``spiffe://prod.internal/orders`` into a GeneralName."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from cryptography import x509

Name = x509.DNSName | x509.IPAddress | x509.UniformResourceIdentifier

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def normalize_dns(text: str) -> str:
    """Lower-case, strip one trailing dot, check label syntax (a leading ``*.`` is allowed)."""
    name = text.strip().lower().rstrip(".")
    if not name or len(name) > 253:
        raise ValueError(f"invalid DNS name {text!r}")
    labels = name.split(".")
    for i, label in enumerate(labels):
        if label == "*" and i == 0 and len(labels) > 1:
            continue
        if not _LABEL.match(label):
            raise ValueError(f"invalid DNS name {text!r}: bad label {label!r}")
    return name


_NUMBER = re.compile(r"^(?:[0-9]+|0x[0-9a-f]*)$")


def reads_as_ip(name: str) -> bool:
    """Whether a DNS-looking name is an IPv4 address to URL parsers and ``inet_aton``: its last
    label is a number (decimal, or hex with ``0x``), as in ``10.0.0.1``, ``0x7f.1`` or
    ``2130706433`` (the WHATWG URL standard's "ends in a number"). No top-level domain is one."""
    labels = name.lower().rstrip(".").split(".")
    return bool(_NUMBER.match(labels[-1]))


def parse_name(text: str) -> Name:
    """A SAN from what a person types. Raises ValueError with the reason."""
    raw = str(text).strip()
    if not raw:
        raise ValueError("empty name")
    if "://" in raw:
        scheme = raw.split("://", 1)[0].lower()
        if not re.match(r"^[a-z][a-z0-9+.-]*$", scheme):
            raise ValueError(f"invalid URI {text!r}")
        if any(c.isspace() for c in raw) or not raw.isascii():
            raise ValueError(f"invalid URI {text!r}: spaces or non-ASCII characters")
        return x509.UniformResourceIdentifier(raw)
    try:
        return x509.IPAddress(ipaddress.ip_address(raw.strip("[]")))
    except ValueError:
        pass
    return x509.DNSName(normalize_dns(raw))


def parse_names(texts: Iterable[str]) -> list[Name]:
    """Parsed, de-duplicated, order kept."""
    out: list[Name] = []
    for text in texts:
        name = parse_name(text)
        if name not in out:
            out.append(name)
    return out


def name_text(name: x509.GeneralName) -> str:
    """The string form used in policies, tokens, logs and JSON."""
    if isinstance(name, x509.IPAddress):
        return str(name.value)
    if isinstance(name, x509.DNSName):
        return name.value.lower()
    if isinstance(name, x509.UniformResourceIdentifier):
        return name.value
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value}"
    return f"{type(name).__name__}:{getattr(name, 'value', '')}"



def sans_of(cert: x509.Certificate) -> list[x509.GeneralName]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value)


def common_names(name: x509.Name) -> list[str]:
    return [str(attr.value) for attr in name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
