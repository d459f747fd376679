"""The machine's ceiling for any OCSP responder: nginx answering every request with one fixed,
pre-signed response (a static file; no request parsed, no lookup, no signature).

No responder that reads the request can beat this on the same machine with the same load
generator, so ``ceiling / openssl`` bounds the ratio any implementation could reach here. It
is measured twice: over kept-alive HTTP connections, and with a connection per request (the
transport ``openssl ocsp`` is limited to).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

CONF = """worker_processes {workers};
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {work}/nginx-body;
  server {{
    listen 127.0.0.1:{port};
    root {work};
    # every path, GET or POST (a POST to a static file is a 405 that error_page turns into it)
    location / {{
      default_type application/ocsp-response;
      try_files /ceiling.der =404;
      error_page 405 =200 /ceiling.der;
    }}
  }}
}}
"""


def available() -> bool:
    return shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists()


def start(response: bytes, port: int, workers: int) -> subprocess.Popen[bytes]:
    """nginx with ``workers`` worker processes serving ``response`` for every request, from a
    directory its unprivileged workers can read (``stop`` removes it)."""
    work = Path(tempfile.mkdtemp(prefix="trustyard-ocsp-ceiling-"))
    os.chmod(work, 0o755)
    (work / "ceiling.der").write_bytes(response)
    (work / "ceiling.der").chmod(0o644)
    conf = work / "nginx-ceiling.conf"
    conf.write_text(CONF.format(work=work, port=port, workers=workers))
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    process = subprocess.Popen([binary, "-c", str(conf), "-p", str(work), "-g", "daemon off;"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    process.args = work  # type: ignore[assignment]  # for stop
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/probe", timeout=1).content == response:
                return process
        except httpx.HTTPError:
            time.sleep(0.05)
    error = (work / "nginx-error.log").read_text(errors="replace")[-2000:]
    stop(process)
    raise RuntimeError(f"nginx did not start: {error}")


def stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, 15)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait(5)
    shutil.rmtree(process.args, ignore_errors=True)  # type: ignore[arg-type]
