"""The agent's connection to the CA after a root rotation: the CA's server certificate is
checked against the bootstrap ``--root`` and the agent's anchors in the bundles it accepted
and wrote (``ca.crt``); a root merely listed there is not trusted. Once the bootstrap root is retired, the CA chains only to the new root; an agent
that trusted ``--root`` alone could not check in, renew or fetch the bundle any more."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from trustyard.agent.anchors import Anchors
from trustyard.agent.seams import HTTPBackend
from trustyard.client import UntrustedServer
from trustyard.testing import TestCA, pem
from trustyard.x509.summary import fingerprint_sha256


@contextmanager
def ca_answering_checkins(ca: TestCA, directory: Path) -> Iterator[str]:
    """A stand-in CA on loopback, HTTPS with a server certificate of ``ca``, accepting check-ins."""
    cert, key = ca.issue("localhost").write_pair(directory)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            body = json.dumps({"accepted": True, "directives": []}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_after_the_bootstrap_root_is_retired_the_agent_reaches_the_ca_through_its_anchors(
        tmp_path: Path) -> None:
    old, new, stranger = TestCA("Old root"), TestCA("New root"), TestCA("Another environment")
    bootstrap_root = tmp_path / "root.crt"
    bootstrap_root.write_bytes(pem(old.root))
    out = tmp_path / "out"
    out.mkdir()
    anchors = Anchors.open(out, bootstrap_root)
    with ca_answering_checkins(new, tmp_path) as url:
        backend = HTTPBackend(url, bootstrap_root, timeout=5, trust=[(out / "ca.crt", anchors)])
        try:
            with pytest.raises(UntrustedServer):  # no ca.crt yet: --root alone, which the CA left
                backend.checkin("proof")
            # A bundle listing the new root beside the old one, without its cross-certificate:
            # written (the CA published it) but not an anchor, so not trusted for the CA either.
            (out / "ca.crt").write_bytes(pem(old.root, new.root, stranger.root))
            with pytest.raises(UntrustedServer):
                backend.checkin("proof")
            # The rotation's bundle made the new root an anchor (agent/anchors.py): trusted now.
            anchors.add({fingerprint_sha256(new.root)})
            assert backend.checkin("proof") == {"accepted": True, "directives": []}
            # Dropped from the bundle again (a root retired after a compromise): trusted no more.
            (out / "ca.crt").write_bytes(pem(old.root))
            with pytest.raises(UntrustedServer):
                backend.checkin("proof")
        finally:
            backend.close()
