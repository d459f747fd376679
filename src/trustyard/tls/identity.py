"""Who is on the other end of a TLS connection, from the certificate it presented."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from cryptography import x509

from ..x509.names import Name, common_names, sans_of

PeerSource = ssl.SSLObject | ssl.SSLSocket | bytes | str | x509.Certificate | None


@dataclass(frozen=True)
class PeerIdentity:
    """The names a peer certificate proves. ``name`` is the one policies and logs use:
    the first SPIFFE-style URI SAN, else the first URI, else the first DNS name."""

    uris: tuple[str, ...]
    dns_names: tuple[str, ...]
    ips: tuple[str, ...]
    serial: int
    certificate: x509.Certificate

    @property
    def name(self) -> str:
        spiffe = [u for u in self.uris if u.lower().startswith("spiffe://")]
        for candidate in (*spiffe, *self.uris, *self.dns_names, *self.ips):
            return candidate
        # No SAN at all: legacy certificates; the CN is all there is.
        cns = common_names(self.certificate.subject)
        return cns[0] if cns else ""

    @property
    def names(self) -> tuple[str, ...]:
        """Every name, most specific first: URIs, then DNS names, then IPs."""
        return (*self.uris, *self.dns_names, *self.ips)

    @property
    def sans(self) -> tuple[Name, ...]:
        """The URI, DNS and IP SANs with their types, as identity rules match them: a URI
        rule only ever sees URI SANs, a DNS rule only DNS SANs."""
        return tuple(san for san in sans_of(self.certificate)
                     if isinstance(san, (x509.UniformResourceIdentifier, x509.DNSName, x509.IPAddress)))

    def __str__(self) -> str:
        return self.name


def identity_of(cert: x509.Certificate) -> PeerIdentity:
    uris, dns, ips = [], [], []
    for san in sans_of(cert):
        if isinstance(san, x509.UniformResourceIdentifier):
            uris.append(san.value)
        elif isinstance(san, x509.DNSName):
            dns.append(san.value.lower())
        elif isinstance(san, x509.IPAddress):
            ips.append(str(san.value))
    return PeerIdentity(tuple(uris), tuple(dns), tuple(ips), cert.serial_number, cert)


def peer_certificate(source: PeerSource) -> x509.Certificate | None:
    """The peer's leaf certificate from a connection, DER bytes, PEM text or a certificate."""
    if source is None:
        return None
    if isinstance(source, x509.Certificate):
        return source
    if isinstance(source, (ssl.SSLObject, ssl.SSLSocket)) or hasattr(source, "getpeercert"):
        # Positional: the low-level _ssl._SSLSocket (httpcore's "ssl_object") takes no keywords.
        der = source.getpeercert(True)
        return x509.load_der_x509_certificate(der) if der else None
    if isinstance(source, str):
        return x509.load_pem_x509_certificate(source.encode("ascii"))
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    raise TypeError(f"cannot get a peer certificate from {type(source).__name__}")


def peer_identity(source: PeerSource) -> PeerIdentity | None:
    """The identity of the peer (URI SAN first, else DNS names), or None when it sent
    no certificate. Accepts an ``SSLObject``/``SSLSocket`` after the handshake, a DER or
    PEM certificate, or a ``cryptography`` certificate."""
    cert = peer_certificate(source)
    return identity_of(cert) if cert is not None else None
