"""The scenario matrix: one broken (or healthy) TLS server per case, on loopback.

Each scenario says what doctor must answer (layer, code) and how a client is configured
(trust bundle, expected name, client certificate), so curl, Python, Node, OpenSSL and
Java can be pointed at the same server and their error text fed to explain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from trustyard.testing import Leaf, TestCA, pem, self_signed

from .servers import DAY, NOW, Server


@dataclass
class Live:
    name: str
    server: Server
    ca_file: Path  # the bundle the client trusts
    host_name: str  # the name the client expects
    layer: str | None
    code: str | None
    client_cert: tuple[Path, Path] | None = None
    connect_host: str = "127.0.0.1"
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"https://{self.host_name}:{self.port}/"

    @property
    def target(self) -> str:
        host = "localhost" if self.host_name == "localhost" else self.connect_host
        return f"{host}:{self.port}"


@dataclass
class PKI:
    root: TestCA
    inter: TestCA
    other: TestCA  # a CA nobody trusts
    ca_file: Path
    base: Path


def make_pki(base: Path) -> PKI:
    root = TestCA("Scenario", intermediates=0)
    inter = root.child("Scenario Intermediate")
    other = TestCA("Stranger", intermediates=0)
    ca_file = base / "ca.crt"
    ca_file.write_bytes(root.pem())
    return PKI(root, inter, other, ca_file, base)


def _serve(pki: PKI, name: str, leaf: Leaf, extra: list | None = None, chain: bool = True,  # type: ignore[type-arg]
           **server_kw: object) -> Server:
    d = pki.base / name
    crt, key = leaf.write_pair(d, chain=chain)
    if extra:
        crt.write_bytes(crt.read_bytes() + b"".join(pem(c) for c in extra))
    return Server(cert=crt, key=key, **server_kw)  # type: ignore[arg-type]


def _client_ca(pki: PKI, name: str) -> Path:
    p = pki.base / f"{name}-clients.crt"
    p.write_bytes(pki.root.pem())
    return p


Builder = Callable[[PKI], Live]


def self_signed_leaf(pki: PKI) -> Live:
    return Live("self_signed_leaf", _serve(pki, "ss", self_signed("localhost", cn="localhost")), pki.ca_file,
                "localhost", "trust", "self_signed_leaf")


def unknown_ca(pki: PKI) -> Live:
    stranger = pki.other.child("Stranger Intermediate")
    return Live("unknown_ca", _serve(pki, "unk", stranger.issue("localhost")), pki.ca_file, "localhost",
                "trust", "unknown_issuer")


def missing_intermediate(pki: PKI) -> Live:
    return Live("missing_intermediate", _serve(pki, "mi", pki.inter.issue("localhost"), chain=False), pki.ca_file,
                "localhost", "trust", "missing_intermediate")


def root_in_chain(pki: PKI) -> Live:
    stranger = pki.other.child("Stranger Intermediate")
    return Live("root_in_chain", _serve(pki, "ric", stranger.issue("localhost"), extra=[pki.other.cert]),
                pki.ca_file, "localhost", "trust", "root_in_chain_untrusted")


def san_mismatch(pki: PKI) -> Live:
    return Live("san_mismatch", _serve(pki, "san", pki.inter.issue("other.internal")), pki.ca_file, "localhost",
                "identity", "hostname_mismatch")


def ip_without_ip_san(pki: PKI) -> Live:
    return Live("ip_without_ip_san", _serve(pki, "ip", pki.inter.issue("localhost")), pki.ca_file, "127.0.0.1",
                "identity", "ip_not_in_san")


def cn_only(pki: PKI) -> Live:
    return Live("cn_only", _serve(pki, "cn", pki.inter.issue(cn="localhost")), pki.ca_file, "localhost",
                "identity", "cn_only")


def wildcard_too_deep(pki: PKI) -> Live:
    return Live("wildcard_too_deep", _serve(pki, "wc", pki.inter.issue("*.localhost")), pki.ca_file,
                "a.b.localhost", "identity", "wildcard_mismatch")


def expired_leaf(pki: PKI) -> Live:
    leaf = pki.inter.issue("localhost", not_before=NOW - 30 * DAY, not_after=NOW - DAY)
    return Live("expired_leaf", _serve(pki, "exp", leaf), pki.ca_file, "localhost", "validity", "expired")


def expired_intermediate(pki: PKI) -> Live:
    old = pki.root.child("Old Intermediate", not_before=NOW - 400 * DAY, lifetime=365 * DAY)
    leaf = old.issue("localhost")
    return Live("expired_intermediate", _serve(pki, "expi", leaf), pki.ca_file, "localhost", "validity", "expired")


def not_yet_valid(pki: PKI) -> Live:
    leaf = pki.inter.issue("localhost", not_before=NOW + 2 * DAY, not_after=NOW + 30 * DAY)
    return Live("not_yet_valid", _serve(pki, "nyv", leaf), pki.ca_file, "localhost", "validity", "not_yet_valid")


def client_cert_required(pki: PKI) -> Live:
    server = _serve(pki, "ccr", pki.inter.issue("localhost"), client_ca=_client_ca(pki, "ccr"))
    return Live("client_cert_required", server, pki.ca_file, "localhost", "client_auth", "client_cert_required")


def client_cert_wrong_ca(pki: PKI) -> Live:
    server = _serve(pki, "ccw", pki.inter.issue("localhost"), client_ca=_client_ca(pki, "ccw"))
    stranger = pki.other.issue("client.internal")
    d = pki.base / "ccw-client"
    crt, key = stranger.write_pair(d, "client")
    return Live("client_cert_wrong_ca", server, pki.ca_file, "localhost", "client_auth", "client_cert_rejected",
                client_cert=(crt, key))


def plain_http(pki: PKI) -> Live:
    return Live("plain_http", Server(plain=True), pki.ca_file, "localhost", "protocol", "not_tls")


def healthy(pki: PKI) -> Live:
    return Live("healthy", _serve(pki, "ok", pki.inter.issue("localhost", "127.0.0.1")), pki.ca_file, "localhost",
                None, None)


MATRIX: dict[str, Builder] = {b.__name__: b for b in (
    self_signed_leaf, unknown_ca, missing_intermediate, root_in_chain, san_mismatch, ip_without_ip_san, cn_only,
    wildcard_too_deep, expired_leaf, expired_intermediate, not_yet_valid, client_cert_required,
    client_cert_wrong_ca, plain_http,
)}
