"""What an error message says about where the client went: the name it expected, the
address and port it connected to, the trust bundle it used.

``explain`` fills its sentences and the confirming ``trustyard doctor`` command from
these; anything a message does not say stays ``None`` and is left out, never guessed.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_FLAGS = re.I

# The name the client expected in the certificate, as each client words a mismatch.
_NAME = tuple(re.compile(p, _FLAGS) for p in (
    r"target (?:host name|ipv4 address|ipv6 address) '([^']+)'",            # curl
    r"is not valid for '([^']+)'",                                             # Python ssl
    r"certificate is valid for .*?, not (\S+)",                                # Go
    r"cannot validate certificate for (\S+) because",                          # Go (IP without IP SANs)
    r"not valid for any names, but wanted to match (\S+)",                     # Go
    r"Host: (\S+?)\.? is not in the cert's altnames",                          # Node
    r"IP: (\S+) is not in the cert's list",                                    # Node
    r"No subject alternative names matching IP address (\S+) found",           # Java
    r"No subject alternative DNS name matching (\S+?)\.? found",               # Java
    r"certificate not valid for name \"([^\"]+)\"",                            # rustls 0.23
    r"Peer name (\S+) is not in peer certificate",                             # grpc-core
))

# Where the client connected: (host, port) pairs, most specific first.
_ADDRESS = tuple(re.compile(p, _FLAGS) for p in (
    r"HTTPSConnectionPool\(host='([^']+)', port=(\d+)\)",                      # requests / urllib3
    r"Failed to connect to (\S+) port (\d+)",                                  # curl
    r"dial tcp (\[[^\]]+\]|[^\s:\[]+):(\d+)",                                  # Go
    r"ipv[46]:(\[[^\]]+\]|[^\s:\[]+):(\d+)",                                   # grpc-core
    r"\b(?:ECONNREFUSED|ETIMEDOUT|ECONNRESET|EHOSTUNREACH) (\S+):(\d+)",       # Node
    r"\bhttps://(\[[^\]]+\]|[^\s/:\"')\]]+)(?::(\d+))?",                       # a URL in the message
))

_HOST_ONLY = tuple(re.compile(p, _FLAGS) for p in (
    r"Could not resolve host: (\S+)",                                          # curl
    r"ENOTFOUND (\S+)",                                                        # Node
    r"lookup (\S+?) on ",                                                      # Go
    r"UnknownHostException: ([^\s:]+)",                                        # Java
    r"Failed to resolve '([^']+)'",                                            # urllib3
))

_BUNDLE = tuple(re.compile(p, _FLAGS) for p in (
    r"CAfile: (\S+)",                                                          # curl -v
    r"cafile=['\"]?([^'\"\s,)]+)",                                             # Python ssl / requests verify=
))

# Lines that are a client's help text, not the failure (curl's link to its documentation).
_HELP = re.compile(r"^(More details here: |curl failed to verify|establish a secure connection|how to fix it).*$",
                   re.I | re.M)


@dataclass(frozen=True)
class Mentioned:
    name: str | None = None  # the name the client expected in the certificate
    host: str | None = None  # the address it connected to
    port: int | None = None
    bundle: str | None = None

    @property
    def name_is_ip(self) -> bool:
        return is_ip(self.name or "")

    def values(self) -> dict[str, str]:
        """Placeholder values for corpus sentences: only what the message said."""
        out = {"name": self.name, "host": self.host, "port": str(self.port) if self.port else None,
               "bundle": self.bundle}
        return {k: v for k, v in out.items() if v}


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def _clean(value: str) -> str:
    return value.strip().strip("\"'`.,;()[]")


def mentioned(text: str) -> Mentioned:
    text = _HELP.sub("", text)
    name = next((_clean(m.group(1)) for p in _NAME if (m := p.search(text))), None)
    host: str | None = None
    port: int | None = None
    for pattern in _ADDRESS:
        m = pattern.search(text)
        if m:
            host = _clean(m.group(1))
            if m.group(2):
                port = int(m.group(2))
            elif pattern.pattern.startswith(r"\bhttps://"):
                port = 443
            break
    if host is None:
        host = next((_clean(m.group(1)) for p in _HOST_ONLY if (m := p.search(text))), None)
    bundle = next((m.group(1) for p in _BUNDLE if (m := p.search(text))), None)
    return Mentioned(name=name or host, host=host or name, port=port, bundle=bundle)


def address(host: str | None, port: int | None) -> str:
    """HOST:PORT as doctor takes it; ``<host>``/``<port>`` stand for what the message did not say."""
    shown = host or "<host>"
    if host and ":" in host:
        shown = f"[{host}]"
    return f"{shown}:{port or '<port>'}"


__all__ = ["Mentioned", "address", "is_ip", "mentioned"]
