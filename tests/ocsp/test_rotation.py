"""After an intermediate rotation, a server started afresh answers OCSP for the certificates the
replaced intermediate issued (its key is still in the home) as well as for the new one's."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from trustyard.testing import free_port, need

from ..rotate.test_chains import issue, to_active
from ..support import start_server
from .helpers import ocsp_home


def test_a_restarted_server_answers_for_the_replaced_intermediate_too(tmp_path: Path) -> None:
    port = free_port()
    home = ocsp_home(tmp_path / "ca", url=f"https://127.0.0.1:{port}")
    old = issue(home, "old.internal")
    _row, _journal, _clock, store = to_active(home, "intermediate")
    store.close()
    new = issue(home, "new.internal")
    assert new.chain[0].subject != old.chain[0].subject
    server = start_server(home, workers=1, port=port)
    try:
        for name, issued in (("old", old), ("new", new)):
            cert, issuer = tmp_path / f"{name}.crt", tmp_path / f"{name}-issuer.crt"
            cert.write_bytes(issued.certificate.public_bytes(Encoding.PEM))
            issuer.write_bytes(issued.chain[0].public_bytes(Encoding.PEM))
            done = subprocess.run([need("openssl"), "ocsp", "-issuer", str(issuer), "-cert", str(cert), "-url",
                                   f"{server.url}/ocsp", "-CAfile", str(server.root), "-verify_other", str(issuer)],
                                  capture_output=True, text=True, timeout=30)
            assert f"{cert}: good" in done.stdout, done.stdout + done.stderr
            assert "Response verify OK" in done.stderr
    finally:
        server.stop()
