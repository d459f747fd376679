"""Real handshakes on 127.0.0.1: trust, client certificates, and rotation without restart."""

from __future__ import annotations

import ssl
import threading
from pathlib import Path

import pytest

from trustyard.errors import ConfigError
from trustyard.files import write_atomic, write_private
from trustyard.testing import TestCA, self_signed
from trustyard.tls import client_context, server_context
from trustyard.tls import context as context_mod

from .net import Conn, EchoServer

CLIENT_ID = "spiffe://prod.internal/orders"


class TestHandshake:
    def test_mtls_from_agent_directory(self, server_dir: Path, client_dir: Path, ca: TestCA) -> None:
        with EchoServer(server_context(server_dir)) as server, \
                Conn(client_context(client_dir), server.port) as conn:
            # The server saw and verified the client's certificate: peer_identity names it.
            assert conn.echo("hello") == f"{CLIENT_ID} hello"

    def test_explicit_paths(self, server_dir: Path, client_dir: Path) -> None:
        sctx = server_context(cert=server_dir / "tls.crt", key=server_dir / "tls.key", ca=server_dir / "ca.crt")
        cctx = client_context(cert=client_dir / "tls.crt", key=client_dir / "tls.key", ca=client_dir / "ca.crt")
        with EchoServer(sctx) as server, Conn(cctx, server.port) as conn:
            assert conn.echo("x") == f"{CLIENT_ID} x"

    def test_one_way_tls_when_client_certs_are_not_requested(self, server_dir: Path) -> None:
        sctx = server_context(server_dir, client_auth="none")
        with EchoServer(sctx) as server, Conn(client_context(ca=server_dir / "ca.crt"), server.port) as conn:
            assert conn.echo("x") == "- x"

    def test_server_requires_a_client_certificate(self, server_dir: Path) -> None:
        with EchoServer(server_context(server_dir, client_auth="required")) as server:
            with (pytest.raises((ssl.SSLError, OSError)),
                  Conn(client_context(ca=server_dir / "ca.crt"), server.port) as conn):
                conn.echo("x")  # TLS 1.3: the server's refusal arrives with the first read
            assert "certificate" in str(server.errors.get(timeout=20)).lower()

    def test_client_rejects_a_server_from_another_ca(self, server_dir: Path, client_dir: Path,
                                                     other_ca: TestCA, tmp_path: Path) -> None:
        foreign = other_ca.issue("localhost").write_agent_dir(tmp_path / "foreign")
        with (EchoServer(server_context(foreign, client_auth="none")) as server,
              pytest.raises(ssl.SSLCertVerificationError)):
            Conn(client_context(client_dir), server.port)

    def test_client_rejects_a_wrong_hostname(self, server_dir: Path, client_dir: Path) -> None:
        with EchoServer(server_context(server_dir)) as server, pytest.raises(ssl.SSLCertVerificationError):
            Conn(client_context(client_dir), server.port, hostname="billing.internal")

    @pytest.mark.parametrize("kind", ["self-signed", "other CA"])
    def test_server_rejects_a_client_certificate_it_does_not_trust(
        self, kind: str, server_dir: Path, ca: TestCA, other_ca: TestCA, tmp_path: Path,
    ) -> None:
        leaf = self_signed(CLIENT_ID) if kind == "self-signed" else other_ca.issue(CLIENT_ID)
        bad = leaf.write_agent_dir(tmp_path / "bad", bundle=ca.bundle())  # trusts our CA, presents the untrusted certificate
        with EchoServer(server_context(server_dir)) as server:
            with pytest.raises((ssl.SSLError, OSError)), Conn(client_context(bad), server.port) as conn:
                conn.echo("x")
            assert "certificate verify failed" in str(server.errors.get(timeout=20))


class TestRotation:
    def test_new_handshakes_see_new_files_and_open_connections_keep_working(
        self, server_dir: Path, client_dir: Path, ca: TestCA,
    ) -> None:
        sctx, cctx = server_context(server_dir), client_context(client_dir)
        with EchoServer(sctx) as server, Conn(cctx, server.port) as old:
            first = old.server_serial
            assert old.echo("before") == f"{CLIENT_ID} before"
            new_leaf = ca.issue("localhost")
            new_leaf.write_agent_dir(server_dir)  # atomic renames, as the agent does
            with Conn(cctx, server.port) as fresh:
                assert fresh.server_serial == new_leaf.serial != first
                assert sctx.serial == new_leaf.serial
            # The connection opened before the rotation is untouched.
            assert old.echo("after") == f"{CLIENT_ID} after"
            assert old.server_serial == first

    def test_client_certificate_rotation(self, server_dir: Path, client_dir: Path, ca: TestCA) -> None:
        cctx = client_context(client_dir)
        with EchoServer(server_context(server_dir)) as server, Conn(cctx, server.port) as old:
            assert old.echo("a").startswith(CLIENT_ID)
            ca.issue("spiffe://prod.internal/orders-v2").write_agent_dir(client_dir)
            with Conn(cctx, server.port) as fresh:
                assert fresh.echo("b") == "spiffe://prod.internal/orders-v2 b"
            assert old.echo("c") == f"{CLIENT_ID} c"

    def test_half_rotated_pair_is_never_loaded(self, server_dir: Path, client_dir: Path, ca: TestCA) -> None:
        sctx, cctx = server_context(server_dir), client_context(client_dir)
        first = sctx.serial
        new_leaf = ca.issue("localhost")
        with EchoServer(sctx) as server:
            write_atomic(server_dir / "tls.crt", new_leaf.chain_pem())  # the key has not landed yet
            for _ in range(3):  # every handshake retries nothing until the files change again
                with Conn(cctx, server.port) as conn:
                    assert conn.server_serial == first
            assert sctx.last_error is not None and "kept the previous certificate" in sctx.last_error
            write_private(server_dir / "tls.key", new_leaf.key_pem())
            with Conn(cctx, server.port) as conn:
                assert conn.server_serial == new_leaf.serial
            assert sctx.last_error is None

    def test_files_replaced_during_a_load_are_retried(
        self, server_dir: Path, ca: TestCA, monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        sctx = server_context(server_dir)
        first = sctx.serial
        racing, final = ca.issue("localhost"), ca.issue("localhost")
        racing.write_agent_dir(server_dir)
        real_build = context_mod._build_inner

        def build_then_rotate(*args: object) -> object:
            loaded = real_build(*args)  # type: ignore[arg-type]
            monkeypatch.setattr(context_mod, "_build_inner", real_build)
            final.write_agent_dir(server_dir)  # the agent renames again while we were reading
            return loaded

        monkeypatch.setattr(context_mod, "_build_inner", build_then_rotate)
        assert sctx.inner is not None and sctx.serial == first  # the mix was discarded
        sctx.inner  # noqa: B018 - the next connection loads the settled files
        assert sctx.serial == final.serial

    def test_trust_bundle_rotation_to_a_new_ca(
        self, server_dir: Path, client_dir: Path, ca: TestCA, other_ca: TestCA,
    ) -> None:
        sctx, cctx = server_context(server_dir), client_context(client_dir)
        both = ca.bundle() + other_ca.bundle()
        with EchoServer(sctx) as server:
            # Overlap: both sides trust both roots, then the server moves to the new CA.
            write_atomic(client_dir / "ca.crt", both)
            other_ca.issue("localhost").write_agent_dir(server_dir, bundle=both)
            with Conn(cctx, server.port) as conn:
                assert conn.echo("x") == f"{CLIENT_ID} x"
            # The client drops the old root: the server's old-CA chain would now fail,
            # and the new one still works.
            write_atomic(client_dir / "ca.crt", other_ca.bundle())
            with Conn(cctx, server.port) as conn:
                assert conn.echo("y") == f"{CLIENT_ID} y"
            ca.issue("localhost").write_agent_dir(server_dir, bundle=both)
            with pytest.raises(ssl.SSLCertVerificationError):
                Conn(cctx, server.port)

    def test_concurrent_handshakes_during_rotations(self, server_dir: Path, client_dir: Path, ca: TestCA) -> None:
        sctx, cctx = server_context(server_dir), client_context(client_dir)
        served = {sctx.serial}
        seen: list[int] = []
        failures: list[BaseException] = []
        with EchoServer(sctx) as server:
            def hammer() -> None:
                for _ in range(15):
                    try:
                        with Conn(cctx, server.port) as conn:
                            seen.append(conn.server_serial)
                            assert conn.echo("ping").endswith("ping")
                    except BaseException as exc:
                        failures.append(exc)
            threads = [threading.Thread(target=hammer) for _ in range(6)]
            for t in threads:
                t.start()
            for _ in range(8):
                leaf = ca.issue("localhost")
                served.add(leaf.serial)
                leaf.write_agent_dir(server_dir)
            for t in threads:
                t.join()
        assert failures == []
        assert len(seen) == 90 and set(seen) <= served


class TestConfiguration:
    def test_missing_files_are_a_config_error(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="does not exist"):
            server_context(tmp_path)

    def test_mismatched_pair_at_startup_is_a_config_error(self, server_dir: Path, ca: TestCA) -> None:
        write_private(server_dir / "tls.key", ca.issue("localhost").key_pem())
        with pytest.raises(ConfigError, match="cannot load TLS files"):
            server_context(server_dir)

    def test_client_verification_needs_a_bundle(self, server_dir: Path) -> None:
        with pytest.raises(ValueError, match="trust bundle"):
            server_context(cert=server_dir / "tls.crt", key=server_dir / "tls.key")
        with pytest.raises(ValueError, match="client_auth"):
            server_context(server_dir, client_auth="sometimes")  # type: ignore[arg-type]
