"""Which addresses validation may contact: the CA's SSRF guard.

The CA connects to names its clients choose, so every connection target passes ``check``
first, and the connection then goes to exactly the address that was checked (no second
resolution an attacker's DNS could answer differently):

- never link-local (which holds the cloud metadata services), known metadata addresses,
  multicast, unspecified or reserved addresses, whatever the allow-list says;
- never the CA's own port on a local address (the CA validating itself): the port it listens
  on, fixed when the guard is built (the guard is immutable);
- otherwise only addresses inside an allowed CIDR, or names under an allowed domain suffix;
  a suffix never reaches a loopback address (the CA's own host): only a listed CIDR does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "168.63.129.16"))


class TargetRefused(Exception):
    """The address may not be contacted; the message says why (it names no fetched content)."""


@dataclass(frozen=True)
class TargetGuard:
    networks: tuple[Network, ...] = ()
    suffixes: tuple[str, ...] = ()
    own_ports: frozenset[int] = frozenset()

    @classmethod
    def from_allow_list(cls, entries: Iterable[str], own_ports: Iterable[int] = ()) -> TargetGuard:
        networks, suffixes = [], []
        for entry in entries:
            text = str(entry).strip()
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                suffix = text.lower().lstrip("*").strip(".")
                if not suffix:
                    raise ValueError(f"invalid validation target {entry!r}: a CIDR or a domain suffix") from None
                suffixes.append(suffix)
        return cls(tuple(networks), tuple(suffixes), frozenset(own_ports))

    def check(self, address: IPAddress, port: int, name: str | None = None) -> None:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        # A 6to4 address (2002:a9fe:a9fe::) reaches the IPv4 address it embeds through a relay.
        seen = [address, *([address.sixtofour] if isinstance(address, ipaddress.IPv6Address)
                           and address.sixtofour else [])]
        if any(a in METADATA or a.is_link_local for a in seen):
            raise TargetRefused(f"{address} is link-local or a metadata service: never contacted")
        if address.is_multicast or address.is_unspecified or address.is_reserved:
            raise TargetRefused(f"{address} is not a unicast host address")
        if port in self.own_ports and (address.is_loopback or address.is_private):
            raise TargetRefused(f"port {port} is the CA's own port")
        if any(address in n for n in self.networks):
            return
        host = (name or "").lower().rstrip(".")
        if host and any(host == s or host.endswith("." + s) for s in self.suffixes):
            if any(a.is_loopback for a in seen):
                raise TargetRefused(f"{address} is a loopback address: reached only when a CIDR lists it")
            return
        raise TargetRefused(f"{address} is not in the validation allow-list")
