"""Findings: their codes and severities, the rules' settings, and how findings are merged,
fixed and ordered. The rules themselves are in ``judge``: each reads the correlation state of
the whole scan (a ``Ledger``), because the interesting findings (shared keys, copies across
environments) are about several places."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from cryptography import x509

from ..environments import Environments
from ..units import Threshold
from .model import Finding, InsecureUse, Inventory, Severity

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


def suppressed(inv: Inventory) -> list[Finding]:
    """What an allow-insecure marker or an --ignore pattern silenced, reported apart."""
    return [u.finding(SEVERITY[u.CODE]) for u in inv.insecure if u.suppressed_by]


def evaluate(inv: Inventory, rules: Rules) -> list[Finding]:
    """Every finding about an inventory, most severe first. The rules are ``judge``'s, over a
    ledger of the inventory (one implementation for this and the streamed scan); the roles it
    judges (``service``, ``root``) are set on the inventory's certificates."""
    from .judge import evaluate as judged  # judge builds on this module
    from .ledger import Ledger

    with Ledger(spill_at=sys.maxsize) as ledger:  # the inventory is in memory already: so is its ledger
        ledger.add(inv)
        found = judged(ledger, rules, inv.insecure)
        roles = {fp: (bool(service), bool(root)) for fp, service, root in
                 ledger.db.execute("SELECT fp, service, root FROM certs WHERE self_signed = 1")}
    for item in inv.certificates:
        if item.fingerprint in roles:
            item.service, item.root = roles[item.fingerprint]
    return found


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
