"""Signing backends behind one narrow interface: the issuing certificate and ``sign``."""

from __future__ import annotations

from typing import Protocol

from cryptography import x509

from ..x509.keys import PrivateKey
from ..x509.profiles import sign


class Signer(Protocol):
    @property
    def certificate(self) -> x509.Certificate: ...

    def sign(self, builder: x509.CertificateBuilder) -> x509.Certificate: ...


class KeySigner:
    """A key held in memory (loaded from an encrypted file at start-up)."""

    def __init__(self, certificate: x509.Certificate, key: PrivateKey) -> None:
        from ..x509.keys import same_public_key

        if not same_public_key(certificate.public_key(), key.public_key()):  # type: ignore[arg-type]
            raise ValueError("the signing key does not belong to the issuing certificate")
        self._certificate = certificate
        self._key = key

    @property
    def certificate(self) -> x509.Certificate:
        return self._certificate

    def sign(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        return sign(builder, self._key)
