"""What each certificate is used as: a *service* certificate, a *root*, or both, judged by
what the scan saw it do rather than by basicConstraints alone (OpenSSL 3's
``openssl req -x509`` marks every self-signed certificate CA:TRUE, SAN or not).

A self-signed certificate is a root when it issued another certificate in the scan, or sits
in a trust store next to other roots. It is a service certificate when it names a host (a
DNS/IP SAN or a hostname-like CN), is paired with its private key, is served by an
endpoint, or issued nothing in the scan. A root that names a host and is also paired with
its key or served is both. A self-signed certificate whose keyUsage forbids serving TLS
(keyCertSign without digitalSignature or keyEncipherment, as CAs are made) is a root only.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict

from cryptography import x509
from cryptography.x509.oid import NameOID

from .model import CertItem, Inventory

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


def common_name(cert: x509.Certificate) -> str | None:
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


def hostname_cn(cert: x509.Certificate) -> str | None:
    """The CN when it reads as a host name, else None."""
    cn = common_name(cert)
    return cn if cn and len(cn) <= 253 and _HOSTNAME.fullmatch(cn) else None


def names_a_host(item: CertItem) -> bool:
    return any(isinstance(n, (x509.DNSName, x509.IPAddress)) for n in item.sans) or hostname_cn(item.cert) is not None


def _ca_only_key_usage(cert: x509.Certificate) -> bool:
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        return False
    return ku.key_cert_sign and not (ku.digital_signature or ku.key_encipherment)


def _issued_another(cert: x509.Certificate, fingerprint: str, children: list[CertItem]) -> bool:
    for child in children:
        if child.fingerprint == fingerprint:
            continue
        try:
            child.cert.verify_directly_issued_by(cert)
            return True
        except Exception:  # wrong key, unsupported algorithm: not its issuer
            continue
    return False


def classify(inv: Inventory) -> None:
    """Set ``service`` and ``root`` on every certificate of the inventory."""
    by_fp: dict[str, list[CertItem]] = defaultdict(list)
    by_issuer: dict[x509.Name, list[CertItem]] = defaultdict(list)
    for item in inv.certificates:
        by_fp[item.fingerprint].append(item)
        if not item.self_signed:
            by_issuer[item.cert.issuer].append(item)
            item.service, item.root = not item.is_ca, False
    self_signed_groups: dict[str, set[str]] = defaultdict(set)  # group -> fingerprints of self-signed certs
    for item in inv.certificates:
        if item.self_signed:
            self_signed_groups[item.group].add(item.fingerprint)
    keys_by_group: dict[str, set[str | None]] = defaultdict(set)
    for key in inv.keys:
        keys_by_group[key.group].add(key.spki)
    keys_by_unit: dict[tuple[str, str], set[str | None]] = defaultdict(set)
    for key in inv.keys:
        keys_by_unit[unit(key.group)].add(key.spki)

    for fp, items in by_fp.items():
        first = items[0]
        if not first.self_signed:
            continue
        cert = first.cert
        issued = _issued_another(cert, fp, by_issuer.get(cert.subject, []))
        among_roots = any(i.trust_store and len(self_signed_groups[i.group]) > 1 for i in items)
        used = any(
            (i.served and i.position == 0)
            or first.spki in keys_by_group.get(i.group, ())
            or first.spki in keys_by_unit.get(unit(i.group, i.served), ())
            for i in items
        )
        named = names_a_host(first)
        if _ca_only_key_usage(cert):
            root, service = True, False
        elif issued:  # a root; a host name and use as a server make it a service certificate as well
            root, service = True, named and used
        elif among_roots and not (named or used):  # a service certificate pinned in a bundle stays one
            root, service = True, False
        else:
            root, service = False, True
        for i in items:
            i.service, i.root = service, root


__all__ = ["classify", "common_name", "hostname_cn", "names_a_host", "stem", "unit"]
