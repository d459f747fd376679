"""The scan: sources -> one Inventory -> findings; and the blast-radius query."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from ..x509.chain import check_chain
from . import judge
from .endpoints import DEFAULT_CONCURRENCY, Endpoint, scan_endpoints
from .findings import Rules, evaluate, suppressed
from .insecure import ignore, scan_file
from .ledger import DEFAULT_SPILL_AT, Ledger
from .ledger_report import Streamed
from .model import InsecureUse, Inventory, ReadError
from .sources import DEFAULT_PASSWORDS, ReadOptions, iter_files, read_file


@dataclass(frozen=True)
class ScanOptions:
    paths: tuple[str, ...] = ()
    environments: tuple[tuple[str, str], ...] = ()  # (name, path)
    endpoints: tuple[Endpoint, ...] = ()
    ca_bundles: tuple[str, ...] = ()
    passwords: tuple[bytes, ...] = DEFAULT_PASSWORDS
    rules: Rules = field(default_factory=lambda: Rules(now=datetime.now(UTC)))
    timeout: float = 5.0
    concurrency: int = DEFAULT_CONCURRENCY
    code: bool = True  # also look for code and configuration that switch verification off
    ignore: tuple[str, ...] = ()  # globs: verification_disabled in these files is reported as suppressed


Progress = Callable[[int], None]


def _read_tree(paths: list[str], options: ReadOptions, sink: Callable[[Inventory], None], progress: Progress | None,
               seen: set[tuple[int, int]], code: bool = False) -> None:
    """Each file's certificates, keys and errors, one file at a time, to ``sink``."""
    def on_error(location: str, detail: str) -> None:
        sink(Inventory(errors=[ReadError(location, detail)]))

    for path in iter_files(paths, on_error, seen):
        part = read_file(path, options)
        if code:
            part.insecure += scan_file(path)
        sink(part)
        if progress:
            progress(1)


def _read_all(options: ScanOptions, sink: Callable[[Inventory], None], progress: Progress | None
              ) -> list[x509.Certificate]:
    """Every source of the scan to ``sink``, in the order of the report; returns the --ca anchors."""
    passwords = options.passwords
    anchors: list[x509.Certificate] = []
    seen: set[tuple[int, int]] = set()  # a file is read once, by the most specific claim on it

    def bundle_sink(part: Inventory) -> None:
        anchors.extend(c.cert for c in part.certificates)
        sink(part)

    for bundle in options.ca_bundles:
        _read_tree([bundle], ReadOptions(passwords=passwords, trust_store=True), bundle_sink, None, seen)
    for name, path in options.environments:
        _read_tree([path], ReadOptions(passwords=passwords, environment=name), sink, progress, seen, options.code)
    _read_tree(list(options.paths), ReadOptions(passwords=passwords), sink, progress, seen, options.code)
    if options.endpoints:
        sink(scan_endpoints(options.endpoints, timeout=options.timeout, concurrency=options.concurrency,
                            on_done=(lambda: progress(1)) if progress else None))
    return anchors


def _rules(options: ScanOptions, anchors: list[x509.Certificate]) -> Rules:
    rules = options.rules
    if anchors and not rules.anchors:
        rules = replace(rules, anchors=tuple(anchors))
    return rules


def run_scan(options: ScanOptions, progress: Progress | None = None) -> Inventory:
    """The scan with every certificate in memory, as an Inventory (for ``migrate``, ``inspect``
    and ``--where``); ``stream_scan`` is the same scan in bounded memory."""
    inv = Inventory()
    anchors = _read_all(options, inv.extend, progress)
    inv.insecure = ignore(inv.insecure, options.ignore)
    inv.findings = evaluate(inv, _rules(options, anchors))
    inv.suppressed = suppressed(inv)
    return inv


def stream_scan(options: ScanOptions, progress: Progress | None = None, *, spill_at: int = DEFAULT_SPILL_AT,
                directory: str | None = None) -> Streamed:
    """The scan in bounded memory: each file's certificates go into a ``Ledger`` (spilled to a
    temporary SQLite file past ``spill_at`` rows) and are dropped; the findings are judged from
    the ledger after the walk. The caller closes the result (it deletes the spill file)."""
    ledger = Ledger(spill_at, directory)
    scan = Streamed(ledger)
    insecure: list[InsecureUse] = []

    def sink(part: Inventory) -> None:
        ledger.add(part)
        scan.errors += part.errors
        insecure.extend(part.insecure)

    try:
        anchors = _read_all(options, sink, progress)
        kept = ignore(insecure, options.ignore)
        scan.findings = judge.evaluate(ledger, _rules(options, anchors), kept)
        scan.suppressed = suppressed(Inventory(insecure=kept))
    except BaseException:
        ledger.close()
        raise
    return scan


def where(inv: Inventory, sha256: str) -> dict[str, Any]:
    """Blast radius: every place holding the certificate or key with this certificate or SPKI
    fingerprint, and every trust store whose anchors would accept that certificate."""
    wanted = resolve(inv, sha256)
    certs = [c for c in inv.certificates if wanted in (c.fingerprint, c.spki)]
    keys = [k for k in inv.keys if k.spki == wanted or (certs and k.spki in {c.spki for c in certs})]
    trusted_by: list[str] = []
    stores: dict[str, list[x509.Certificate]] = {}
    for c in inv.certificates:
        if c.trust_store:
            stores.setdefault(c.group, []).append(c.cert)
    known = [c.cert for c in inv.certificates if c.is_ca]
    targets = list({c.fingerprint: c.cert for c in certs}.values())
    for store, anchor_certs in stores.items():
        # a path through intermediates found elsewhere still ends at this store's anchor
        if any(check_chain([t], anchor_certs, known).anchor is not None for t in targets):
            trusted_by.append(store)
    return {
        "query": wanted,
        "certificates": [c.to_json() for c in certs],
        "keys": [k.to_json() for k in keys],
        "trusted_by": trusted_by,
        "locations": list(dict.fromkeys([c.location for c in certs] + [k.location for k in keys])),
    }


MIN_PREFIX = 6


def resolve(inv: Inventory, text: str) -> str:
    """A full certificate or SPKI fingerprint from a prefix of it (colons and case ignored),
    such as the 16 hex digits the table prints; ``ValueError`` when it is too short or names
    several. A full fingerprint is returned as given, found or not."""
    wanted = text.strip().lower().replace(":", "")
    if wanted.startswith("sha256"):
        wanted = wanted[6:].lstrip("=")
    if not wanted or any(ch not in "0123456789abcdef" for ch in wanted):
        raise ValueError(f"{text!r} is not a SHA-256 fingerprint: give hex digits, e.g. the CERTIFICATE column")
    if len(wanted) == 64:
        return wanted
    if len(wanted) < MIN_PREFIX:
        raise ValueError(f"{text!r} is too short: give at least {MIN_PREFIX} hex digits of the fingerprint")
    matches = sorted({fp for c in inv.certificates for fp in (c.fingerprint, c.spki) if fp.startswith(wanted)}
                     | {k.spki for k in inv.keys if k.spki and k.spki.startswith(wanted)})
    if len(matches) > 1:
        raise ValueError(f"{text!r} matches {len(matches)} fingerprints ({', '.join(m[:16] for m in matches[:5])}"
                         f"{', ...' if len(matches) > 5 else ''}): give more digits")
    return matches[0] if matches else wanted


def count_files(paths: list[str]) -> int:
    return sum(1 for _ in iter_files(paths, lambda *_: None)) if paths else 0


__all__ = ["ScanOptions", "Streamed", "count_files", "resolve", "run_scan", "stream_scan", "where"]
