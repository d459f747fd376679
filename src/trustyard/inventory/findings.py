"""Items -> findings. Each rule is a small function over the whole inventory, because the
interesting findings (shared keys, copies across environments) are about several places."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from ..environments import Environments
from ..units import Threshold, format_time, humanize
from ..x509.chain import weakness
from ..x509.verify import Usage, verify
from .fixes import fix_for
from .model import CertItem, Finding, InsecureUse, Inventory, KeyItem, Severity
from .roles import classify
from .roles import unit as _unit

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
    "wrong_environment": Severity.ERROR,
    InsecureUse.CODE: Severity.ERROR,
}


@dataclass(frozen=True)
class Rules:
    now: datetime
    warn: Threshold | None = None  # None: DEFAULT_WARN_SHARE of the lifetime, at most DEFAULT_WARN_MAX
    max_leaf_validity: timedelta = timedelta(days=398)
    anchors: tuple[x509.Certificate, ...] = ()  # from --ca; empty means: no chain findings
    environments: Environments | None = None  # other environments' roots: wrong_environment findings


DEFAULT_WARN_SHARE = 1 / 3
DEFAULT_WARN_MAX = timedelta(days=30)


def warn_before(rules: Rules, lifetime: timedelta) -> timedelta:
    """How long before expiry a certificate is ``expiring``: the --warn threshold, else a third
    of its lifetime and at most 30 days (a 24 h certificate warns at 8 h left, a 1-year one at 30 d)."""
    if rules.warn is not None:
        return rules.warn.of(lifetime)
    return min(lifetime * DEFAULT_WARN_SHARE, DEFAULT_WARN_MAX)


def _finding(code: str, locations: list[str] | tuple[str, ...], detail: str, subject: str | None = None,
             fingerprint: str | None = None) -> Finding:
    return Finding(code, SEVERITY[code], tuple(dict.fromkeys(locations)), detail, subject, fingerprint)


def _leaves(inv: Inventory) -> Iterator[CertItem]:
    return (c for c in inv.certificates if c.service)


def _distinct(inv: Inventory) -> dict[str, list[CertItem]]:
    """Certificates by fingerprint: a finding about a certificate is reported once, at every copy."""
    by_fp: dict[str, list[CertItem]] = defaultdict(list)
    for item in inv.certificates:
        by_fp[item.fingerprint].append(item)
    return by_fp


def window(inv: Inventory, rules: Rules) -> Iterator[Finding]:
    for fp, items in _distinct(inv).items():
        item, where = items[0], [i.location for i in items]
        c = item.cert
        start, end = c.not_valid_before_utc, c.not_valid_after_utc
        if rules.now > end:
            yield _finding("expired", where, f"{item.label} expired {humanize(rules.now - end)} ago "
                           f"({format_time(end)})", item.label, fp)
        elif rules.now < start:
            yield _finding("not_yet_valid", where, f"{item.label} is valid only from "
                           f"{format_time(start)}", item.label, fp)
        elif end - rules.now <= warn_before(rules, end - start):
            yield _finding("expiring", where, f"{item.label} expires in {humanize(end - rules.now)} "
                           f"({format_time(end)})", item.label, fp)


def shape(inv: Inventory, rules: Rules) -> Iterator[Finding]:
    for fp, items in _distinct(inv).items():
        item, where = items[0], [i.location for i in items]
        c = item.cert
        if item.leaf_self_signed or any(i.served and i.position == 0 and i.self_signed for i in items):
            marked = " (it is marked CA:TRUE, as `openssl req -x509` makes it)" if item.is_ca else ""
            yield _finding("self_signed_leaf", where, f"{item.label} is self-signed{marked}: every client "
                           "must be given this exact certificate, or turn verification off", item.label, fp)
        reasons = weakness(c)
        if reasons:
            yield _finding("weak_key", where, f"{item.label}: {', '.join(reasons)}", item.label, fp)
        if not item.service:
            continue
        if not any(isinstance(n, (x509.DNSName, x509.IPAddress)) for n in item.sans):
            yield _finding("no_san", where, f"{item.label} has no DNS or IP subject alternative "
                           "name; clients ignore the CN", item.label, fp)
        lifetime = c.not_valid_after_utc - c.not_valid_before_utc
        if lifetime > rules.max_leaf_validity:
            yield _finding("long_validity", where, f"{item.label} is valid for {lifetime.days} days "
                           f"(more than {rules.max_leaf_validity.days})", item.label, fp)
        stores = [i.location for i in items if i.trust_store]
        if stores and not item.root:
            yield _finding("leaf_in_trust_store", stores, f"the service certificate {item.label} is used as a "
                           f"trust anchor in {len(stores)} trust store(s): it pins one certificate and breaks "
                           "at its renewal", item.label, fp)


def copies(inv: Inventory, rules: Rules) -> Iterator[Finding]:
    by_spki: dict[str, list[tuple[str, tuple[str, str], str | None]]] = defaultdict(list)
    for item in _leaves(inv):
        by_spki[item.spki].append((item.group, _unit(item.group, item.served), item.environment))
    holders: dict[str, list[tuple[str, tuple[str, str]]]] = defaultdict(list)  # SPKI -> private key copies
    for key in inv.keys:
        if key.spki:
            by_spki[key.spki].append((key.location, _unit(key.group), key.environment))
            holders[key.spki].append((key.location, _unit(key.group)))
    certs_of: dict[str, dict[str, CertItem]] = defaultdict(dict)  # SPKI -> distinct service certificates
    for item in _leaves(inv):
        certs_of[item.spki].setdefault(item.fingerprint, item)
    for spki, places in by_spki.items():
        key_units = {u for _, u in holders.get(spki, [])}
        distinct = certs_of.get(spki, {})
        if len(key_units) > 1 or len(distinct) > 1:
            # The private key copied to several places, or one key pair under several certificates
            # (the copies of one certificate are shared_cert's).
            where = [loc for loc, _ in holders.get(spki, [])]
            if len(distinct) > 1:
                where += [g for g, _, _ in places]
            held = (f"the private key is in {len(key_units)} places" if len(key_units) > 1 else
                    f"it is the key of {len(distinct)} different certificates")
            only = next(iter(distinct)) if len(distinct) == 1 else None
            yield _finding("shared_key", where, f"one key pair (SPKI sha256 {spki[:16]}...) is shared: {held}; "
                           "replacing it means touching all", fingerprint=only)
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
                           f"{subject} (sha256 {fp[:16]}...) is copied to {len(groups)} places", subject, fp)


def keys(inv: Inventory, rules: Rules) -> Iterator[Finding]:
    for key in inv.keys:
        if key.mode is not None and not key.encrypted and key.mode & 0o077:
            yield _finding("key_unprotected", [key.location], f"unencrypted private key readable by "
                           f"{'others' if key.mode & 0o007 else 'the group'} (mode {oct(key.mode)[2:]})")
    for _, key_items, certs in _pairs(inv):
        leaves = [c for c in certs if c.service] or certs[:1]
        spkis = {c.spki for c in leaves}
        for key in key_items:
            if key.spki and leaves and key.spki not in spkis:
                yield _finding("key_mismatch", [key.location, *(c.location for c in leaves)],
                               f"the key {key.location} does not belong to the certificate "
                               f"{leaves[0].label} next to it")


def _pairs(inv: Inventory) -> Iterator[tuple[list[str], list[KeyItem], list[CertItem]]]:
    """Keys and certificates found side by side: one container, or sibling files whose
    names differ only by key/cert words (``tls.crt``+``tls.key``, ``cert.pem``+``privkey.pem``)."""
    certs_by_unit: dict[tuple[str, str], list[CertItem]] = defaultdict(list)
    keys_by_unit: dict[tuple[str, str], list[KeyItem]] = defaultdict(list)
    for c in inv.certificates:
        certs_by_unit[_unit(c.group, c.served)].append(c)
    for k in inv.keys:
        keys_by_unit[_unit(k.group)].append(k)
    for unit, key_items in keys_by_unit.items():
        certs = certs_by_unit.get(unit, [])
        if certs:
            yield [c.location for c in certs], key_items, certs


def chains(inv: Inventory, rules: Rules) -> Iterator[Finding]:
    if not rules.anchors and not rules.environments:
        return
    known = [c.cert for c in inv.certificates if c.is_ca]
    by_group: dict[str, list[CertItem]] = defaultdict(list)
    for c in inv.certificates:
        by_group[c.group].append(c)
    for items in by_group.values():
        items.sort(key=lambda i: i.position)
        for idx, item in enumerate(items):
            if not item.service or item.trust_store:
                continue
            served = [item.cert] + [i.cert for i in items[idx + 1:]]
            # The one verifier, with the rules of the usage the leaf is for; dates and the
            # leaf's shape have findings of their own (window, shape).
            result = verify(served[0], served[1:], rules.anchors, usage=_usage(item.cert), at=rules.now,
                            known=known, check_dates=False, check_leaf=False) if rules.anchors else None
            other = (rules.environments.lead_to(served, at_hand=[*known, *rules.anchors])
                     if rules.environments and (result is None or result.code is not None) else None)
            if other is not None:
                assert rules.environments is not None
                yield _finding("wrong_environment", [item.location],
                               f"{item.label}: {rules.environments.explain(other)}", item.label, item.fingerprint)
            elif result is None:
                continue
            elif result.code == "missing_intermediate":
                yield _finding("missing_intermediate", [item.location], f"{item.label}: {result.detail}",
                               item.label, item.fingerprint)
            elif result.code is not None:
                yield _finding("untrusted_chain", [item.location],
                               f"{item.label}: {result.code}: {result.detail}", item.label, item.fingerprint)


def _usage(cert: x509.Certificate) -> Usage:
    """A certificate whose EKU allows clientAuth but not serverAuth is judged as a client's."""
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        return "server"
    if ExtendedKeyUsageOID.CLIENT_AUTH in eku and ExtendedKeyUsageOID.SERVER_AUTH not in eku:
        return "client"
    return "server"


def verification(inv: Inventory, rules: Rules) -> Iterator[Finding]:
    """Code, configuration and scripts that switch certificate verification off (``insecure.py``)."""
    for use in inv.insecure:
        if not use.suppressed_by:
            yield use.finding(SEVERITY[use.CODE])


def suppressed(inv: Inventory) -> list[Finding]:
    """What an allow-insecure marker or an --ignore pattern silenced, reported apart."""
    return [u.finding(SEVERITY[u.CODE]) for u in inv.insecure if u.suppressed_by]


RULES: tuple[Callable[[Inventory, Rules], Iterator[Finding]], ...] = (window, shape, copies, keys, chains,
                                                                      verification)


def evaluate(inv: Inventory, rules: Rules) -> list[Finding]:
    classify(inv)
    by_fp = {c.fingerprint: c for c in inv.certificates}
    return conclude((f for rule in RULES for f in rule(inv, rules)), lambda f: fix_for(f, by_fp.get(f.fingerprint or "")))


def conclude(findings: Iterable[Finding], fix: Callable[[Finding], str]) -> list[Finding]:
    """Merge, add the fix, sort: most severe first, then by code and (natural) location."""
    merged: dict[object, Finding] = {}
    for n, f in enumerate(findings):
        # the same finding about one certificate at several copies is one finding, at all of them
        key = (f.code, f.fingerprint, f.detail) if f.fingerprint else n
        old = merged.get(key)
        merged[key] = f if old is None else replace(old, locations=tuple(dict.fromkeys(old.locations + f.locations)))
    found = [replace(f, fix=fix(f)) for f in merged.values()]
    return sorted(found, key=lambda f: (-f.severity, f.code, [_natural(loc) for loc in f.locations]))


def _natural(location: str) -> list[str | int]:
    """``app.py:9`` before ``app.py:12``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", location)]
