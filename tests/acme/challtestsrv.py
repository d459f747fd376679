"""pebble-challtestsrv (Debian package ``pebble``) as a test fixture: the local DNS and
http-01 / tls-alpn-01 responder that the CA validates against, on free loopback ports."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass

import httpx

from trustyard.testing import free_port


@dataclass
class ChallTestSrv:
    process: subprocess.Popen[bytes]
    management: int
    http_port: int
    tls_port: int
    dns_port: int

    @property
    def resolver(self) -> str:
        return f"127.0.0.1:{self.dns_port}"

    def _post(self, path: str, doc: dict[str, str]) -> None:
        response = httpx.post(f"http://127.0.0.1:{self.management}{path}", json=doc, timeout=5)
        response.raise_for_status()

    def add_http01(self, token: str, content: str) -> None:
        self._post("/add-http01", {"token": token, "content": content})

    def add_tlsalpn01(self, host: str, content: str) -> None:
        self._post("/add-tlsalpn01", {"host": host, "content": content})

    def set_txt(self, host: str, value: str) -> None:
        self._post("/set-txt", {"host": host.rstrip(".") + ".", "value": value})

    def add_a(self, host: str, *addresses: str) -> None:
        self._post("/add-a", {"host": host.rstrip(".") + ".", "addresses": list(addresses)})  # type: ignore[dict-item]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def start_challtestsrv() -> ChallTestSrv:
    binary = shutil.which("pebble-challtestsrv")
    if binary is None:
        raise RuntimeError("pebble-challtestsrv missing: apt-get install pebble (scripts/apt-packages.txt)")
    ports = [free_port() for _ in range(4)]
    process = subprocess.Popen(
        [binary, "-management", f"127.0.0.1:{ports[0]}", "-http01", f"127.0.0.1:{ports[1]}", "-https01", "",
         "-tlsalpn01", f"127.0.0.1:{ports[2]}", "-dns01", f"127.0.0.1:{ports[3]}", "-defaultIPv6", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    srv = ChallTestSrv(process, *ports)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            httpx.post(f"http://127.0.0.1:{ports[0]}/clear-txt", json={"host": "probe.invalid."}, timeout=1)
            return srv
        except httpx.HTTPError:
            time.sleep(0.05)
    srv.stop()
    raise RuntimeError("pebble-challtestsrv did not start")
