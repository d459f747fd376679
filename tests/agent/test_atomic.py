"""Atomic output: while the agent renews again and again, a reader never sees a half-written
file or a mismatched pair. The reader resolves DIR/..data once per load, then loads the pair
the way OpenSSL does (the certificate, then its key: a mismatch raises)."""

from __future__ import annotations

import os
import ssl
import threading
from pathlib import Path

from trustyard.agent.config import cert_spec
from trustyard.agent.runner import ManagedCert
from trustyard.agent.seams import FileOutput, HTTPBackend, SystemClock

from ..support import Server
from .helpers import mint, serial_of


def test_reader_never_sees_a_mismatched_or_partial_pair(tmp_path: Path, ca: Server) -> None:
    token = tmp_path / "token"
    token.write_text(mint(ca.home, "pair.internal"))
    out = tmp_path / "certs"
    backend = HTTPBackend(ca.url, ca.root)
    m = ManagedCert(cert_spec({"name": "pair.internal", "out": str(out), "token_file": str(token),
                               "ttl": "1h"}), backend, FileOutput(out), SystemClock())
    m.start()
    m.step()
    assert m.current is not None and m.failures == 0
    stop, reads, bad = threading.Event(), [0], []

    def reader() -> None:
        while not stop.is_set():
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            generation = Path(os.path.realpath(out / "..data"))
            try:
                context.load_cert_chain(generation / "tls.crt", generation / "tls.key")  # raises on a mismatch
            except (ssl.SSLError, OSError) as exc:
                bad.append(repr(exc))
            reads[0] += 1

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    serials = {serial_of(out)}
    try:
        for _ in range(25):
            m.step()  # renews now: the step does not wait for the renewal point
            assert m.failures == 0, m.last_error
            serials.add(serial_of(out))
    finally:
        stop.set()
        for t in threads:
            t.join()
        backend.close()
    assert len(serials) == 26
    for name in ("tls.crt", "tls.key", "ca.crt"):
        assert os.readlink(out / name) == f"..data/{name}"
    assert oct(os.stat(out / "tls.key").st_mode & 0o777) == "0o600"
    assert len([p for p in out.glob("..*") if not p.is_symlink()]) == 3  # current + two kept
    assert bad == []
    assert reads[0] > 100
