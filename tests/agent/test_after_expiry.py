"""Renewal shortly after expiry, with a real ``trustyard serve`` and the real agent: with
``[renewal] allow_after_expiry`` set, a certificate that expired while its machine was off
renews with the certificate itself (no new token); a revoked one never does, and without the
setting the CA refuses it as ``expired`` (tests/agent/test_agent.py shows that path)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from cryptography import x509

from ..support import Server
from .helpers import mint, serial_of, serve, short_ttl_home, wait_for
from .test_agent import run_once


def _expired(out: Path) -> None:
    not_after = x509.load_pem_x509_certificates((out / "tls.crt").read_bytes())[0].not_valid_after_utc
    wait_for(lambda: time.time() > not_after.timestamp() + 1, timeout=30, what="expiry")


def test_an_expired_certificate_renews_within_allow_after_expiry_and_a_revoked_one_never(tmp_path: Path) -> None:
    home = short_ttl_home(tmp_path / "ca", min_ttl="5s")
    path = home / "trustyard.toml"
    path.write_text(path.read_text() + '\n[renewal]\nallow_after_expiry = "1h"\n')
    server: Server = serve(home)
    try:
        token, out = tmp_path / "token", tmp_path / "certs"
        token.write_text(mint(home, "weekend.internal"))
        assert run_once(server, out, "weekend.internal", token, "--ttl", "5s").returncode == 0
        first = serial_of(out)
        _expired(out)
        # the token in the file is spent: only the expired certificate can get a new one
        again = run_once(server, out, "weekend.internal", token, "--ttl", "5s")
        assert again.returncode == 0, again.stderr
        assert '"event": "renewed"' in again.stderr and serial_of(out) != first
        doc = json.loads(again.stdout)["certificates"][0]
        assert doc["level"] == "ok" and doc["needs_bootstrap"] is False

        renewed = serial_of(out)
        assert renewed is not None
        admin = {"Authorization": "Bearer " + (home / "admin.token").read_text().strip()}
        with server.client() as c:
            revoked = c.post("/v1/revoke", json={"serial": format(renewed, "x"), "reason": "superseded"},
                             headers=admin)
        assert revoked.status_code == 200, revoked.text
        _expired(out)
        refused = run_once(server, out, "weekend.internal", token, "--ttl", "5s")
        assert refused.returncode == 3, refused.stderr
        assert "[revoked]" in refused.stderr and serial_of(out) == renewed
    finally:
        server.stop()
