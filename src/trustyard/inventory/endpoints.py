"""Live endpoints -> the chain each server actually sends, concurrently, with timeouts."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..diagnose.probe import probe
from .model import CertItem, Inventory, ReadError

DEFAULT_CONCURRENCY = 64


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    sni: str | None = None

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """``host:port``, ``[::1]:443`` or ``host:port/sni``."""
        raw = text.strip()
        for prefix in ("https://", "tls://"):
            if raw.startswith(prefix):
                raw = raw[len(prefix):]
        hostport, _, sni = raw.partition("/")
        bad = ValueError(f"invalid endpoint {text!r}: write HOST:PORT[/SNI], an IPv6 address in brackets")
        if hostport.startswith("["):
            host, closed, rest = hostport[1:].partition("]")
            if not closed or (rest and not rest.startswith(":")):
                raise bad
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise bad from None
            port_text = rest[1:] if rest else "443"
        else:
            host, _, port_text = hostport.rpartition(":")
            if not host:
                host, port_text = hostport, "443"
            if any(c in host for c in ":[]") or not host.isprintable() or any(c.isspace() for c in host):
                raise bad  # "::1:443" is ambiguous: only "[::1]:443" says where the port starts
        if not (port_text.isascii() and port_text.isdigit()):  # int() would also take "١٢", " 1" or "4_43"
            raise ValueError(f"invalid endpoint {text!r}: write HOST:PORT[/SNI]")
        port = int(port_text)
        if not host or not 0 < port < 65536:
            raise ValueError(f"invalid endpoint {text!r}: write HOST:PORT[/SNI]")
        return cls(host, port, sni or None)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" + (f"/{self.sni}" if self.sni else "")


def scan_endpoints(
    endpoints: Iterable[Endpoint], *, timeout: float = 5.0, concurrency: int = DEFAULT_CONCURRENCY,
    environment: str | None = None, on_done: Callable[[], None] | None = None,
) -> Inventory:
    inv = Inventory()
    targets = list(endpoints)

    def one(ep: Endpoint) -> Inventory:
        part = Inventory()
        location = f"tls://{ep}"
        result = probe(ep.host, ep.port, sni=ep.sni, timeout=timeout)
        if result.network_error:
            part.errors.append(ReadError(location, f"{result.network_error}: {result.network_detail}"))
        elif not result.chain:
            part.errors.append(ReadError(location, f"no certificate received: {result.tls_error}"))
        for i, cert in enumerate(result.chain):
            where = location if i == 0 else f"{location}#{i}"
            part.certificates.append(CertItem(cert, where, location, environment=environment, served=True,
                                              position=i))
        if on_done:
            on_done()
        return part

    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(targets) or 1))) as pool:
        for part in pool.map(one, targets):
            inv.extend(part)
    return inv
