"""A trust bundle that changes alone (the agent's new generation with only ca.crt new) is
used for the next handshake, by server and client contexts, without a restart; connections
already open keep what they were built with."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from trustyard.agent.seams import FileOutput
from trustyard.client import TrustBundle
from trustyard.testing import TestCA
from trustyard.tls import client_context, server_context

from .net import Conn, EchoServer

CLIENT_ID = "spiffe://prod.internal/orders"


def new_bundle(directory: Path, *cas: TestCA) -> None:
    """What the agent does when the CA's bundle changes: a new generation, the certificate kept."""
    FileOutput(directory).write_ca(TrustBundle(b"".join(c.pem() for c in cas).decode()))


def refused(context: ssl.SSLContext, port: int) -> None:
    with pytest.raises((ssl.SSLError, OSError)), Conn(context, port) as conn:
        conn.echo("x")  # TLS 1.3: the server's refusal arrives with the first read


def test_server_trusts_a_new_ca_for_client_certificates_after_its_bundle_changes(
    server_dir: Path, client_dir: Path, ca: TestCA, other_ca: TestCA, tmp_path: Path,
) -> None:
    newcomer = other_ca.issue(CLIENT_ID).write_agent_dir(tmp_path / "newcomer", bundle=ca.pem())
    sctx = server_context(server_dir)
    first_serial = sctx.serial
    with EchoServer(sctx) as server, Conn(client_context(client_dir), server.port) as old:
        assert old.echo("a") == f"{CLIENT_ID} a"
        refused(client_context(newcomer), server.port)
        new_bundle(server_dir, ca, other_ca)
        with Conn(client_context(newcomer), server.port) as conn:
            assert conn.echo("b") == f"{CLIENT_ID} b"
        assert sctx.serial == first_serial  # only the trust changed
        # The old CA leaves the bundle: new handshakes from its clients fail, the open one goes on.
        new_bundle(server_dir, other_ca)
        refused(client_context(client_dir), server.port)
        assert old.echo("c") == f"{CLIENT_ID} c"


def test_client_trusts_a_server_from_a_new_ca_after_its_bundle_changes(
    client_dir: Path, ca: TestCA, other_ca: TestCA, tmp_path: Path,
) -> None:
    elsewhere = other_ca.issue("localhost").write_agent_dir(tmp_path / "server")
    cctx = client_context(client_dir, present_certificate=False)
    with EchoServer(server_context(elsewhere, client_auth="none")) as server:
        with pytest.raises(ssl.SSLCertVerificationError):
            Conn(cctx, server.port)
        new_bundle(client_dir, ca, other_ca)
        with Conn(cctx, server.port) as conn:
            assert conn.echo("x") == "- x"
