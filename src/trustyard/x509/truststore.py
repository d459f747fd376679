"""The trust bundle in the formats its consumers read: PEM, a PKCS#12 truststore, a Java
KeyStore and a Kubernetes ConfigMap manifest. Pure: certificates in, bytes out.

PKCS#12 and JKS hold only trusted certificates (no key); their password protects the
file's integrity, not a secret. Each certificate gets an alias from its common name and the
start of its SHA-256 fingerprint, so two roots with one name stay two entries.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, Encoding, pkcs12

from .summary import fingerprint_sha256, pem_bundle

FORMATS = ("pem", "p12", "jks", "configmap")
"""Every format ``render`` knows, in the order they are documented."""

PUBLIC_PASSWORD = "changeit"
"""The password of a truststore served over the API: the JDK's well-known default. A truststore
holds only public certificates, so the password guards nothing; the agent re-encodes with the
password from its own file."""

CONFIGMAP_NAME = "trustyard-roots"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def alias(cert: x509.Certificate) -> str:
    """The truststore entry name: the common name, lower case, then 16 hex digits of the fingerprint."""
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    cn = str(names[0].value) if names else "root"
    slug = re.sub(r"[^a-z0-9]+", "-", cn.lower()).strip("-") or "root"
    return f"{slug[:48]}-{fingerprint_sha256(cert).replace(':', '').lower()[:16]}"


def render_pem(certs: Sequence[x509.Certificate]) -> bytes:
    return pem_bundle(certs).encode()


def render_p12(certs: Sequence[x509.Certificate], password: str | bytes) -> bytes:
    """A PKCS#12 truststore (Java's ``-storetype PKCS12``): every certificate a trusted entry."""
    if not certs:
        raise ValueError("a truststore needs at least one certificate")
    entries = [pkcs12.PKCS12Certificate(c, alias(c).encode()) for c in certs]
    return pkcs12.serialize_java_truststore(entries, BestAvailableEncryption(_bytes(password)))


def render_jks(certs: Sequence[x509.Certificate], password: str | bytes) -> bytes:
    """A Java KeyStore (``-storetype JKS``) of trusted certificate entries."""
    import jks  # pyjks: imported here so the other formats do not pay for it

    if not certs:
        raise ValueError("a truststore needs at least one certificate")
    entries = [jks.TrustedCertEntry.new(alias(c), c.public_bytes(Encoding.DER)) for c in certs]
    keystore = jks.KeyStore.new("jks", entries)
    return bytes(keystore.saves(_bytes(password).decode("utf-8", "surrogateescape")))


def render_configmap(pem: str, version: int, sha256: str, name: str = CONFIGMAP_NAME,
                     namespace: str | None = None) -> bytes:
    """A ConfigMap manifest whose ``data["ca.crt"]`` is ``pem``, annotated with the version and digest."""
    if not _DNS_SUBDOMAIN.match(name):
        raise ValueError(f"ConfigMap name {name!r} is not a DNS subdomain (lower case letters, digits, '-', '.')")
    if namespace is not None and not _DNS_LABEL.match(namespace):
        raise ValueError(f"namespace {namespace!r} is not a DNS label (lower case letters, digits, '-')")
    metadata: dict[str, object] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    metadata["annotations"] = {"trustyard.dev/bundle-version": str(version), "trustyard.dev/bundle-sha256": sha256}
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {"ca.crt": pem}}
    return yaml.dump(doc, Dumper=_BlockDumper, sort_keys=False, width=1 << 16).encode()


class _BlockDumper(yaml.SafeDumper):
    """Multi-line text as a literal block (``|``), as people write PEM in manifests."""


_BlockDumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def render(fmt: str, certs: Sequence[x509.Certificate], *, pem: str, version: int, sha256: str,
           password: str | bytes = PUBLIC_PASSWORD, name: str = CONFIGMAP_NAME, namespace: str | None = None) -> bytes:
    """``fmt`` (one of ``FORMATS``) of the bundle ``certs``, whose PEM text is ``pem``."""
    if fmt == "pem":
        return pem.encode()
    if fmt == "p12":
        return render_p12(certs, password)
    if fmt == "jks":
        return render_jks(certs, password)
    if fmt == "configmap":
        return render_configmap(pem, version, sha256, name, namespace)
    raise ValueError(f"unknown trust bundle format {fmt!r} (one of {', '.join(FORMATS)})")


def _bytes(password: str | bytes) -> bytes:
    return password.encode() if isinstance(password, str) else password
