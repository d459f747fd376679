"""Live checks: what an endpoint serves, and a verifying handshake with one location's trust
material alone and hostname checking on; on failure the doctor names the layer."""

from __future__ import annotations

import os
import socket
import ssl
import tempfile
import time
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..diagnose.doctor import diagnose
from ..diagnose.probe import probe
from ..inventory.endpoints import Endpoint


def served(endpoint: str, name: str | None, timeout: float) -> tuple[list[x509.Certificate], str | None]:
    """The chain the endpoint sends, or the network error that kept it from answering."""
    ep = Endpoint.parse(endpoint)
    result = probe(ep.host, ep.port, sni=ep.sni or name, timeout=timeout)
    if result.network_error:
        return [], f"{endpoint} is unreachable ({result.network_error}: {result.network_detail})"
    if not result.chain:
        return [], f"{endpoint} sent no certificate ({result.tls_error})"
    return result.chain, None


def leaf_for(endpoint: str, name: str, timeout: float) -> tuple[x509.Certificate | None, str | None]:
    """The leaf the endpoint sends a client asking for ``name`` (SNI ``name``, whatever SNI the
    endpoint was given with), or why there is none."""
    ep = Endpoint.parse(endpoint)
    result = probe(ep.host, ep.port, sni=name, timeout=timeout)
    if result.network_error:
        return None, f"{endpoint} is unreachable ({result.network_error}: {result.network_detail})"
    if not result.chain:
        return None, f"{endpoint} sent no certificate for {name} ({result.tls_error})"
    return result.chain[0], None


def wait_for_leaf(endpoint: str, name: str | None, spki_der: bytes, wait: float, timeout: float) -> str | None:
    """Poll until the endpoint serves a leaf with this public key; the last problem otherwise."""
    deadline = time.monotonic() + wait
    while True:
        chain, problem = served(endpoint, name, timeout)
        if chain and _spki(chain[0]) == spki_der:
            return None
        if chain:
            problem = (f"{endpoint} still serves {chain[0].subject.rfc4514_string()} "
                       f"(issuer {chain[0].issuer.rfc4514_string()}), not the CA-issued certificate")
        if time.monotonic() >= deadline:
            return problem
        time.sleep(0.5)


def _spki(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives.serialization import PublicFormat

    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def handshake(endpoint: str, name: str, anchors: Sequence[x509.Certificate], timeout: float) -> str | None:
    """None when a client trusting only ``anchors`` and checking ``name`` completes a handshake;
    else the doctor's classification (layer, code, summary)."""
    if not anchors:
        return "the location holds no certificate to trust"
    ep = Endpoint.parse(endpoint)
    fd, path = tempfile.mkstemp(prefix="trustyard-migrate-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(b"".join(c.public_bytes(Encoding.PEM) for c in anchors))
        ctx = ssl.create_default_context(cafile=path)
        try:
            with (socket.create_connection((ep.host.strip("[]"), ep.port), timeout=timeout) as raw,
                  ctx.wrap_socket(raw, server_hostname=name) as tls):
                tls.sendall(f"HEAD / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
            return None
        except (OSError, ssl.SSLError, ssl.CertificateError) as exc:
            target = f"[{ep.host}]:{ep.port}" if ":" in ep.host else f"{ep.host}:{ep.port}"
            verdict = diagnose(target, ca_files=[path], name=name, timeout=timeout)
            if verdict.ok:
                return f"handshake failed: {exc}"
            return f"{verdict.layer}/{verdict.code}: {verdict.summary}"
    finally:
        os.unlink(path)
