"""Talking to a trustyard CA over HTTPS, and writing what it returns to disk.

Used by the CLI and the renewal agent. The private key is generated here and never
leaves the machine: only the CSR is sent.

A CA that sheds load answers 503 (or 429) with ``Retry-After`` (``api/admission.py``): the
request did nothing there. ``CAClient`` sends it again after Retry-After plus jitter
(``retry_delay``), at most ``retries`` times (3 by default) and only when Retry-After is at
most ``max_retry_wait`` (60 s); then it raises ``CAUnavailable`` saying the CA is busy and
when to try again (its ``retry_after``). The agent passes ``retries=0`` and schedules the
next attempt itself.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
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
    was made at all, or the CA shed it (``overloaded``, 429). ``retry_after``: the seconds the
    CA's Retry-After asked to wait (None without one)."""

    status = 503
    code = "caUnavailable"
    title = "CA unavailable"

    def __init__(self, detail: str, *, maybe_delivered: bool = False, retry_after: float | None = None,
                 **fields: Any) -> None:
        super().__init__(detail, **fields)
        self.maybe_delivered = maybe_delivered
        self.retry_after = retry_after


RETRY_AFTER_JITTER = 0.5  # share of Retry-After added at random (at least 1 s, at most 60 s)
RETRY_AFTER_JITTER_CAP = 60.0


def retry_delay(retry_after: float, rng: random.Random | None = None) -> float:
    """When to ask again after a ``Retry-After`` of ``retry_after`` seconds: never earlier, and
    later by a uniform pick in ``[0, min(60, max(1, retry_after / 2))]`` seconds, so the clients
    a CA refused together do not come back together."""
    spread = min(RETRY_AFTER_JITTER_CAP, max(1.0, retry_after * RETRY_AFTER_JITTER))
    return max(retry_after, 0.0) + (rng or random).uniform(0, spread)


MAX_RETRY_AFTER = 86400.0  # a Retry-After longer than a day is taken for a mistake, not obeyed


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delay-seconds or an HTTP date); None when absent,
    unreadable or longer than ``MAX_RETRY_AFTER`` (a proxy's or a broken server's value must not
    park a client past its certificate's expiry, nor overflow its arithmetic)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        seconds = float(int(value)) if len(value) <= 12 else math.inf
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    return seconds if seconds <= MAX_RETRY_AFTER else None


class UntrustedServer(CAUnavailable):
    """The CA answered with a certificate the given root does not trust. A subclass of
    CAUnavailable so the agent keeps its files and backs off; a person is told which root
    was used, what the server sent and how to get the right root."""

    code = "untrustedServer"
    title = "CA server not trusted"


def transport_reason(exc: BaseException) -> str:
    """A network or TLS failure in words, without library internals (``_ssl.c`` lines, errno
    numbers, exception class names)."""
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {cause.verify_message}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS handshake failed: {(cause.reason or 'error').lower().replace('_', ' ')}"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused (is `trustyard serve` running on that port?)"
        if isinstance(cause, socket.gaierror):
            return "the host name does not resolve"
        if isinstance(cause, (TimeoutError, httpx.TimeoutException)):
            return "no answer in time"
        if isinstance(cause, ConnectionResetError):
            return "the connection was reset (is it a TLS port?)"
    return scrub(str(exc)) or type(exc).__name__


def scrub(text: str) -> str:
    """Drop what only a library author can read: ``(_ssl.c:1006)``, ``[SSL: X]``, ``[Errno 111]``."""
    text = re.sub(r"\s*\(_ssl\.c:\d+\)", "", text)
    return re.sub(r"\[(SSL: [A-Z_]+|SSL|X509: [A-Z_]+|Errno -?\d+)\]\s*", "", text).strip()


def _causes(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


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
class TrustBundle:
    """The CA's trust bundle as served: the PEM text, its version (None from a CA that does not
    number them), the SHA-256 of the PEM bytes, and the ETag to ask with next time."""

    pem: str
    version: int | None = None
    sha256: str = ""
    etag: str | None = None

    def __post_init__(self) -> None:
        if not self.sha256:
            object.__setattr__(self, "sha256", hashlib.sha256(self.pem.encode()).hexdigest())


@dataclass(frozen=True)
class IssuedFiles:
    serial: str
    not_before: str
    not_after: str
    certificate_pem: str
    chain_pem: str
    roots_pem: str
    bundle_version: int | None = None
    bundle_sha256: str | None = None

    @property
    def bundle(self) -> TrustBundle:
        """The trust bundle that came with the certificate."""
        return TrustBundle(self.roots_pem, self.bundle_version, self.bundle_sha256 or "")

    @classmethod
    def from_response(cls, doc: Any) -> IssuedFiles:
        fields = ("serial", "not_before", "not_after", "certificate", "chain", "roots")
        if not isinstance(doc, dict) or not all(isinstance(doc.get(f), str) for f in fields):
            raise CAUnavailable("the CA's answer is not an issued certificate (a proxy in between?)")
        version, digest = doc.get("bundle_version"), doc.get("bundle_sha256")
        return cls(serial=doc["serial"], not_before=doc["not_before"], not_after=doc["not_after"],
                   certificate_pem=doc["certificate"], chain_pem=doc["chain"], roots_pem=doc["roots"],
                   bundle_version=version if isinstance(version, int) and not isinstance(version, bool) else None,
                   bundle_sha256=digest if isinstance(digest, str) and _is_sha256(digest) else None)

    def write(self, out_dir: Path, key: PrivateKey) -> dict[str, str]:
        """``tls.key``, ``tls.crt`` and ``ca.crt`` replaced together (``files.swap_generation``):
        a reader never pairs the new certificate with the old key."""
        swap_generation(out_dir, {"tls.key": private_key_pem(key),
                                  "tls.crt": (self.certificate_pem + self.chain_pem).encode(),
                                  "ca.crt": self.roots_pem.encode()}, private=frozenset({"tls.key"}))
        return {"key": str(out_dir / "tls.key"), "certificate": str(out_dir / "tls.crt"), "ca": str(out_dir / "ca.crt")}


class CAClient:
    """The CA's REST API. A 503 or 429 with Retry-After is sent again after Retry-After plus
    jitter (``retry_delay``), at most ``retries`` times and only for a Retry-After of at most
    ``max_retry_wait`` seconds; then ``CAUnavailable`` (with ``retry_after``) says the CA is busy."""

    def __init__(self, url: str, verify: ssl.SSLContext | str | bool = True, timeout: float = 10.0,
                 retries: int = 3, max_retry_wait: float = 60.0, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None) -> None:
        self.url = url.rstrip("/")
        self.retries, self.max_retry_wait, self.sleep = retries, max_retry_wait, sleep
        self.rng = rng or random.Random()
        self.root_file = verify if isinstance(verify, str) else None
        if isinstance(verify, str):
            try:
                verify = ssl.create_default_context(cafile=verify)
            except ssl.SSLError:  # before OSError, its base class
                raise errors.ConfigError(f"root {verify}: no PEM certificate in it (expected the trust bundle "
                                         "`trustyard roots` writes)") from None
            except OSError as exc:
                raise errors.ConfigError(f"root {verify}: {exc.strerror or 'cannot read it'}") from None
        self.context = verify if isinstance(verify, ssl.SSLContext) else None
        self.http = httpx.Client(base_url=self.url, verify=verify, timeout=timeout)

    def add_trust(self, pem: str) -> bool:
        """Also trust the certificates of ``pem`` for the CA's server certificate, on new
        connections (a bundle the caller has accepted: after a root rotation retired the root it
        started with, the CA's server certificate chains only to the new one). False when this
        client has no context of its own (``verify`` True or False) or ``pem`` holds none."""
        if self.context is None:
            return False
        try:
            self.context.load_verify_locations(cadata=pem)
        except (ssl.SSLError, ValueError):
            return False
        return True

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> CAClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            try:
                return self._request_once(method, path, **kwargs)
            except CAUnavailable as exc:
                wait = exc.retry_after
                if wait is None or wait > self.max_retry_wait or attempt >= self.retries:
                    if wait is not None and attempt:
                        exc.detail = (f"{exc.detail} (still refused after {attempt + 1} attempts; the CA asks to "
                                      f"wait {wait:g}s: try again later)")
                        exc.args = (exc.detail,)
                    raise
                attempt += 1
                self.sleep(retry_delay(wait, self.rng))

    def _request_once(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            verify = next((c for c in _causes(exc) if isinstance(c, ssl.SSLCertVerificationError)), None)
            if verify is not None and self.root_file:
                raise UntrustedServer(untrusted_text(self.url, self.root_file, verify)) from None
            delivered = not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
            raise CAUnavailable(f"cannot reach the CA at {self.url}: {transport_reason(exc)}",
                                maybe_delivered=delivered) from None
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

    def bundle_if_changed(self, etag: str | None) -> TrustBundle | None:
        """The trust bundle with its version, or None when it is still the one ``etag`` names."""
        response = self._request("GET", "/v1/roots", headers={"If-None-Match": etag} if etag else {})
        if response.status_code == 304:
            return None
        version = response.headers.get("trustyard-bundle-version", "")
        digest = response.headers.get("trustyard-bundle-sha256", "")
        pem = response.text
        actual = hashlib.sha256(pem.encode()).hexdigest()
        if digest and digest.lower() != actual:
            raise CAUnavailable("the trust bundle does not match its Trustyard-Bundle-Sha256 header "
                                "(cut short, or changed by a proxy in between?)")
        return TrustBundle(pem, int(version) if version.isascii() and version.isdigit() else None, actual,
                           response.headers.get("etag"))

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

    def checkin(self, proof: str) -> dict[str, Any]:
        """A relying party's check-in (``ca.fleet``): the answer's ``directives``."""
        return _json(self._request("POST", "/v1/checkin", json={"proof": proof}))

    def fleet(self, admin_token: str, stale: bool = False) -> list[dict[str, Any]]:
        response = self._request("GET", "/v1/fleet", params={"stale": "1"} if stale else {},
                                 headers={"Authorization": f"Bearer {admin_token}"})
        parties = _json(response).get("parties")
        if not isinstance(parties, list):
            raise CAUnavailable("the CA's answer is not a list of relying parties (a proxy in between?)")
        return parties

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
        code = _known_code(str(doc.get("type", "")))
    except ValueError:
        detail, code, doc = response.text[:200] or response.reason_phrase, None, {}
    if response.status_code >= 500 or response.status_code == 429:
        shed = code == errors.Code.OVERLOADED or response.status_code == 429  # refused before any work
        return CAUnavailable(f"the CA answered {response.status_code}: {detail}", maybe_delivered=not shed,
                             retry_after=parse_retry_after(response.headers.get("retry-after")))
    cls = _BY_STATUS.get(response.status_code, errors.TrustyardError)
    extra = {k: doc[k] for k in ("rule", "value") if isinstance(doc, dict) and k in doc}
    error = cls(detail, code=code, **extra)
    return error


def _known_code(problem_type: str) -> errors.Code | None:
    """The code of a ``urn:trustyard:error:<code>`` type; None (the class's own code) for a code
    this version does not know (a newer CA) or another kind of type."""
    prefix, _, code = problem_type.rpartition(":")
    if prefix != "urn:trustyard:error":
        return None
    try:
        return errors.Code(code)
    except ValueError:
        return None


def served_certificate(url: str, timeout: float = 5.0) -> x509.Certificate | None:
    """The certificate the server at ``url`` presents, unverified (to say what it is, not to trust it)."""
    parsed = httpx.URL(url)
    context = ssl.create_default_context()
    # trustyard: allow-insecure reads the served chain to explain a verify failure; nothing is sent
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # trustyard: allow-insecure (as above)
    try:
        with (socket.create_connection((parsed.host, parsed.port or 443), timeout=timeout) as sock,
              context.wrap_socket(sock, server_hostname=parsed.host) as tls):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ValueError):
        return None
    return x509.load_der_x509_certificate(der) if der else None


def untrusted_text(url: str, root_file: str, error: ssl.SSLCertVerificationError) -> str:
    """What went wrong, with the root used, what the server sent, and the command that fetches
    the right root."""
    from .x509.summary import fingerprint_sha256

    try:
        roots = x509.load_pem_x509_certificates(Path(root_file).read_bytes())
    except (OSError, ValueError):
        roots = []
    used = "; ".join(f"{r.subject.rfc4514_string()} (sha256 {fingerprint_sha256(r)})" for r in roots) or "?"
    served = served_certificate(url)
    fix = (f"\n  fetch the CA's root, pinned by the fingerprint `trustyard init` printed on the CA host: "
           f"trustyard roots --ca-url {url} --fingerprint SHA256 --save")
    if error.verify_code == 62 and served is not None:  # X509_V_ERR_HOSTNAME_MISMATCH
        from .x509.names import name_text, sans_of

        names = ", ".join(name_text(n) for n in sans_of(served)) or "none"
        return (f"the CA at {url} is not trusted: its certificate is not valid for {httpx.URL(url).host} "
                f"(its names: {names}); use a URL with one of those names")
    issuer = served.issuer.rfc4514_string() if served is not None else "an issuer that could not be read"
    same_name = served is not None and any(r.subject == served.issuer for r in roots)
    return (f"the CA at {url} is not trusted by the root {root_file}: it served a certificate issued by "
            f"{issuer}, which does not chain to {used}"
            f"{' (same name, another key: that root belongs to another CA)' if same_name else ''}"
            f" ({error.verify_message}){fix}")


def _text(data: bytes | str) -> str:
    return data.decode() if isinstance(data, bytes) else data


def load_key_file(path: Path) -> PrivateKey:
    from .x509.keys import load_private_key_pem

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise errors.ConfigError(f"cannot read the key {path}: {exc.strerror or exc}") from None
    try:
        return load_private_key_pem(data)
    except (TypeError, ValueError) as exc:
        why = ("it is encrypted (give an unencrypted PEM key)" if b"ENCRYPTED" in data[:200] else
               str(exc) if str(exc).startswith("unsupported") else "no PEM private key in it")
        raise errors.ConfigError(f"cannot load the key {path}: {why}") from None


def load_cert_chain_file(path: Path) -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise errors.ConfigError(f"cannot read the certificate {path}: {exc.strerror or exc}") from None
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise errors.ConfigError(f"cannot load the certificate {path}: no PEM certificate in it") from None


__all__ = ["CAClient", "CAUnavailable", "IssuedFiles", "UntrustedServer", "make_csr", "new_key_and_csr",
           "parse_retry_after", "retry_delay"]


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)
