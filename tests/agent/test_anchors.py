"""The agent replaces ca.crt only with a bundle holding a root it was bootstrapped with: a real
CA that starts handing out another environment's root is refused, and the files stay."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cryptography import x509

from trustyard.agent.anchors import anchors_added, judge
from trustyard.ca.home import InitOptions, init_home
from trustyard.check import validate
from trustyard.testing import TestCA, pem
from trustyard.x509.profiles import intermediate_builder, sign
from trustyard.x509.summary import fingerprint_sha256

from ..support import PASSWORD, Server
from .helpers import agent_args, mint, serve


def run_once(server: Server, out: Path, token: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trustyard", "agent",
                           *agent_args(server, out, "orders.internal", token), "--once"],
                          capture_output=True, text=True, timeout=60)


def restart_with_bundle(server: Server, bundle: bytes) -> Server:
    """The same CA (home, port, TLS certificate) serving ``bundle`` at /v1/roots."""
    server.stop()
    (server.home / "ca" / "roots.pem").write_bytes(bundle)
    return serve(server.home, port=server.port)


def test_a_bundle_without_the_bootstrap_root_is_refused_and_the_files_stay(tmp_path: Path, ca: Server) -> None:
    own_root = (ca.home / "ca" / "root.crt").read_bytes()
    staging = tmp_path / "staging"
    init_home(staging, PASSWORD, InitOptions(environment="staging"))
    foreign_root = (staging / "ca" / "root.crt").read_bytes()
    token, out = tmp_path / "token", tmp_path / "certs"
    token.write_text(mint(ca.home, "orders.internal"))
    first = run_once(ca, out, token)
    assert first.returncode == 0, first.stderr
    recorded = json.loads((out / "anchors.json").read_text())["anchors"]
    assert recorded == [fingerprint_sha256(x509.load_pem_x509_certificate(own_root))]
    before = {name: (out / name).read_bytes() for name in ("tls.crt", "tls.key", "ca.crt")}

    ca = restart_with_bundle(ca, foreign_root)
    try:
        refused = run_once(ca, out, token)
        assert refused.returncode == 0, refused.stderr
        assert "refusing the CA's new trust bundle" in refused.stderr
        assert "none of the roots this agent was bootstrapped with" in refused.stderr
        assert "trustyard staging Root CA" in refused.stderr
        assert {name: (out / name).read_bytes() for name in before} == before
        validate(out / "tls.crt", out / "tls.key", out / "ca.crt")  # what the service serves still checks

        # A rotation publishes the new root beside the one the agent knows: accepted.
        ca = restart_with_bundle(ca, own_root + foreign_root)
        accepted = run_once(ca, out, token)
        assert accepted.returncode == 0 and "refusing" not in accepted.stderr
        assert (out / "ca.crt").read_bytes().count(b"BEGIN CERTIFICATE") == 2
    finally:
        ca.stop()


def test_only_a_root_cross_certified_by_a_known_anchor_becomes_an_anchor() -> None:
    old, new, stranger = TestCA("old"), TestCA("new"), TestCA("stranger")
    known = {fingerprint_sha256(old.root)}
    # a cross-certificate: the new root's subject and key, issued by the old root
    cross = sign(intermediate_builder(new.root_key.public_key(), old.root, "new Root", old.root.not_valid_before_utc,
                                      new.root.not_valid_after_utc - old.root.not_valid_before_utc), old.root_key)
    assert cross.subject == new.root.subject
    bundle = [old.root, new.root, cross]
    assert anchors_added(bundle, known) == {fingerprint_sha256(new.root)}
    assert anchors_added([old.root, new.root], known) == frozenset()  # listed, not vouched for
    stranger_cross = sign(intermediate_builder(new.root_key.public_key(), stranger.root, "new Root",
                                               stranger.root.not_valid_before_utc,
                                               new.root.not_valid_after_utc - stranger.root.not_valid_before_utc),
                          stranger.root_key)
    assert anchors_added([old.root, new.root, stranger_cross], known) == frozenset()
    assert judge(pem(old.root, new.root, cross).decode(), known).added == {fingerprint_sha256(new.root)}
    assert not judge(pem(new.root).decode(), known).accepted
