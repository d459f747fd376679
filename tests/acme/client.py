"""A deliberately small ACME client for tests: it signs whatever it is told to, so tests can
also send what a correct client never would."""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from trustyard.acme.jws import jwk_of

JOSE = {"Content-Type": "application/jose+json"}


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class AccountKey:
    def __init__(self, alg: str = "ES256", key: Any = None) -> None:
        self.alg = alg
        if key is None:
            key = {"ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
                   "ES384": lambda: ec.generate_private_key(ec.SECP384R1()),
                   "RS256": lambda: rsa.generate_private_key(65537, 2048),
                   "EdDSA": ed25519.Ed25519PrivateKey.generate}[alg]()
        self.key = key
        self.jwk_obj = jwk_of(key.public_key())
        self.jwk = dict(self.jwk_obj.members)
        self.thumbprint = self.jwk_obj.thumbprint

    def sign_raw(self, data: bytes) -> bytes:
        key = self.key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            size = (key.curve.key_size + 7) // 8
            r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA384() if size == 48 else hashes.SHA256())))
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return key.sign(data)

    def jws(self, protected: dict[str, Any], payload: Any) -> dict[str, str]:
        """payload: None = POST-as-GET (empty), bytes/str = raw, anything else = JSON."""
        if payload is None:
            payload_b64 = ""
        elif isinstance(payload, (bytes, str)):
            payload_b64 = b64(payload)
        else:
            payload_b64 = b64(json.dumps(payload))
        protected_b64 = b64(json.dumps(protected))
        signature = self.sign_raw(f"{protected_b64}.{payload_b64}".encode())
        return {"protected": protected_b64, "payload": payload_b64, "signature": b64(signature)}


class Acme:
    """One account's view of one directory, over any httpx-like client (TestClient or httpx.Client)."""

    def __init__(self, http: Any, directory_url: str, key: AccountKey | None = None) -> None:
        self.http = http
        self.directory = http.get(directory_url).json()
        self.key = key or AccountKey()
        self.kid: str | None = None
        self.saved_nonce: str | None = None

    def nonce(self) -> str:
        """The nonce of the last response, as real clients do, else a new one."""
        nonce, self.saved_nonce = self.saved_nonce, None
        return nonce or self.http.head(self.directory["newNonce"]).headers["Replay-Nonce"]

    def post(self, url: str, payload: Any = None, *, use_jwk: bool = False, key: AccountKey | None = None,
             protected: dict[str, Any] | None = None, retries: int = 3) -> Any:
        key = key or self.key
        for _ in range(retries):
            header: dict[str, Any] = {"alg": key.alg, "nonce": self.nonce(), "url": url}
            if use_jwk or self.kid is None:
                header["jwk"] = key.jwk
            else:
                header["kid"] = self.kid
            header.update(protected or {})
            response = self.http.post(url, content=json.dumps(key.jws(header, payload)), headers=JOSE)
            self.saved_nonce = response.headers.get("Replay-Nonce")
            if response.status_code == 400 and "badNonce" in response.text:
                continue  # the rejection knob may be on
            return response
        return response

    def register(self, **payload: Any) -> Any:
        response = self.post(self.directory["newAccount"], {"termsOfServiceAgreed": True, **payload}, use_jwk=True)
        if response.status_code in (200, 201):
            self.kid = response.headers["Location"]
        return response

    def new_order(self, *names: str) -> Any:
        idents = [{"type": "ip" if _is_ip(n) else "dns", "value": n} for n in names]
        return self.post(self.directory["newOrder"], {"identifiers": idents})

    def key_authorization(self, token: str) -> str:
        return f"{token}.{self.key.thumbprint}"


def _is_ip(name: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def csr_der(key: Any, names: list[x509.GeneralName], ca: bool = False) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.DER)
