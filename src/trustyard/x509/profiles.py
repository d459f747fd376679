"""Certificate profiles: root, intermediate (optionally name-constrained) and leaf.

Each builder returns an *unsigned* ``CertificateBuilder`` so the CA layer decides which
key signs it; ``sign`` picks the right hash for the signing key.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .keys import PrivateKey, PublicKey, signature_hash
from .names import Name

EKU_BY_NAME = {
    "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH,
    "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "codeSigning": ExtendedKeyUsageOID.CODE_SIGNING,
    "emailProtection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
}


def new_serial() -> int:
    """A positive serial of 159 CSPRNG bits: more than the 64 required, and <= 20 octets in DER."""
    return x509.random_serial_number()


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = []
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )


def root_builder(
    public_key: PublicKey, common_name: str, not_before: datetime, lifetime: timedelta,
    organization: str | None = None,
) -> x509.CertificateBuilder:
    subject = _name(common_name, organization)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(new_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_before + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


# RFC 6761 reserves the "invalid" TLD: no real name is under it. A permitted subtree there shuts
# a name type (DNS, URI host, email host) in OpenSSL (and DNS and email in cryptography's
# verifier), where an excluded empty name is ignored by OpenSSL (URI, email) or refused as
# malformed by cryptography (DNS). Not the bare TLD: pkilint wants a host name with a dot.
NOWHERE = "nowhere.invalid"


@dataclass(frozen=True)
class NameLimits:
    """Subtrees an intermediate may issue for, derived from the provisioners' policies.

    Every name type is constrained: to the subtrees listed, else shut (DNS, URI and email to
    ``nowhere.invalid``, IP addresses by excluding 0.0.0.0/0 and ::/0). Email is always shut:
    no policy issues it. ``any_dns`` / ``any_uri`` leave that one type open (a ``*`` pattern,
    a URI pattern whose host has no fixed suffix); ``unrestricted`` drops the extension."""

    dns: tuple[str, ...] = ()
    ips: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    uri_hosts: tuple[str, ...] = ()
    any_dns: bool = False
    any_uri: bool = False
    unrestricted: bool = False

    def extension(self) -> x509.NameConstraints | None:
        if self.unrestricted:
            return None
        permitted: list[x509.GeneralName] = []
        if not self.any_dns:
            permitted += [x509.DNSName(d) for d in self.dns or (NOWHERE,)]
        permitted += [x509.IPAddress(n) for n in self.ips]
        if not self.any_uri:
            permitted += [x509.UniformResourceIdentifier(h) for h in self.uri_hosts or (NOWHERE,)]
        permitted.append(x509.RFC822Name(NOWHERE))
        excluded: list[x509.GeneralName] = []
        if not self.ips:
            # No IP SAN is allowed: say so, or an unconstrained IP type would be implied.
            excluded = [x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
                        x509.IPAddress(ipaddress.ip_network("::/0"))]
        return x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=excluded or None)


def intermediate_builder(
    public_key: PublicKey, issuer: x509.Certificate, common_name: str, not_before: datetime,
    lifetime: timedelta, limits: NameLimits | None = None, organization: str | None = None,
    path_length: int = 0,
) -> x509.CertificateBuilder:
    """``path_length``: how many intermediates may follow this one (0: it signs leaves only)."""
    not_after = min(not_before + lifetime, issuer.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organization))
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(new_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_aki(issuer), critical=False)
    )
    constraints = limits.extension() if limits else None
    if constraints is not None:
        builder = builder.add_extension(constraints, critical=True)
    return builder


def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]


@dataclass(frozen=True)
class LeafSpec:
    """Everything a leaf certificate is made of, already decided by policy."""

    public_key: PublicKey
    names: tuple[Name, ...]
    not_before: datetime
    not_after: datetime
    serial: int
    eku: tuple[str, ...] = ("serverAuth", "clientAuth")
    common_name: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    ocsp_url: str | None = None  # Authority Information Access: the OCSP responder
    crl_url: str | None = None  # for a CRL Distribution Points extension


def leaf_builder(spec: LeafSpec, issuer: x509.Certificate) -> x509.CertificateBuilder:
    if not spec.names:
        raise ValueError("a leaf certificate needs at least one subject alternative name")
    is_rsa = isinstance(spec.public_key, rsa.RSAPublicKey)
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=is_rsa,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )
    subject = _name(spec.common_name) if spec.common_name else x509.Name([])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(spec.public_key)
        .serial_number(spec.serial)
        .not_valid_before(spec.not_before)
        .not_valid_after(spec.not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        # An empty subject makes the SAN the only identity, so RFC 5280 wants it critical.
        .add_extension(x509.SubjectAlternativeName(list(spec.names)), critical=not spec.common_name)
        .add_extension(_aki(issuer), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(spec.public_key), critical=False)
    )
    if spec.eku:
        try:
            oids = [EKU_BY_NAME[e] for e in spec.eku]
        except KeyError as exc:
            raise ValueError(f"unknown extended key usage {exc.args[0]!r}") from None
        builder = builder.add_extension(x509.ExtendedKeyUsage(oids), critical=False)
    if spec.ocsp_url:
        builder = builder.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            x509.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(spec.ocsp_url))]), critical=False)
    if spec.crl_url:
        builder = builder.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(spec.crl_url)], relative_name=None, reasons=None,
            crl_issuer=None)]), critical=False)
    return builder


def sign(builder: x509.CertificateBuilder, key: PrivateKey) -> x509.Certificate:
    return builder.sign(key, signature_hash(key))  # type: ignore[arg-type]
