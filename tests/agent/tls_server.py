"""A tiny TLS server for the agent tests, run as its own process.

    python tls_server.py CERT_DIR PORT PID_FILE [--ignore-hup]

Serves the certificate in CERT_DIR; on SIGHUP it loads the files again (unless
--ignore-hup, which plays a service that never picks up new certificates). Each reload
appends the serial it loaded to CERT_DIR/../reloaded.txt.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import sys
import threading
from pathlib import Path

from cryptography import x509


def main() -> None:
    cert_dir, port, pid_file = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    ignore_hup = "--ignore-hup" in sys.argv
    record = cert_dir.parent / "reloaded.txt"
    state: dict[str, ssl.SSLContext] = {}

    def load() -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert_dir / "tls.crt", cert_dir / "tls.key")  # cert first, then its key
        state["ctx"] = ctx
        serial = x509.load_pem_x509_certificates((cert_dir / "tls.crt").read_bytes())[0].serial_number
        with record.open("a") as fh:
            fh.write(f"{serial:x}\n")

    load()
    signal.signal(signal.SIGHUP, lambda *_: None if ignore_hup else load())
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    listener = socket.create_server(("127.0.0.1", port))
    pid_file.write_text(f"{os.getpid()}\n")

    def handle(conn: socket.socket) -> None:
        try:
            with state["ctx"].wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
        except (OSError, ssl.SSLError):
            pass

    while True:
        try:
            conn, _ = listener.accept()
        except InterruptedError:
            continue
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
