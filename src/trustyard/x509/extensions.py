"""The extensions a person checks on a certificate, named as ``openssl x509 -text`` names them."""

from __future__ import annotations

import ipaddress
from typing import Any, TypeVar

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from .names import name_text

_KEY_USAGE = (("digital_signature", "Digital Signature"), ("content_commitment", "Non Repudiation"),
              ("key_encipherment", "Key Encipherment"), ("data_encipherment", "Data Encipherment"),
              ("key_agreement", "Key Agreement"), ("key_cert_sign", "Certificate Sign"), ("crl_sign", "CRL Sign"))
_EKU = {ExtendedKeyUsageOID.SERVER_AUTH: "TLS Web Server Authentication",
        ExtendedKeyUsageOID.CLIENT_AUTH: "TLS Web Client Authentication",
        ExtendedKeyUsageOID.CODE_SIGNING: "Code Signing", ExtendedKeyUsageOID.EMAIL_PROTECTION: "E-mail Protection",
        ExtendedKeyUsageOID.TIME_STAMPING: "Time Stamping", ExtendedKeyUsageOID.OCSP_SIGNING: "OCSP Signing",
        ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "Any Extended Key Usage"}

_E = TypeVar("_E", bound=x509.ExtensionType)


def _ext(cert: x509.Certificate, cls: type[_E]) -> x509.Extension[_E] | None:
    try:
        return cert.extensions.get_extension_for_class(cls)
    except (x509.ExtensionNotFound, ValueError):
        return None


def _hex(data: bytes | None) -> str | None:
    return data.hex(":").upper() if data else None


def _general_name(name: x509.GeneralName) -> str:
    if isinstance(name, x509.IPAddress) and isinstance(name.value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return f"IP:{name.value}"
    text = name_text(name)
    if isinstance(name, x509.DNSName):
        return f"DNS:{text}"
    if isinstance(name, x509.IPAddress):
        return f"IP:{text}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"URI:{text}"
    return text


def extension_summary(cert: x509.Certificate) -> dict[str, Any]:
    """basicConstraints, key usage, extended key usage, name constraints, SKI and AKI (None when absent)."""
    doc: dict[str, Any] = {}
    bc = _ext(cert, x509.BasicConstraints)
    doc["basic_constraints"] = None if bc is None else {
        "ca": bc.value.ca, "path_length": bc.value.path_length, "critical": bc.critical}
    ku = _ext(cert, x509.KeyUsage)
    if ku is None:
        doc["key_usage"] = None
    else:
        names = [label for attr, label in _KEY_USAGE if getattr(ku.value, attr)]
        if ku.value.key_agreement:
            names += [label for attr, label in (("encipher_only", "Encipher Only"), ("decipher_only", "Decipher Only"))
                      if getattr(ku.value, attr)]
        doc["key_usage"] = {"usages": names, "critical": ku.critical}
    eku = _ext(cert, x509.ExtendedKeyUsage)
    doc["extended_key_usage"] = None if eku is None else {
        "usages": [_EKU.get(oid, oid.dotted_string) for oid in eku.value], "critical": eku.critical}
    nc = _ext(cert, x509.NameConstraints)
    doc["name_constraints"] = None if nc is None else {
        "permitted": [_general_name(n) for n in nc.value.permitted_subtrees or []],
        "excluded": [_general_name(n) for n in nc.value.excluded_subtrees or []], "critical": nc.critical}
    ski = _ext(cert, x509.SubjectKeyIdentifier)
    doc["subject_key_identifier"] = _hex(ski.value.digest) if ski is not None else None
    aki = _ext(cert, x509.AuthorityKeyIdentifier)
    doc["authority_key_identifier"] = _hex(aki.value.key_identifier) if aki is not None else None
    return doc


def extension_lines(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(openssl's name, value) rows for :func:`extension_summary`; absent extensions say so."""
    def critical(d: dict[str, Any]) -> str:
        return ", critical" if d["critical"] else ""

    bc = doc["basic_constraints"]
    if bc is None:
        basic = "(absent)"
    else:
        basic = f"CA:{'TRUE' if bc['ca'] else 'FALSE'}"
        basic += f", pathlen:{bc['path_length']}" if bc["path_length"] is not None else ""
        basic += critical(bc)
    rows = [("Basic Constraints", basic)]
    for key, label in (("key_usage", "Key Usage"), ("extended_key_usage", "Extended Key Usage")):
        value = doc[key]
        rows.append((label, "(absent)" if value is None else ", ".join(value["usages"]) + critical(value)))
    nc = doc["name_constraints"]
    if nc is not None:
        parts = ([f"permitted {', '.join(nc['permitted'])}"] if nc["permitted"] else []) + (
            [f"excluded {', '.join(nc['excluded'])}"] if nc["excluded"] else [])
        rows.append(("Name Constraints", "; ".join(parts) + critical(nc)))
    rows.append(("Subject Key Identifier", doc["subject_key_identifier"] or "(absent)"))
    rows.append(("Authority Key Identifier", doc["authority_key_identifier"] or "(absent)"))
    return rows
