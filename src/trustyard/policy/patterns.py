"""Allowed-name patterns of a provisioner.

- ``orders.prod.internal``      exactly that DNS name
- ``*.prod.internal``           any DNS name below ``prod.internal``, at any depth
                                (``prod.internal`` itself needs its own entry)
- ``*``                         any DNS name (no DNS name constraint on the intermediate)
- ``*.*.prod.internal``         wildcard names ``*.x.prod.internal`` for any ``x.prod.internal``
                                strictly below ``prod.internal`` (never ``*.prod.internal``)
- ``=*.prod.internal``          exactly that name, ``*`` included: the one way to allow the
                                wildcard of a whole zone
- ``10.0.0.0/8``, ``10.1.2.3``  IP addresses in that network
- ``spiffe://prod.internal/*``  URIs with that prefix (``*`` only at the end); URIs match
                                only in normal form (no ``..``, ``%``, query...: see ``uris``)

A wildcard name (``*.x.prod.internal``) matches only a pattern that names wildcards (the two
forms above), or, when the provisioner sets ``wildcards = true``, a ``*.suffix`` pattern it is
strictly below (``*`` then allows wildcards of names with two labels or more). ``*.prod.internal``
itself, the wildcard of a whole allowed zone, is never implied.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509

from ..x509.names import Name, normalize_dns
from ..x509.profiles import NameLimits
from . import uris


@dataclass(frozen=True)
class NamePattern:
    kind: str  # "dns" | "ip" | "uri"
    text: str

    @classmethod
    def parse(cls, text: str) -> NamePattern:
        raw = str(text).strip()
        if "://" in raw:
            return cls("uri", uris.parse_uri_pattern(raw))
        if raw == "*":
            return cls("dns", "*")
        if raw.startswith(("=", "*.*.")):  # names wildcards: see the module's docstring
            prefix, rest = ("=", raw[1:]) if raw.startswith("=") else ("*.", raw[2:])
            try:
                return cls("dns", prefix + normalize_dns(rest))
            except ValueError as exc:
                raise ValueError(f"invalid name pattern {text!r}: {exc}") from None
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

    def matches(self, name: Name, wildcards: bool = False) -> bool:
        """Whether ``name`` is allowed; ``wildcards``: the provisioner's ``wildcards = true``."""
        if self.kind == "dns" and isinstance(name, x509.DNSName):
            value = name.value.lower()
            if self.text.startswith("="):
                return value == self.text[1:]
            if value.startswith("*."):
                return self._allows_wildcard(value[2:], wildcards)
            if self.text.startswith("*.*."):
                return False
            if self.text == "*":
                return True
            if self.text.startswith("*."):
                return value.endswith(self.text[1:])  # ".prod.internal": strictly below it
            return value == self.text
        if self.kind == "ip" and isinstance(name, x509.IPAddress):
            address = name.value
            if isinstance(address, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
                return False
            return address in ipaddress.ip_network(self.text)
        if self.kind == "uri" and isinstance(name, x509.UniformResourceIdentifier):
            return uris.uri_matches(self.text, name.value)
        return False

    def _allows_wildcard(self, base: str, wildcards: bool) -> bool:
        """Whether the wildcard ``*.base`` is allowed: never the whole zone a pattern names."""
        if self.text.startswith("*.*."):
            return base.endswith(self.text[3:])  # ".prod.internal": base strictly below
        if not wildcards:
            return False
        if self.text == "*":
            return "." in base
        return self.text.startswith("*.") and base.endswith(self.text[1:])

    def __str__(self) -> str:
        return self.text


def parse_patterns(texts: Iterable[str]) -> tuple[NamePattern, ...]:
    return tuple(NamePattern.parse(t) for t in texts)


def name_limits(patterns: Iterable[NamePattern]) -> NameLimits:
    """The intermediate's name constraints that cover exactly these patterns' subtrees; a name
    type no pattern allows is shut (see ``NameLimits``)."""
    dns: list[str] = []
    ips: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    uri_hosts: list[str] = []
    any_dns = any_uri = False
    for pattern in patterns:
        if pattern.kind == "dns":
            if pattern.text == "*":
                any_dns = True
                continue
            dns.append(pattern.text.lstrip("=").replace("*.", ""))  # "*" is only ever a whole first label
        elif pattern.kind == "ip":
            ips.append(ipaddress.ip_network(pattern.text))
        else:
            host = _uri_subtree(pattern.text)
            if host is None:
                any_uri = True
            else:
                uri_hosts.append(host)
    return NameLimits(dns=tuple(dict.fromkeys(dns)), ips=tuple(dict.fromkeys(ips)),
                      uri_hosts=tuple(dict.fromkeys(uri_hosts)), any_dns=any_dns, any_uri=any_uri)


def _uri_subtree(text: str) -> str | None:
    """The URI name constraint (a host, or ``.suffix`` for hosts below it) that covers a URI
    pattern; None when its host has no fixed suffix to constrain (``spiffe://*``)."""
    host = text.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1].split(":", 1)[0].lower()
    if "*" in host:  # spiffe://*.internal/* -> .internal: only the part after the last "*" is fixed
        fixed = host[host.rindex("*") + 1:]
        host = fixed[fixed.find("."):] if "." in fixed else ""
        return host if host.strip(".") else None
    return host or None
