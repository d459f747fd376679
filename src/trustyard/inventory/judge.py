"""The rules of ``findings`` over a ``Ledger``: the same findings, with the same codes, details,
locations and order, from the correlation state of a streamed scan instead of a list of
parsed certificates. Each distinct certificate is looked at once; groups (one fingerprint,
one SPKI, one key unit, one container) are read back from the ledger one at a time, so
memory holds one group, not the scan.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from cryptography import x509

from ..units import format_time, humanize
from ..x509.verify import verify
from .findings import SEVERITY, Rules, conclude, warn_before
from .findings import _finding as finding
from .fixes import fix_named
from .ledger import Facts, Ledger, Occ
from .model import Finding, InsecureUse


def classify(ledger: Ledger) -> None:
    """``roles.classify`` for the self-signed certificates (the others' roles follow from
    basicConstraints and were set when they were added)."""
    changes: list[tuple[int, int, str]] = []
    for facts, occs in ledger.distinct("WHERE c.self_signed = 1"):
        issued = False
        if ledger.count("SELECT COUNT(*) FROM certs WHERE issuer = ? AND self_signed = 0", (facts.subject,)):
            cert = x509.load_der_x509_certificate(ledger.der(facts.fp))
            for fp, der in ledger.children(facts.subject):
                if fp == facts.fp:
                    continue
                try:
                    x509.load_der_x509_certificate(der).verify_directly_issued_by(cert)
                    issued = True
                    break
                except Exception:  # wrong key, unsupported algorithm: not its issuer
                    continue
        among_roots = any(o.trust_store and _self_signed_in_group(ledger, o.group) > 1 for o in occs)
        used = any((o.served and o.position == 0) or _has_key(ledger, "grp", o.group, facts.spki)
                   or _has_key(ledger, "unit", o.unit, facts.spki) for o in occs)
        named = bool(facts.named)
        if facts.ca_only:
            root, service = True, False
        elif issued:  # a root; a host name and use as a server make it a service certificate as well
            root, service = True, named and used
        elif among_roots and not (named or used):  # a service certificate pinned in a bundle stays one
            root, service = True, False
        else:
            root, service = False, True
        if (int(service), int(root)) != (facts.service, facts.root):
            changes.append((int(service), int(root), facts.fp))
    ledger.set_roles(changes)


def _self_signed_in_group(ledger: Ledger, group: str) -> int:
    return ledger.count("SELECT COUNT(DISTINCT o.fp) FROM occ o JOIN certs c ON c.fp = o.fp "
                        "WHERE o.grp = ? AND c.self_signed = 1", (group,))


def _has_key(ledger: Ledger, column: str, value: str, spki: str) -> bool:
    return ledger.count(f"SELECT COUNT(*) FROM keys WHERE {column} = ? AND spki = ?", (value, spki)) > 0


def per_certificate(ledger: Ledger, rules: Rules) -> tuple[list[Finding], list[Finding], list[Finding]]:
    """``window``, ``shape`` and ``shared_cert`` in one pass over the distinct certificates."""
    window: list[Finding] = []
    shape: list[Finding] = []
    shared: list[Finding] = []
    now = rules.now
    for item, occs in ledger.distinct():
        fp, label, where = item.fp, item.label, [o.location for o in occs]
        start, end = item.not_before, item.not_after
        if now > end:
            window.append(finding("expired", where, f"{label} expired {humanize(now - end)} ago "
                                  f"({format_time(end)})", label, fp))
        elif now < start:
            window.append(finding("not_yet_valid", where, f"{label} is valid only from {format_time(start)}",
                                  label, fp))
        elif end - now <= warn_before(rules, end - start):
            window.append(finding("expiring", where, f"{label} expires in {humanize(end - now)} "
                                  f"({format_time(end)})", label, fp))
        shape += _shape(item, occs, rules)
        if item.service:
            groups = dict.fromkeys(o.group for o in occs)
            if len(groups) > 1:
                shared.append(finding("shared_cert", where, f"{label} (sha256 {fp[:16]}...) is copied to "
                                      f"{len(groups)} places", label, fp))
    return window, shape, shared


def _shape(item: Facts, occs: list[Occ], rules: Rules) -> Iterator[Finding]:
    fp, label, where = item.fp, item.label, [o.location for o in occs]
    if (item.self_signed and item.service) or (item.self_signed and any(o.served and o.position == 0 for o in occs)):
        marked = " (it is marked CA:TRUE, as `openssl req -x509` makes it)" if item.is_ca else ""
        yield finding("self_signed_leaf", where, f"{label} is self-signed{marked}: every client "
                      "must be given this exact certificate, or turn verification off", label, fp)
    if item.weak:
        yield finding("weak_key", where, f"{label}: {item.weak}", label, fp)
    if not item.service:
        return
    if not item.host_san:
        yield finding("no_san", where, f"{label} has no DNS or IP subject alternative name; clients ignore the CN",
                      label, fp)
    lifetime = item.not_after - item.not_before
    if lifetime > rules.max_leaf_validity:
        yield finding("long_validity", where, f"{label} is valid for {lifetime.days} days "
                      f"(more than {rules.max_leaf_validity.days})", label, fp)
    stores = [o.location for o in occs if o.trust_store]
    if stores and not item.root:
        yield finding("leaf_in_trust_store", stores, f"the service certificate {label} is used as a "
                      f"trust anchor in {len(stores)} trust store(s): it pins one certificate and breaks "
                      "at its renewal", label, fp)


def copies(ledger: Ledger) -> list[Finding]:
    """``shared_key`` and ``cross_environment``: the service certificates and the keys of each
    SPKI, read SPKI by SPKI (both streams sorted by SPKI), reported in first-appearance order."""
    leaves = ledger.db.execute(
        "SELECT c.spki, o.grp, o.unit, o.env, o.fp, o.seq FROM occ o JOIN certs c ON c.fp = o.fp "
        "WHERE c.service = 1 ORDER BY c.spki, o.seq")
    keys = ledger.db.execute("SELECT spki, location, unit, env, seq FROM keys WHERE spki IS NOT NULL "
                             "ORDER BY spki, seq")
    out: list[tuple[tuple[int, int], Finding]] = []
    leaf = next(leaves, None)
    key = next(keys, None)
    while leaf is not None or key is not None:
        spki = min(r[0] for r in (leaf, key) if r is not None)
        places: list[tuple[str, str, str | None]] = []  # (group or key location, unit, environment)
        distinct: dict[str, None] = {}
        first_leaf = None
        while leaf is not None and leaf[0] == spki:
            places.append((leaf[1], leaf[2], leaf[3]))
            distinct.setdefault(leaf[4], None)
            first_leaf = leaf[5] if first_leaf is None else first_leaf
            leaf = next(leaves, None)
        holders: list[tuple[str, str]] = []
        first_key = None
        while key is not None and key[0] == spki:
            places.append((key[1], key[2], key[3]))
            holders.append((key[1], key[2]))
            first_key = key[4] if first_key is None else first_key
            key = next(keys, None)
        order = (0, first_leaf) if first_leaf is not None else (1, first_key or 0)
        key_units = {u for _, u in holders}
        if len(key_units) > 1 or len(distinct) > 1:
            where = [loc for loc, _ in holders]
            if len(distinct) > 1:
                where += [g for g, _, _ in places]
            held = (f"the private key is in {len(key_units)} places" if len(key_units) > 1 else
                    f"it is the key of {len(distinct)} different certificates")
            only = next(iter(distinct)) if len(distinct) == 1 else None
            out.append((order, finding("shared_key", where, f"one key pair (SPKI sha256 {spki[:16]}...) is shared: "
                                       f"{held}; replacing it means touching all", fingerprint=only)))
        envs = sorted({e for _, _, e in places if e})
        if len(envs) > 1:
            locations = [g for g, _, e in places if e]
            out.append((order, finding("cross_environment", locations, f"the same key (SPKI sha256 {spki[:16]}...) "
                                       f"is in environments {', '.join(envs)}: a leak in one is a leak in all")))
    out.sort(key=lambda pair: pair[0])
    return [f for _, f in out]


def keys(ledger: Ledger) -> Iterator[Finding]:
    for key, _ in ledger.iter_keys("WHERE mode IS NOT NULL AND encrypted = 0"):
        assert key.mode is not None
        if key.mode & 0o077:
            yield finding("key_unprotected", [key.location], f"unencrypted private key readable by "
                          f"{'others' if key.mode & 0o007 else 'the group'} (mode {oct(key.mode)[2:]})")
    rows = ledger.db.execute("SELECT unit, location, spki FROM keys WHERE spki IS NOT NULL ORDER BY unit, seq")
    for u, group in itertools.groupby(rows, key=lambda r: r[0]):
        yield from _mismatch(ledger, u, [(loc, spki) for _, loc, spki in group])


def _mismatch(ledger: Ledger, unit: str, key_items: list[tuple[str, str]]) -> Iterator[Finding]:
    certs = ledger.db.execute("SELECT o.location, c.service, c.spki, c.label FROM occ o JOIN certs c "
                              "ON c.fp = o.fp WHERE o.unit = ? ORDER BY o.seq", (unit,)).fetchall()
    if not certs:
        return
    leaves = [c for c in certs if c[1]] or certs[:1]
    spkis = {c[2] for c in leaves}
    for loc, spki in key_items:
        if spki not in spkis:
            yield finding("key_mismatch", [loc, *(c[0] for c in leaves)],
                          f"the key {loc} does not belong to the certificate {leaves[0][3]} next to it")


def chains(ledger: Ledger, rules: Rules) -> Iterator[Finding]:
    if not rules.anchors and not rules.environments:
        return
    known = [x509.load_der_x509_certificate(d) for d in ledger.ca_ders()]
    rows = ledger.db.execute("SELECT o.grp, o.location, o.trust, c.fp, c.service, c.label, c.usage, c.der "
                             "FROM occ o JOIN certs c ON c.fp = o.fp ORDER BY o.grp, o.position, o.seq")
    group: list[tuple[str, int, str, int, str, str, bytes]] = []
    current = None
    for grp, *rest in rows:
        if grp != current and group:
            yield from _chain_of(group, known, rules)
            group = []
        current = grp
        group.append(tuple(rest))
    if group:
        yield from _chain_of(group, known, rules)


def _chain_of(items: list[tuple[str, int, str, int, str, str, bytes]], known: list[x509.Certificate],
              rules: Rules) -> Iterator[Finding]:
    if not any(service and not trust for _, trust, _, service, *_ in items):
        return
    certs = [x509.load_der_x509_certificate(bytes(i[6])) for i in items]
    for idx, (location, trust, fp, service, label, usage, _) in enumerate(items):
        if not service or trust:
            continue
        served = certs[idx:]
        result = verify(served[0], served[1:], rules.anchors, usage=usage,  # type: ignore[arg-type]
                        at=rules.now, known=known, check_dates=False, check_leaf=False) if rules.anchors else None
        other = (rules.environments.lead_to(served, at_hand=[*known, *rules.anchors])
                 if rules.environments and (result is None or result.code is not None) else None)
        if other is not None:
            assert rules.environments is not None
            yield finding("wrong_environment", [location], f"{label}: {rules.environments.explain(other)}", label, fp)
        elif result is None:
            continue
        elif result.code == "missing_intermediate":
            yield finding("missing_intermediate", [location], f"{label}: {result.detail}", label, fp)
        elif result.code is not None:
            yield finding("untrusted_chain", [location], f"{label}: {result.code}: {result.detail}", label, fp)


def evaluate(ledger: Ledger, rules: Rules, insecure: list[InsecureUse]) -> list[Finding]:
    """Every finding of ``findings.evaluate``, in its order, from the ledger."""
    ledger.finish()
    classify(ledger)
    window, shape, shared = per_certificate(ledger, rules)
    found = [*window, *shape, *copies(ledger), *shared, *keys(ledger), *chains(ledger, rules),
             *(u.finding(SEVERITY[u.CODE]) for u in insecure if not u.suppressed_by)]
    names: dict[str, str] = {}

    def fix(f: Finding) -> str:
        fp = f.fingerprint or ""
        if fp not in names:
            facts = ledger.facts(fp) if fp else None
            names[fp] = facts.service_name if facts else "NAME"
        return fix_named(f, names[fp])

    return conclude(found, fix)


__all__ = ["classify", "evaluate"]
