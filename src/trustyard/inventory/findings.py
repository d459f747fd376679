"""Items -> findings. Each rule is a small function over the whole inventory, because the
interesting findings (shared keys, copies across environments) are about several places."""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Iterator

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from ..units import Threshold, humanize
from ..x509.chain import weakness
from ..x509.verify import Usage, verify
from .model import CertItem, Finding, Inventory, Severity

SEVERITY: dict[str, Severity] = {
    "expired": Severity.ERROR,
    "not_yet_valid": Severity.ERROR,
    "expiring": Severity.WARNING,
    "self_signed_leaf": Severity.WARNING,
    "shared_key": Severity.WARNING,
    "cross_environment": Severity.ERROR,
    "shared_cert": Severity.INFO,
    "weak_key": Severity.ERROR,
    "no_san": Severity.WARNING,
    "long_validity": Severity.WARNING,
    "leaf_in_trust_store": Severity.WARNING,
    "key_unprotected": Severity.ERROR,
    "key_mismatch": Severity.CRITICAL,
    "untrusted_chain": Severity.ERROR,
    "missing_intermediate": Severity.ERROR,
}


@dataclass(frozen=True)
class Rules:
    now: datetime
    warn: Threshold = Threshold(absolute=timedelta(days=30))
    max_leaf_validity: timedelta = timedelta(days=398)
    anchors: tuple[x509.Certificate, ...] = ()  # from --ca; empty means: no chain findings


def _finding(code: str, locations: list[str] | tuple[str, ...], detail: str, subject: str | None = None) -> Finding:
    return Finding(code, SEVERITY[code], tuple(dict.fromkeys(locations)), detail, subject)


def _leaves(inv: Inventory) -> Iterator[CertItem]:
    return (c for c in inv.certificates if not c.is_ca)


def _unit(location_group: str, served: bool = False) -> tuple[str, str]:
    """Where an item lives as a unit: its container, or its directory plus name stem, so
    ``tls.crt`` and ``tls.key`` side by side count as one place."""
    if served or "#" in location_group:
        return ("group", location_group)
    return _stem(location_group)


def window(inv: Inventory, rules: Rules) -> Iterator[Finding]:
    for item in inv.certificates:
        c = item.cert
        start, end = c.not_valid_before_utc, c.not_valid_after_utc
        if rules.now > end:
            yield _finding("expired", [item.location], f"{item.label} expired {humanize(rules.now - end)} ago "
                           f"({end.isoformat()})", item.label)
        elif rules.now < start:
            yield _finding("not_yet_valid", [item.location], f"{item.label} is valid only from "
                           f"{start.isoformat()}", item.label)
        elif end - rules.now <= rules.warn.of(end - start):
            yield _finding("expiring", [item.location], f"{item.label} expires in {humanize(end - rules.now)} "
                           f"({end.isoformat()})", item.label)


def shape(inv: Inventory, rules: Rules) -> Iterator[Finding]:
    for item in inv.certificates:
        c = item.cert
        if item.leaf_self_signed or (item.served and item.position == 0 and item.self_signed):
            yield _finding("self_signed_leaf", [item.location], f"{item.label} is self-signed: every client "
                           "must be given this exact certificate, or turn verification off", item.label)
        reasons = weakness(c)
        if reasons:
            yield _finding("weak_key", [item.location], f"{item.label}: {', '.join(reasons)}", item.label)
        if item.is_ca:
            continue
        if not any(isinstance(n, (x509.DNSName, x509.IPAddress)) for n in item.sans):
            yield _finding("no_san", [item.location], f"{item.label} has no DNS or IP subject alternative "
                           "name; clients ignore the CN", item.label)
        lifetime = c.not_valid_after_utc - c.not_valid_before_utc
        if lifetime > rules.max_leaf_validity:
            yield _finding("long_validity", [item.location], f"{item.label} is valid for {lifetime.days} days "
                           f"(more than {rules.max_leaf_validity.days})", item.label)
        if item.trust_store:
            yield _finding("leaf_in_trust_store", [item.location], f"the leaf {item.label} is used as a trust "
                           "anchor: it pins one certificate and breaks at its renewal", item.label)


def copies(inv: Inventory, rules: Rules) -> Iterator[Finding]:
    by_spki: dict[str, list[tuple[str, tuple[str, str], str | None]]] = defaultdict(list)
    for item in _leaves(inv):
        by_spki[item.spki].append((item.group, _unit(item.group, item.served), item.environment))
    for key in inv.keys:
        if key.spki:
            by_spki[key.spki].append((key.location, _unit(key.group), key.environment))
    for spki, places in by_spki.items():
        units = {u for _, u, _ in places}
        if len(units) > 1:
            yield _finding("shared_key", [g for g, _, _ in places], f"one public key (SPKI sha256 "
                           f"{spki[:16]}...) is held in {len(units)} places: replacing it means touching all")
        envs = sorted({e for _, _, e in places if e})
        if len(envs) > 1:
            locations = [g for g, _, e in places if e]
            yield _finding("cross_environment", locations, f"the same key (SPKI sha256 {spki[:16]}...) is in "
                           f"environments {', '.join(envs)}: a leak in one is a leak in all")
    by_fp: dict[str, list[CertItem]] = defaultdict(list)
    for item in _leaves(inv):
        by_fp[item.fingerprint].append(item)
    for fp, items in by_fp.items():
        groups = list(dict.fromkeys(i.group for i in items))
        if len(groups) > 1:
            subject = items[0].label
            yield _finding("shared_cert", [i.location for i in items],
                           f"{subject} (sha256 {fp[:16]}...) is copied to {len(groups)} places", subject)


def keys(inv: Inventory, rules: Rules) -> Iterator[Finding]:
    for key in inv.keys:
        if key.mode is not None and not key.encrypted and key.mode & 0o077:
            yield _finding("key_unprotected", [key.location], f"unencrypted private key readable by "
                           f"{'others' if key.mode & 0o007 else 'the group'} (mode {oct(key.mode)[2:]})")
    for _, key_items, certs in _pairs(inv):
        leaves = [c for c in certs if not c.is_ca] or certs[:1]
        spkis = {c.spki for c in leaves}
        for key in key_items:
            if key.spki and leaves and key.spki not in spkis:
                yield _finding("key_mismatch", [key.location, *(c.location for c in leaves)],
                               f"the key {key.location} does not belong to the certificate "
                               f"{leaves[0].label} next to it")


_STEM_NOISE = re.compile(r"([-_.]?(key|cert|crt|fullchain|privkey|chain|pub))+$", re.I)


def _stem(location: str) -> tuple[str, str]:
    # os.path, not PurePath: this runs twice per certificate and key, and PurePath is slow
    parent, name = os.path.split(location)
    parent = parent.rstrip("/") or ("/" if parent else ".")
    for suffix in (".pem", ".crt", ".cer", ".der", ".key"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return parent, _STEM_NOISE.sub("", name)


def _pairs(inv: Inventory) -> Iterator[tuple[list[str], list, list[CertItem]]]:  # type: ignore[type-arg]
    """Keys and certificates found side by side: one container, or sibling files whose
    names differ only by key/cert words (``tls.crt``+``tls.key``, ``cert.pem``+``privkey.pem``)."""
    certs_by_unit: dict[tuple[str, str], list[CertItem]] = defaultdict(list)
    keys_by_unit: dict[tuple[str, str], list] = defaultdict(list)  # type: ignore[type-arg]
    for c in inv.certificates:
        certs_by_unit[_unit(c.group, c.served)].append(c)
    for k in inv.keys:
        keys_by_unit[_unit(k.group)].append(k)
    for unit, key_items in keys_by_unit.items():
        certs = certs_by_unit.get(unit, [])
        if certs:
            yield [c.location for c in certs], key_items, certs


def chains(inv: Inventory, rules: Rules) -> Iterator[Finding]:
    if not rules.anchors:
        return
    known = [c.cert for c in inv.certificates if c.is_ca]
    by_group: dict[str, list[CertItem]] = defaultdict(list)
    for c in inv.certificates:
        by_group[c.group].append(c)
    for items in by_group.values():
        items.sort(key=lambda i: i.position)
        for idx, item in enumerate(items):
            if item.is_ca or item.trust_store:
                continue
            served = [item.cert] + [i.cert for i in items[idx + 1:]]
            # The one verifier, with the rules of the usage the leaf is for; dates and the
            # leaf's shape have findings of their own (window, shape).
            result = verify(served[0], served[1:], rules.anchors, usage=_usage(item.cert), at=rules.now,
                            known=known, check_dates=False, check_leaf=False)
            if result.code == "missing_intermediate":
                yield _finding("missing_intermediate", [item.location], f"{item.label}: {result.detail}",
                               item.label)
            elif result.code is not None:
                yield _finding("untrusted_chain", [item.location],
                               f"{item.label}: {result.code}: {result.detail}", item.label)


def _usage(cert: x509.Certificate) -> Usage:
    """A certificate whose EKU allows clientAuth but not serverAuth is judged as a client's."""
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        return "server"
    if ExtendedKeyUsageOID.CLIENT_AUTH in eku and ExtendedKeyUsageOID.SERVER_AUTH not in eku:
        return "client"
    return "server"


RULES: tuple[Callable[[Inventory, Rules], Iterator[Finding]], ...] = (window, shape, copies, keys, chains)


def evaluate(inv: Inventory, rules: Rules) -> list[Finding]:
    found = [f for rule in RULES for f in rule(inv, rules)]
    return sorted(found, key=lambda f: (-f.severity, f.code, f.locations))
