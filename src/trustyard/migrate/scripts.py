"""The programs of the demo estate, written into it as files: a Python HTTPS service that
reloads its certificate on SIGHUP, the loop that runs a client every 200 ms and logs each
request, and the clients themselves (each one small module with a ``fetch()``), trusting their
service the usual wrong ways. Plain text here; ``demo.py`` fills in names, ports and paths."""

from __future__ import annotations

# The service: one TLS handshake per connection with the context loaded last; SIGHUP (or, with
# --watch, a change of the files seen at the next connection) loads tls.crt and tls.key again (a
# pair that does not load, half replaced, keeps the old one), so a reload never drops a request:
# a connection already accepted finishes on the context it started with.
SERVICE = r'''"""An HTTPS service answering "ok" on every path; SIGHUP reloads tls.crt and tls.key.

    python3 https_service.py CERT_DIR PORT PID_FILE [--watch]

With --watch it also reloads them by itself when they change (checked at each connection).
"""

import os
import signal
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

cert_dir, port, pid_file = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
watch = "--watch" in sys.argv[4:]


def stamp():
    return tuple(os.stat(cert_dir / name).st_mtime_ns for name in ("tls.crt", "tls.key"))


def load() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_dir / "tls.crt", cert_dir / "tls.key")
    return context


current, loaded = load(), stamp()


def reload(signum=None, frame=None):
    global current, loaded
    try:
        seen = stamp()
        current, loaded = load(), seen
        print("reloaded", cert_dir / "tls.crt", flush=True)
    except (OSError, ssl.SSLError) as exc:
        print("reload failed, keeping the certificate loaded before:", exc, flush=True)


def changed():
    try:
        return stamp() != loaded
    except OSError:
        return False


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def finish_request(self, request, client_address):
        request.settimeout(10)
        if watch and changed():
            reload()
        try:
            tls = current.wrap_socket(request, server_side=True)  # the handshake, in this connection's thread
        except (OSError, ssl.SSLError):
            return  # the client went away or refused the certificate: its problem to log
        try:
            Handler(tls, client_address, self)
        except OSError:
            pass  # the client went away mid-answer (a probe that only wanted the handshake)
        finally:
            tls.close()


signal.signal(signal.SIGHUP, reload)
server = Server(("127.0.0.1", port), Handler)
pid_file.write_text(f"{os.getpid()}\n")
print("serving", cert_dir / "tls.crt", "on", port, flush=True)
server.serve_forever()
'''

# The loop: the client module is (re)loaded when its file changes, so an edit (verify=False
# replaced by the CA bundle) takes effect at the next request without a restart.
LOOP = r'''"""Run CLIENT.py's fetch() every INTERVAL seconds (default 0.2) and log each request.

    python3 client_loop.py CLIENT.py LOG [INTERVAL]

Each line of LOG is "<UTC time> ok" or "<UTC time> FAIL <error>". Names ending in .internal
resolve to 127.0.0.1 here (no /etc/hosts change needed); TLS still checks the name asked for.
"""

import datetime
import socket
import sys
import time
from pathlib import Path

_getaddrinfo = socket.getaddrinfo


def getaddrinfo(host, *args, **kwargs):
    if isinstance(host, str) and host.endswith(".internal"):
        host = "127.0.0.1"
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = getaddrinfo

client, log = Path(sys.argv[1]), Path(sys.argv[2])
interval = float(sys.argv[3]) if len(sys.argv) > 3 else 0.2
loaded, fetch = None, None
with log.open("a") as out:
    while True:
        started = time.monotonic()
        try:
            mtime = client.stat().st_mtime_ns
            if mtime != loaded:
                namespace = {"__file__": str(client), "__name__": "client"}
                exec(compile(client.read_text(), str(client), "exec"), namespace)
                loaded, fetch = mtime, namespace["fetch"]
            fetch()
            line = "ok"
        except Exception as exc:
            line = f"FAIL {type(exc).__name__}: {exc}".replace("\n", " ")
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S.%f")[:-3]
        out.write(f"{stamp} {line}\n")
        out.flush()
        time.sleep(max(0.0, interval - (time.monotonic() - started)))
'''

CURL_CLIENT = r'''"""curl, told to trust a copy of {service}'s certificate (ca-bundle.pem, next to this file)."""

import subprocess
from pathlib import Path

HERE = Path(__file__).parent


def fetch():
    done = subprocess.run(["curl", "-sS", "--fail", "--max-time", "5", "--cacert", str(HERE / "ca-bundle.pem"),
                           "--resolve", "{host}:{port}:127.0.0.1", "https://{host}:{port}/"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"curl exit {{done.returncode}}: {{done.stderr.strip()}}")
'''

REQUESTS_CLIENT = r'''"""Python requests with a copy of {service}'s certificate as its CA bundle."""

from pathlib import Path

import requests

HERE = Path(__file__).parent


def fetch():
    requests.get("https://{host}:{port}/", verify=str(HERE / "ca-bundle.pem"), timeout=5).raise_for_status()
'''

P12_CLIENT = r'''"""A client that reads its trust anchors from a PKCS#12 truststore (truststore.p12, password
"changeit"), as a JVM would; here in Python, so the demo needs no Java."""

import ssl
import urllib.request
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding, pkcs12

HERE = Path(__file__).parent


def fetch():
    store = pkcs12.load_pkcs12((HERE / "truststore.p12").read_bytes(), b"changeit")
    anchors = [c.certificate for c in store.additional_certs]
    context = ssl.create_default_context(cadata="".join(c.public_bytes(Encoding.PEM).decode() for c in anchors))
    with urllib.request.urlopen("https://{host}:{port}/", context=context, timeout=5) as answer:
        answer.read()
'''

INSECURE_CLIENT = r'''"""Python requests against {service} with certificate verification turned off."""

import requests
import urllib3

urllib3.disable_warnings()


def fetch():
    requests.get("https://{host}:{port}/", verify=False, timeout=5).raise_for_status()
'''

SECRET = """apiVersion: v1
kind: Secret
metadata:
  name: {name}
  namespace: default
type: Opaque
data:
  ca.crt: {data}
"""
