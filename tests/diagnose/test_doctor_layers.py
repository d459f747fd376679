"""doctor's network layer and clock skew, which the scenario servers do not cover."""

from __future__ import annotations

import socket
import ssl
import struct
import threading

import pytest

from trustyard.diagnose.doctor import diagnose
from trustyard.diagnose.explain import explain

from .scenarios import PKI, _serve
from .servers import DAY, NOW, Server


def test_refused_dns_and_timeout() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
    assert (diagnose(f"127.0.0.1:{port}").layer, diagnose(f"127.0.0.1:{port}").code) == ("network", "refused")
    assert diagnose("nosuchhost.invalid:443", timeout=2).code == "dns"
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        verdict = diagnose(f"127.0.0.1:{silent.getsockname()[1]}", timeout=0.5)
    assert (verdict.layer, verdict.code) in {("network", "timeout"), ("protocol", "handshake_failure")}


def test_clock_skew_when_the_server_clock_says_the_chain_is_valid(pki: PKI) -> None:
    server: Server = _serve(pki, "skew", pki.inter.issue("localhost", not_before=NOW - DAY, not_after=NOW + 5 * DAY))
    try:
        # the local clock runs 10 days fast; the server's Date header tells the real time
        verdict = diagnose(f"localhost:{server.port}", ca_files=[str(pki.ca_file)], now=NOW + 10 * DAY)
    finally:
        server.close()
    assert (verdict.layer, verdict.code) == ("validity", "clock_skew")
    assert "server_time" in verdict.evidence


# A server that only speaks what a default client (Python's ssl, TLS 1.2+, modern AEAD
# suites) will not: doctor must say protocol/no_shared_protocol, whichever alert it got.
NO_SHARED = {
    # the server answers a TLS 1.2/1.3 ClientHello with a protocol_version alert
    "tls1.0_and_1.1_only": dict(versions=(ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1),
                                ciphers="DEFAULT:@SECLEVEL=0"),
    # TLS 1.2 with a suite no default client offers: a bare handshake_failure alert
    "aria_cipher_only": dict(versions=(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2),
                             ciphers="ECDHE-ECDSA-ARIA128-GCM-SHA256"),
    # TLS 1.2 CBC-SHA1 only: OpenSSL's defaults accept it, Python's default client does not
    "cbc_sha1_only": dict(versions=(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2),
                          ciphers="ECDHE-ECDSA-AES128-SHA"),
}


@pytest.mark.parametrize("case", sorted(NO_SHARED))
def test_no_shared_protocol(pki: PKI, case: str) -> None:
    server = _serve(pki, f"nsp-{case}", pki.inter.issue("localhost"), **NO_SHARED[case])
    try:
        verdict = diagnose(f"localhost:{server.port}", ca_files=[str(pki.ca_file)], timeout=5)
        # a Python client configured like doctor's really fails against it
        ctx = ssl.create_default_context(cafile=str(pki.ca_file))
        with (pytest.raises(ssl.SSLError) as python_error,
              socket.create_connection(("localhost", server.port), timeout=5) as raw):
            ctx.wrap_socket(raw, server_hostname="localhost").close()
    finally:
        server.close()
    assert (verdict.layer, verdict.code) == ("protocol", "no_shared_protocol"), verdict.summary
    assert not verdict.ok
    ev = verdict.evidence
    assert ev["server_protocol"] in ("TLSv1", "TLSv1.1", "TLSv1.2"), ev
    assert ev["server_cipher"] == {"aria_cipher_only": "ECDHE-ECDSA-ARIA128-GCM-SHA256",
                                   "cbc_sha1_only": "ECDHE-ECDSA-AES128-SHA"}.get(case, ev["server_cipher"])
    assert ev["client_min_version"] == "TLSv1.2" and ev["client_ciphers"]
    assert verdict.chain and "CN=" in verdict.chain[0]["issuer"]  # what the server serves, still shown
    if case == "tls1.0_and_1.1_only":  # Python names the version; explain maps its text the same way
        assert explain(str(python_error.value)).code == "no_shared_protocol", str(python_error.value)


def test_a_handshake_nobody_completes_stays_handshake_failure() -> None:
    """A server that resets every ClientHello is not a protocol mismatch."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]

        def reset_all() -> None:
            for _ in range(4):
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                conn.recv(1024)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()

        t = threading.Thread(target=reset_all, daemon=True)
        t.start()
        verdict = diagnose(f"127.0.0.1:{port}", timeout=3)
    assert (verdict.layer, verdict.code) == ("protocol", "handshake_failure"), verdict.summary
