"""Issuance as a pipeline of small named rules.

Each rule looks at an ``IssuanceRequest`` and either returns nothing or raises
``PolicyDenied(rule, value, detail)``. ``Policy.decide`` runs them in order and returns
the ``Decision``: the exact names and lifetime the certificate will get.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509

from ..errors import PolicyDenied
from ..units import format_duration, format_time
from ..x509.keys import KeyType
from ..x509.names import Name, name_text, reads_as_ip
from .patterns import NamePattern
from .uris import uri_problem


@dataclass(frozen=True)
class IssuanceRequest:
    names: tuple[Name, ...]
    key_type: KeyType | None
    key_description: str
    asks_for_ca: bool
    ttl: timedelta | None
    now: datetime
    issuer_not_after: datetime
    ttl_cap: timedelta | None = None  # the lifetime a bootstrap token or the renewed certificate allows
    cap_source: str = ""  # what set the cap, for the refusal: "the token", "the renewed certificate"


@dataclass(frozen=True)
class Decision:
    names: tuple[Name, ...]
    not_before: datetime
    not_after: datetime
    eku: tuple[str, ...]


Rule = Callable[["Policy", IssuanceRequest], None]


def no_ca(policy: Policy, req: IssuanceRequest) -> None:
    if req.asks_for_ca:
        raise PolicyDenied("no_ca", "CA:TRUE", "the CSR asks for a CA certificate (basicConstraints CA:TRUE); "
                           "trustyard issues only leaf certificates")


def has_names(policy: Policy, req: IssuanceRequest) -> None:
    if not req.names:
        raise PolicyDenied("has_names", None, "the request names no DNS name, IP address or URI")


def uri_names_exact(policy: Policy, req: IssuanceRequest) -> None:
    """A URI SAN (a SPIFFE ID above all) must be in normal form: no ``..``, ``%``, empty
    segment, query, fragment, port or userinfo; one identity has one spelling."""
    for name in req.names:
        if isinstance(name, x509.UniformResourceIdentifier):
            problem = uri_problem(name.value)
            if problem:
                raise PolicyDenied("uri_names_exact", name.value,
                                   f"URI {name.value!r} is not in normal form: {problem}")


def dns_names_are_not_ips(policy: Policy, req: IssuanceRequest) -> None:
    """A DNS SAN that reads as an IP address (``10.0.0.1``, ``0x7f.1``) would let a DNS pattern
    such as ``*`` grant an address: IPs are IP SANs, allowed only by a CIDR."""
    for name in req.names:
        if isinstance(name, x509.DNSName) and reads_as_ip(name.value):
            raise PolicyDenied("dns_names_are_not_ips", name.value,
                               f"{name.value!r} reads as an IP address, not a DNS name: ask for it as an IP SAN")


def names_allowed(policy: Policy, req: IssuanceRequest) -> None:
    for name in req.names:
        if not any(p.matches(name, policy.wildcards) for p in policy.allow):
            allowed = ", ".join(str(p) for p in policy.allow) or "(nothing)"
            if isinstance(name, x509.DNSName) and name.value.startswith("*."):
                allowed += "; wildcards need wildcards = true (below a *.suffix) or a *.*.suffix or =*.name pattern"
            raise PolicyDenied("names_allowed", name_text(name),
                               f"{name_text(name)!r} is not allowed by provisioner {policy.provisioner!r} "
                               f"(allowed: {allowed})")


def key_type_allowed(policy: Policy, req: IssuanceRequest) -> None:
    if req.key_type is None or req.key_type not in policy.key_types:
        allowed = ", ".join(k.value for k in policy.key_types)
        raise PolicyDenied("key_type_allowed", req.key_description,
                           f"key type {req.key_description} is not allowed (allowed: {allowed})")


def ttl_bounds(policy: Policy, req: IssuanceRequest) -> None:
    ttl = req.ttl if req.ttl is not None else policy.default_ttl
    if ttl < policy.min_ttl or ttl > policy.max_ttl:
        raise PolicyDenied("ttl_bounds", format_duration(ttl),
                           f"lifetime {format_duration(ttl)} is outside [{format_duration(policy.min_ttl)}, "
                           f"{format_duration(policy.max_ttl)}]")


def within_cap(policy: Policy, req: IssuanceRequest) -> None:
    """A token minted with a certificate lifetime, and a renewal, never buy a longer one."""
    ttl = req.ttl if req.ttl is not None else policy.default_ttl
    if req.ttl_cap is not None and ttl > req.ttl_cap:
        raise PolicyDenied("ttl_cap", format_duration(ttl),
                           f"lifetime {format_duration(ttl)} is longer than the {format_duration(req.ttl_cap)} "
                           f"{req.cap_source or 'the request'} allows: ask for at most that")


def within_issuer(policy: Policy, req: IssuanceRequest) -> None:
    left = req.issuer_not_after - req.now
    if left < policy.min_ttl:
        raise PolicyDenied("within_issuer", format_time(req.issuer_not_after),
                           f"the intermediate expires at {format_time(req.issuer_not_after)}: too soon to issue a "
                           f"certificate of at least {format_duration(policy.min_ttl)}; rotate the intermediate")


DEFAULT_RULES: tuple[Rule, ...] = (no_ca, has_names, uri_names_exact, dns_names_are_not_ips, names_allowed,
                                   key_type_allowed, ttl_bounds, within_cap, within_issuer)


@dataclass(frozen=True)
class Policy:
    provisioner: str
    allow: tuple[NamePattern, ...]
    default_ttl: timedelta = timedelta(hours=24)
    min_ttl: timedelta = timedelta(minutes=5)
    max_ttl: timedelta = timedelta(days=30)
    key_types: tuple[KeyType, ...] = tuple(KeyType)
    eku: tuple[str, ...] = ("serverAuth", "clientAuth")
    backdate: timedelta = timedelta(minutes=1)
    wildcards: bool = False  # wildcard names below a *.suffix pattern (see policy.patterns)
    rules: Sequence[Rule] = field(default=DEFAULT_RULES)

    def check_names(self, names: Sequence[Name]) -> None:
        """The name rules alone: used when a token is minted, before any CSR exists."""
        probe = IssuanceRequest(tuple(names), None, "", False, None, datetime.min, datetime.max)
        has_names(self, probe)
        uri_names_exact(self, probe)
        dns_names_are_not_ips(self, probe)
        names_allowed(self, probe)

    def check_key(self, key_type: KeyType | None, key_description: str) -> None:
        """The key rule alone: run on a CSR's key before its signature is verified."""
        key_type_allowed(self, IssuanceRequest((), key_type, key_description, False, None, datetime.min, datetime.max))

    def check_ttl(self, ttl: timedelta) -> None:
        """The lifetime rule alone: used when a token is minted with a certificate lifetime."""
        ttl_bounds(self, IssuanceRequest((), None, "", False, ttl, datetime.min, datetime.max))

    def decide(self, req: IssuanceRequest) -> Decision:
        for rule in self.rules:
            rule(self, req)
        ttl = req.ttl if req.ttl is not None else self.default_ttl
        # A leaf never outlives its intermediate: clamp rather than fail, the CA is rotating.
        not_after = min(req.now + ttl, req.issuer_not_after)
        return Decision(names=req.names, not_before=req.now - self.backdate, not_after=not_after, eku=self.eku)
