"""OCSP test helpers: a CA home whose default provisioner asks for the AIA OCSP URL, requests
built with cryptography, responses parsed with it."""

from __future__ import annotations

import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from trustyard.ca.home import InitOptions, init_home

from ..support import PASSWORD


def ocsp_home(home: Path, url: str | None = None, ocsp_url: str | None = None) -> Path:
    """A CA for ``*.internal`` and 127.0.0.1 whose ``default`` provisioner has ``ocsp = true``."""
    init_home(home, PASSWORD, InitOptions(allow=("*.internal", "127.0.0.1/32")))
    toml = home / "trustyard.toml"
    text = toml.read_text()
    text = text.replace('name = "default"\n', 'name = "default"\nocsp = true\n', 1)
    if url:
        text = re.sub(r'(?m)^url = "https://127\.0\.0\.1:8443"$', f'url = "{url}"', text)
    if ocsp_url:
        text = text.replace("[server]\n", f'[server]\nocsp_url = "{ocsp_url}"\n', 1)
    toml.write_text(text)
    return home


def request_der(cert: x509.Certificate, issuer: x509.Certificate, algorithm: hashes.HashAlgorithm | None = None,
                nonce: bytes | None = None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm or hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(Encoding.DER)


def request_for_serial(serial: int, issuer: x509.Certificate) -> bytes:
    """A request naming ``issuer`` (by its name and key hashes) and any serial number."""
    from trustyard.x509.ocsp import issuer_keys

    (_alg, name_hash, key_hash) = issuer_keys(issuer)[0]  # sha1
    return (ocsp.OCSPRequestBuilder().add_certificate_by_hash(name_hash, key_hash, serial, hashes.SHA1())
            .build().public_bytes(Encoding.DER))


def parse(body: bytes) -> ocsp.OCSPResponse:
    return ocsp.load_der_ocsp_response(body)
