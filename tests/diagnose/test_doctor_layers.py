"""doctor's network layer and clock skew, which the scenario servers do not cover."""

from __future__ import annotations

import socket

from trustyard.diagnose.doctor import diagnose

from .pki import DAY, NOW, Server
from .scenarios import PKI, _serve


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
    server: Server = _serve(pki, "skew", pki.inter.leaf("localhost", not_before=NOW - DAY, not_after=NOW + 5 * DAY))
    try:
        # the local clock runs 10 days fast; the server's Date header tells the real time
        verdict = diagnose(f"localhost:{server.port}", ca_files=[str(pki.ca_file)], now=NOW + 10 * DAY)
    finally:
        server.close()
    assert (verdict.layer, verdict.code) == ("validity", "clock_skew")
    assert "server_time" in verdict.evidence
