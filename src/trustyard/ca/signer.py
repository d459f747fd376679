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


class DelayedSigner:
    """A test knob, like Pebble's: ``signer`` made ``delay_s`` slower per signature (the worker
    is busy meanwhile, as with a slow HSM), so that a crash test's ``kill -9`` finds issuances
    between their recorded intent and their stored certificate. ``serve`` wraps its signer in
    one when ``TRUSTYARD_TEST_SIGN_DELAY_MS`` is set; never set it in production."""

    def __init__(self, signer: Signer, delay_s: float) -> None:
        self._signer, self.delay_s = signer, delay_s

    @property
    def certificate(self) -> x509.Certificate:
        return self._signer.certificate

    def sign(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        import time

        time.sleep(self.delay_s)
        return self._signer.sign(builder)
