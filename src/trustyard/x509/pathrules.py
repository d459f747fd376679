"""RFC 5280 rules for one path ``leaf -> intermediates -> anchor``.

:func:`pyca_problem` runs pyca/cryptography's verifier on exactly that path with the
server or client rules; :func:`path_problem` adds what it does not check (key identifiers
on CAs, a root's AKI, criticality of name and policy constraints); :func:`fallback_problem`
applies the CA rules here for the chains cryptography refuses to look at: Ed25519, and a
peer with a URI or email SAN below a CA that constrains that name type (cryptography
answers "unsupported name constraint" for those; trustyard's own intermediates constrain
URIs, so every SPIFFE leaf it issues is such a chain).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from .chain import authority_key_id, check_validity, label, subject_key_id
from .leaf import Problem
from .names import name_text, sans_of
from .summary import is_self_signed

_WANTED = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}
_EDWARDS = (x509.SignatureAlgorithmOID.ED25519, x509.SignatureAlgorithmOID.ED448)

# Extensions these rules (or cryptography's) understand: any other marked critical is refused.
UNDERSTOOD = {
    ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE, ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME, ExtensionOID.NAME_CONSTRAINTS, ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER, ExtensionOID.CERTIFICATE_POLICIES, ExtensionOID.POLICY_CONSTRAINTS,
    ExtensionOID.CRL_DISTRIBUTION_POINTS, ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
}


def _invalid(detail: str) -> Problem:
    return Problem("trust", "invalid_chain", detail)


def pyca_usable(path: Sequence[x509.Certificate]) -> str | None:
    """Why cryptography's verifier cannot judge this path, or None when it can."""
    for cert in path:
        if isinstance(cert.public_key(), (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)) or \
                cert.signature_algorithm_oid in _EDWARDS:
            return "Ed25519"
    peer_types = {type(san) for san in sans_of(path[0])} & set(_OWN_CONSTRAINT_TYPES)
    for cert in path[1:]:
        try:
            nc = cert.extensions.get_extension_for_class(x509.NameConstraints).value
        except x509.ExtensionNotFound:
            continue
        constrained = {type(t) for t in (*(nc.permitted_subtrees or ()), *(nc.excluded_subtrees or ()))}
        for kind in peer_types & constrained:
            return f"{_OWN_CONSTRAINT_TYPES[kind]} name constraints"
    return None


# Name types whose constraints cryptography's verifier does not evaluate; these rules do.
_OWN_CONSTRAINT_TYPES: dict[type, str] = {x509.UniformResourceIdentifier: "URI", x509.RFC822Name: "email"}


def path_problem(path: Sequence[x509.Certificate], usage: str) -> Problem | None:
    """The rules cryptography leaves out, on every path."""
    anchor = path[-1]
    for cert in path[1:-1]:  # a leaf without AKI is common in hand-made chains and harmless to path building
        if not is_self_signed(cert) and authority_key_id(cert) is None:
            return _invalid(f"{label(cert)} has no authorityKeyIdentifier (RFC 5280 4.2.1.1)")
    for cert in path[1:]:
        if subject_key_id(cert) is None:
            return _invalid(f"the CA {label(cert)} has no subjectKeyIdentifier (RFC 5280 4.2.1.2)")
        key = cert.public_key()
        if isinstance(key, rsa.RSAPublicKey) and key.key_size % 8:
            return _invalid(f"the CA {label(cert)} has an RSA modulus of {key.key_size} bits, not whole bytes")
        try:
            ext = cert.extensions.get_extension_for_oid(ExtensionOID.POLICY_CONSTRAINTS)
        except x509.ExtensionNotFound:
            pass
        else:
            if not ext.critical:
                return _invalid(f"{label(cert)} has a non-critical policyConstraints extension "
                                "(RFC 5280 4.2.1.11: MUST be critical)")
    if len(path) > 1 and anchor.subject == anchor.issuer:
        try:
            aki = anchor.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        except x509.ExtensionNotFound:
            return None
        if aki.authority_cert_issuer is not None or aki.authority_cert_serial_number is not None:
            return _invalid(f"the root {label(anchor)} names an issuer or serial in its authorityKeyIdentifier")
        if aki.key_identifier is None or aki.key_identifier != subject_key_id(anchor):
            return _invalid(f"the root {label(anchor)} has an authorityKeyIdentifier that is not its own key id")
    return None


def _ca_eku(usage: str) -> Any:
    wanted = _WANTED[usage]

    def check(policy: object, cert: x509.Certificate, ext: x509.ExtendedKeyUsage | None) -> None:
        if ext is not None and wanted not in ext and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in ext:
            raise ValueError(f"the CA {label(cert)} may not issue for {usage}Auth (its extendedKeyUsage)")

    return check


def pyca_problem(path: Sequence[x509.Certificate], usage: str, name: x509.DNSName | x509.IPAddress | None,
                 at: datetime, max_depth: int | None) -> Problem | None:
    """cryptography's verdict on exactly this path, with the rules for ``usage``.

    Its CA policy is the Web PKI one, except that a CA's EKU is judged for the usage at
    hand (a public intermediate limited to serverAuth is fine for a server). The peer's
    own EKU, keyUsage and basicConstraints are :mod:`.leaf`'s business.
    """
    from cryptography.x509.verification import (
        Criticality,
        ExtensionPolicy,
        PolicyBuilder,
        Store,
        VerificationError,
    )

    ca_policy = ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _ca_eku(usage))
    ee_policy = (ExtensionPolicy.webpki_defaults_ee()
                 .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, None)
                 .may_be_present(x509.BasicConstraints, Criticality.AGNOSTIC, None)
                 .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, None))
    if name is None:  # no name to match: whether the SANs fit is the caller's question
        ee_policy = ee_policy.may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    builder = PolicyBuilder().store(Store([path[-1]])).time(at).extension_policies(
        ca_policy=ca_policy, ee_policy=ee_policy)
    if max_depth is not None:
        builder = builder.max_chain_depth(max_depth)
    try:
        verifier: Any = builder.build_server_verifier(name) if usage == "server" and name is not None \
            else builder.build_client_verifier()
        verifier.verify(path[0], list(path[1:-1]))
    except (VerificationError, ValueError) as exc:
        text = str(exc)
        if name is not None and "subjectAltName" in text and "matching" in text:
            return Problem("identity", "hostname_mismatch", f"{name.value} does not match the certificate: {text}")
        return _invalid(f"the chain does not verify: {text}")
    return None


def fallback_problem(path: Sequence[x509.Certificate], usage: str, at: datetime,
                     max_depth: int | None) -> Problem | None:
    """RFC 5280 CA rules over a path already linked by signatures (leaf first, anchor last)."""
    for cert in path:
        for ext in cert.extensions:
            if ext.critical and ext.oid not in UNDERSTOOD:
                return _invalid(f"{label(cert)} has a critical extension nobody here understands: "
                                f"{ext.oid.dotted_string}")
    intermediates = len(path) - 2
    if max_depth is not None and intermediates > max_depth:
        return _invalid(f"the path has {intermediates} intermediates, at most {max_depth} allowed")
    check_eku = _ca_eku(usage)
    for depth, issuer in enumerate(path[1:]):
        who = label(issuer)
        try:
            bc = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            bc = None
        if bc is None or not bc.ca:
            return _invalid(f"{who} signed a certificate but is not a CA (basicConstraints)")
        try:
            ku = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
            if not ku.key_cert_sign:
                return _invalid(f"{who} may not sign certificates (keyUsage without keyCertSign)")
        except x509.ExtensionNotFound:
            pass
        if bc.path_length is not None and depth > bc.path_length:
            return _invalid(f"{who} allows {bc.path_length} intermediate(s) below it, the path has {depth}")
        try:
            check_eku(None, issuer, _eku(issuer))
        except ValueError as exc:
            return _invalid(str(exc))
        for below in path[:depth + 1]:
            problem = name_constraints_problem(issuer, below)
            if problem:
                return _invalid(problem)
    window = check_validity(path, at)
    if window is not None:
        return Problem("validity", window.code, window.detail)
    return None


def _eku(cert: x509.Certificate) -> x509.ExtendedKeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None


def name_constraints_problem(issuer: x509.Certificate, cert: x509.Certificate) -> str | None:
    """A SAN of ``cert`` outside ``issuer``'s name constraints (DNS, IP, URI host)."""
    try:
        nc = issuer.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return None
    if cert is issuer:
        return None
    for san in sans_of(cert):
        kind = type(san)
        permitted = [p for p in nc.permitted_subtrees or () if type(p) is kind]
        excluded = [p for p in nc.excluded_subtrees or () if type(p) is kind]
        if (permitted or excluded) and isinstance(san, x509.RFC822Name) and san.value.count("@") != 1:
            return f"the email address {san.value!r} is malformed, below the name constraints of {label(issuer)}"
        if any(_within(san, e) for e in excluded) or (permitted and not any(_within(san, p) for p in permitted)):
            return f"{name_text(san)} is outside the name constraints of {label(issuer)}"
    return None


def _within(name: x509.GeneralName, subtree: x509.GeneralName) -> bool:
    if isinstance(name, x509.DNSName):
        host, base = name.value.lower().rstrip("."), str(subtree.value).lower().lstrip(".")
        return host == base or host.endswith("." + base)
    if isinstance(name, x509.IPAddress):
        return isinstance(subtree.value, (ipaddress.IPv4Network, ipaddress.IPv6Network)) and \
            not isinstance(name.value, (ipaddress.IPv4Network, ipaddress.IPv6Network)) and \
            name.value in subtree.value
    if isinstance(name, x509.UniformResourceIdentifier):  # RFC 5280 4.2.1.10: the host part
        authority = name.value.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
        host = authority.rsplit("]", 1)[0] + "]" if authority.startswith("[") else authority.split(":", 1)[0]
        return _host_within(host.lower(), str(subtree.value).lower())
    if isinstance(name, x509.RFC822Name):  # a mailbox, a host, or .domain for hosts below it
        base = str(subtree.value).lower()
        mailbox = name.value.lower()
        return mailbox == base if "@" in base else _host_within(mailbox.rsplit("@", 1)[-1], base)
    return True


def _host_within(host: str, base: str) -> bool:
    return host.endswith(base) and len(host) > len(base) if base.startswith(".") else host == base
