"""Talking to a trustyard CA over HTTPS, and writing what it returns to disk.

Used by the CLI and the renewal agent. The private key is generated here and never
leaves the machine: only the CSR is sent.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from . import errors
from .files import swap_generation
from .x509.keys import KeyType, PrivateKey, generate_private_key, private_key_pem, signature_hash
from .x509.names import Name, parse_names

_BY_STATUS: dict[int, type[errors.TrustyardError]] = {
    400: errors.BadRequest, 401: errors.Unauthorized, 403: errors.Forbidden, 404: errors.NotFound,
    409: errors.Conflict,
}


class CAUnavailable(errors.TrustyardError):
    """The CA could not be reached (network, TLS, 5xx): worth retrying later.

    ``maybe_delivered``: the request may have reached the CA and taken effect (the connection
    broke or timed out after it was sent, or the CA answered 5xx); False when no connection
    was made at all."""

    status = 503
    code = "caUnavailable"
    title = "CA unavailable"

    def __init__(self, detail: str, *, maybe_delivered: bool = False, **fields: Any) -> None:
        super().__init__(detail, **fields)
        self.maybe_delivered = maybe_delivered


def make_csr(key: PrivateKey, names: list[Name]) -> bytes:
    """A PEM CSR naming ``names`` as SANs; the subject is left empty (the CA decides it)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, signature_hash(key)).public_bytes(Encoding.PEM)  # type: ignore[arg-type]


def new_key_and_csr(key_type: KeyType, names: list[str]) -> tuple[PrivateKey, bytes]:
    key = generate_private_key(key_type)
    return key, make_csr(key, parse_names(names))


@dataclass(frozen=True)
class IssuedFiles:
    serial: str
    not_before: str
    not_after: str
    certificate_pem: str
    chain_pem: str
    roots_pem: str

    @classmethod
    def from_response(cls, doc: Any) -> "IssuedFiles":
        fields = ("serial", "not_before", "not_after", "certificate", "chain", "roots")
        if not isinstance(doc, dict) or not all(isinstance(doc.get(f), str) for f in fields):
            raise CAUnavailable("the CA's answer is not an issued certificate (a proxy in between?)")
        return cls(serial=doc["serial"], not_before=doc["not_before"], not_after=doc["not_after"],
                   certificate_pem=doc["certificate"], chain_pem=doc["chain"], roots_pem=doc["roots"])

    def write(self, out_dir: Path, key: PrivateKey) -> dict[str, str]:
        """``tls.key``, ``tls.crt`` and ``ca.crt`` replaced together (``files.swap_generation``):
        a reader never pairs the new certificate with the old key."""
        swap_generation(out_dir, {"tls.key": private_key_pem(key),
                                  "tls.crt": (self.certificate_pem + self.chain_pem).encode(),
                                  "ca.crt": self.roots_pem.encode()}, private=frozenset({"tls.key"}))
        return {"key": str(out_dir / "tls.key"), "certificate": str(out_dir / "tls.crt"), "ca": str(out_dir / "ca.crt")}


class CAClient:
    def __init__(self, url: str, verify: ssl.SSLContext | str | bool = True, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        if isinstance(verify, str):
            verify = ssl.create_default_context(cafile=verify)
        self.http = httpx.Client(base_url=self.url, verify=verify, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "CAClient":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CAUnavailable(f"cannot reach the CA at {self.url}: {exc}",
                                maybe_delivered=not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))) from None
        if response.status_code >= 400:
            raise _problem_error(response)
        return response

    def roots(self) -> str:
        return self._request("GET", "/v1/roots").text

    def roots_if_changed(self, etag: str | None) -> tuple[str, str | None] | None:
        """``(bundle, etag)``, or None when the bundle is still the one ``etag`` names."""
        response = self._request("GET", "/v1/roots", headers={"If-None-Match": etag} if etag else {})
        if response.status_code == 304:
            return None
        return response.text, response.headers.get("etag")

    def sign(self, csr_pem: bytes | str, token: str, ttl: str | None = None) -> IssuedFiles:
        body: dict[str, str] = {"csr": _text(csr_pem), "token": token}
        if ttl:
            body["ttl"] = ttl
        return IssuedFiles.from_response(_json(self._request("POST", "/v1/sign", json=body)))

    def renew(self, csr_pem: bytes | str, proof: str) -> IssuedFiles:
        return IssuedFiles.from_response(
            _json(self._request("POST", "/v1/renew", json={"csr": _text(csr_pem), "proof": proof})))

    def revoke(self, serial: str, reason: str = "unspecified", proof: str | None = None,
               admin_token: str | None = None) -> dict[str, Any]:
        body = {"serial": serial, "reason": reason}
        if proof:
            body["proof"] = proof
        headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
        return _json(self._request("POST", "/v1/revoke", json=body, headers=headers))

    def certificate_status(self, serial: str) -> dict[str, Any]:
        """What the CA's ledger says of ``serial`` (status, revocation, superseded_by); no token needed."""
        return self._request("GET", f"/v1/certificates/{serial}").json()

    def list(self, admin_token: str, status: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        response = self._request("GET", "/v1/certificates", params=params,
                                 headers={"Authorization": f"Bearer {admin_token}"})
        certificates = _json(response).get("certificates")
        if not isinstance(certificates, list):
            raise CAUnavailable("the CA's answer is not a list of certificates (a proxy in between?)")
        return certificates


def _json(response: httpx.Response) -> dict[str, Any]:
    """The JSON object the CA answers with; ``CAUnavailable`` for anything else (an HTML page
    of a proxy, a truncated body), which is worth retrying."""
    try:
        doc = response.json()
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise CAUnavailable(f"the CA answered {response.status_code} without a JSON object: "
                            f"{response.text[:100]!r}")
    return doc


def _problem_error(response: httpx.Response) -> errors.TrustyardError:
    try:
        doc = response.json()
        if not isinstance(doc, dict):
            raise ValueError("not a problem document")
        detail = str(doc.get("detail") or doc.get("title") or response.reason_phrase)
        code = str(doc.get("type", "")).rsplit(":", 1)[-1] or None
    except ValueError:
        detail, code, doc = response.text[:200] or response.reason_phrase, None, {}
    if response.status_code >= 500:
        return CAUnavailable(f"the CA answered {response.status_code}: {detail}", maybe_delivered=True)
    cls = _BY_STATUS.get(response.status_code, errors.TrustyardError)
    extra = {k: doc[k] for k in ("rule", "value") if isinstance(doc, dict) and k in doc}
    error = cls(detail, code=code, **extra)
    return error


def _text(data: bytes | str) -> str:
    return data.decode() if isinstance(data, bytes) else data


def load_key_file(path: Path) -> PrivateKey:
    from .x509.keys import load_private_key_pem

    try:
        return load_private_key_pem(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise errors.BadRequest(f"cannot load key {path}: {exc}") from None


def load_cert_chain_file(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise errors.BadRequest(f"cannot load certificates from {path}: {exc}") from None


__all__ = ["CAClient", "CAUnavailable", "IssuedFiles", "make_csr", "new_key_and_csr"]
