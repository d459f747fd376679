"""What each certificate is used as: a *service* certificate, a *root*, or both, judged by
what the scan saw it do rather than by basicConstraints alone (OpenSSL 3's
``openssl req -x509`` marks every self-signed certificate CA:TRUE, SAN or not).

A self-signed certificate is a root when it issued another certificate in the scan, or sits
in a trust store next to other roots. It is a service certificate when it names a host (a
DNS/IP SAN or a hostname-like CN), is paired with its private key, is served by an
endpoint, or issued nothing in the scan. A root that names a host and is also paired with
its key or served is both. A self-signed certificate whose keyUsage forbids serving TLS
(keyCertSign without digitalSignature or keyEncipherment, as CAs are made) is a root only.
``judge.classify`` applies these rules to a scan; this module holds the pieces they use.
"""

from __future__ import annotations

import os
import re

from cryptography import x509
from cryptography.x509.oid import NameOID

from .model import CertItem

# A DNS name with at least one dot (``service-a.internal``, ``*.apps.example``) or ``localhost``.
_HOSTNAME = re.compile(r"(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{1,63}\.?|localhost", re.I)


def unit(location_group: str, served: bool = False) -> tuple[str, str]:
    """Where an item lives as a unit: its container, or its directory plus name stem, so
    ``tls.crt`` and ``tls.key`` side by side count as one place."""
    if served or "#" in location_group:
        return ("group", location_group)
    return stem(location_group)


_STEM_NOISE = re.compile(r"([-_.]?(key|cert|crt|fullchain|privkey|chain|pub))+$", re.I)


def stem(location: str) -> tuple[str, str]:
    # os.path, not PurePath: this runs twice per certificate and key, and PurePath is slow
    parent, name = os.path.split(location)
    parent = parent.rstrip("/") or ("/" if parent else ".")
    for suffix in (".pem", ".crt", ".cer", ".der", ".key"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return parent, _STEM_NOISE.sub("", name)


def common_name(cert: x509.Certificate | CertItem) -> str | None:
    values = (cert.subject if isinstance(cert, x509.Certificate) else cert.subject_name
              ).get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


def hostname_cn(cert: x509.Certificate | CertItem) -> str | None:
    """The CN when it reads as a host name, else None (a CertItem's name is read once)."""
    cn = common_name(cert)
    return cn if cn and len(cn) <= 253 and _HOSTNAME.fullmatch(cn) else None


def names_a_host(item: CertItem) -> bool:
    return any(isinstance(n, (x509.DNSName, x509.IPAddress)) for n in item.sans) or hostname_cn(item) is not None


def ca_only_key_usage(cert: x509.Certificate | CertItem) -> bool:
    if isinstance(cert, CertItem):
        ku = cert.extension(x509.KeyUsage)
        if ku is None:
            return False
    else:
        try:
            ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        except (x509.ExtensionNotFound, ValueError):
            return False
    return ku.key_cert_sign and not (ku.digital_signature or ku.key_encipherment)


__all__ = ["ca_only_key_usage", "common_name", "hostname_cn", "names_a_host", "stem", "unit"]
