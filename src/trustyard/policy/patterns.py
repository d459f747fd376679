"""Allowed-name patterns of a provisioner.

- ``orders.prod.internal``      exactly that DNS name
- ``*.prod.internal``           any DNS name below ``prod.internal``, at any depth
                                (``prod.internal`` itself needs its own entry)
- ``*``                         any DNS name (no name constraint on the intermediate)
- ``10.0.0.0/8``, ``10.1.2.3``  IP addresses in that network
- ``spiffe://prod.internal/*``  URIs with that prefix (``*`` only at the end); URIs match
                                only in normal form (no ``..``, ``%``, query...: see ``uris``)
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable

from cryptography import x509

from ..x509.names import Name, normalize_dns
from ..x509.profiles import NameLimits
from . import uris


@dataclass(frozen=True)
class NamePattern:
    kind: str  # "dns" | "ip" | "uri"
    text: str

    @classmethod
    def parse(cls, text: str) -> "NamePattern":
        raw = str(text).strip()
        if "://" in raw:
            return cls("uri", uris.parse_uri_pattern(raw))
        if raw == "*":
            return cls("dns", "*")
        try:
            network = ipaddress.ip_network(raw.strip("[]"), strict=False)
            return cls("ip", str(network))
        except ValueError:
            pass
        try:
            return cls("dns", normalize_dns(raw))
        except ValueError:
            raise ValueError(
                f"invalid name pattern {text!r}: expected a DNS name or *.suffix, an IP or CIDR, "
                "or a URI prefix such as spiffe://domain/*"
            ) from None

    def matches(self, name: Name) -> bool:
        if self.kind == "dns" and isinstance(name, x509.DNSName):
            value = name.value.lower()
            if self.text == "*":
                return True
            if self.text.startswith("*."):
                return value.endswith(self.text[1:])  # ".prod.internal": strictly below it
            return value == self.text
        if self.kind == "ip" and isinstance(name, x509.IPAddress):
            value = name.value
            if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
                return False
            return value in ipaddress.ip_network(self.text)
        if self.kind == "uri" and isinstance(name, x509.UniformResourceIdentifier):
            return uris.uri_matches(self.text, name.value)
        return False

    def __str__(self) -> str:
        return self.text


def parse_patterns(texts: Iterable[str]) -> tuple[NamePattern, ...]:
    return tuple(NamePattern.parse(t) for t in texts)


def name_limits(patterns: Iterable[NamePattern]) -> NameLimits:
    """The intermediate's name constraints that cover exactly these patterns' subtrees."""
    dns: list[str] = []
    ips: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    uri_hosts: list[str] = []
    for pattern in patterns:
        if pattern.kind == "dns":
            if pattern.text == "*":
                return NameLimits(unrestricted=True)
            dns.append(pattern.text[2:] if pattern.text.startswith("*.") else pattern.text)
        elif pattern.kind == "ip":
            ips.append(ipaddress.ip_network(pattern.text))
        else:
            host = pattern.text.split("://", 1)[1].split("/", 1)[0].split(":", 1)[0]
            if not host or "*" in host:
                return NameLimits(unrestricted=True)
            uri_hosts.append(host)
    return NameLimits(dns=tuple(dict.fromkeys(dns)), ips=tuple(dict.fromkeys(ips)),
                      uri_hosts=tuple(dict.fromkeys(uri_hosts)))
