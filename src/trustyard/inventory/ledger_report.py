"""The renderings of ``report`` (table, JSON, CSV, Prometheus text) for a streamed scan: the
same text, written piece by piece to a stream from the ledger, so a million certificates are
never one string or one list in memory."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _s
from typing import Any, TextIO

from ..units import format_time, humanize
from .findings import SEVERITY
from .ledger import Facts, Ledger, Occ
from .model import Finding, ReadError, Severity
from .report import CSV_FIELDS, SHORT, _count, _label, _row, _where, findings_lines


@dataclass
class Streamed:
    """What a streamed scan found: the ledger (certificates, keys) and, in memory, the findings,
    what was suppressed and what could not be read."""

    ledger: Ledger
    findings: list[Finding] = field(default_factory=list)
    suppressed: list[Finding] = field(default_factory=list)
    errors: list[ReadError] = field(default_factory=list)

    def close(self) -> None:
        self.ledger.close()

    @property
    def certificate_count(self) -> int:
        return self.ledger.count("SELECT COUNT(*) FROM occ")

    @property
    def key_count(self) -> int:
        return self.ledger.count("SELECT COUNT(*) FROM keys")


def cert_json(occ: Occ, facts: Facts) -> dict[str, Any]:
    """``CertItem.to_json`` from the ledger's rows."""
    return {
        "location": occ.location,
        "subject": facts.subject,
        "issuer": facts.issuer,
        "sans": json.loads(facts.sans),
        "not_before": format_time(facts.not_before),
        "not_after": format_time(facts.not_after),
        "serial": facts.serial,
        "fingerprint_sha256": facts.fp,
        "spki_sha256": facts.spki,
        "self_signed": bool(facts.self_signed),
        "is_ca": bool(facts.is_ca),
        "environment": occ.environment,
        "roles": facts.roles,
    }


_ROLES_JSON = {(1, 0): '["service"]', (0, 1): '["root"]', (1, 1): '["service", "root"]', (0, 0): '["intermediate"]'}


def cert_line(occ: Occ, facts: Facts) -> str:
    """``json.dumps(cert_json(occ, facts))`` written out: the certificates are most of a
    report's lines, and the SANs are stored as JSON text already."""
    env = "null" if occ.environment is None else _s(occ.environment)
    return (f'{{"location": {_s(occ.location)}, "subject": {_s(facts.subject)}, "issuer": {_s(facts.issuer)}, '
            f'"sans": {facts.sans}, "not_before": {_s(format_time(facts.not_before))}, '
            f'"not_after": {_s(format_time(facts.not_after))}, "serial": {_s(facts.serial)}, '
            f'"fingerprint_sha256": {_s(facts.fp)}, "spki_sha256": {_s(facts.spki)}, '
            f'"self_signed": {"true" if facts.self_signed else "false"}, '
            f'"is_ca": {"true" if facts.is_ca else "false"}, "environment": {env}, '
            f'"roles": {_ROLES_JSON[(int(bool(facts.service)), int(bool(facts.root)))]}}}')


def write_json(scan: Streamed, out: TextIO) -> None:
    """``report.to_json``, one line at a time."""
    sections: list[tuple[str, Iterator[dict[str, Any] | str]]] = [
        ("certificates", (cert_line(o, f) for o, f in scan.ledger.occurrences())),
        ("keys", (k.to_json() for k, _ in scan.ledger.iter_keys())),
        ("findings", (f.to_json() for f in scan.findings)),
        ("suppressed", (f.to_json() for f in scan.suppressed)),
        ("errors", (e.to_json() for e in scan.errors)),
    ]
    out.write("{\n")
    for n, (name, items) in enumerate(sections):
        out.write(("" if n == 0 else ",\n") + f"  {json.dumps(name)}: [")
        first = True
        for item in items:
            out.write(("\n    " if first else ",\n    ") + (item if isinstance(item, str) else json.dumps(item)))
            first = False
        out.write("]" if first else "\n  ]")
    out.write("\n}")


def summary(scan: Streamed) -> str:
    ledger = scan.ledger
    distinct = ledger.count("SELECT COUNT(*) FROM certs")
    keys = ledger.count("SELECT COUNT(DISTINCT COALESCE(spki, '?' || location)) FROM keys")
    parts = [_count(distinct, "distinct certificate") + _where(scan.certificate_count),
             _count(keys, "private key") + _where(scan.key_count)]
    by_severity = Counter(str(f.severity) for f in scan.findings)
    found = _count(len(scan.findings), "finding")
    if by_severity:
        found += " (" + ", ".join(f"{by_severity[str(s)]} {s}" for s in reversed(Severity) if by_severity[str(s)]) + ")"
    tail = [f"{len(scan.suppressed)} suppressed"] if scan.suppressed else []
    return ", ".join([*parts, found, f"{len(scan.errors)} unreadable", *tail])


def write_table(scan: Streamed, out: TextIO, now: datetime | None = None) -> None:
    """``report.to_table``: rows are sorted by the database (worst finding, subject, first seen)."""
    now = now or datetime.now(UTC)
    ledger = scan.ledger
    ledger.db.execute("CREATE TEMP TABLE IF NOT EXISTS worst (fp TEXT PRIMARY KEY, sev INTEGER)")
    ledger.db.execute("DELETE FROM worst")
    worst_of: dict[str, int] = {}
    for f in scan.findings:
        if f.fingerprint:
            worst_of[f.fingerprint] = max(worst_of.get(f.fingerprint, -1), f.severity)
    ledger.db.executemany("INSERT INTO worst VALUES (?, ?)", worst_of.items())

    def rows() -> Iterator[tuple[Facts, list[Occ], list[str]]]:
        for facts, occs in ledger.distinct("LEFT JOIN worst w ON w.fp = c.fp",
                                           order="COALESCE(w.sev, -1) DESC, c.label, c.first"):
            end = facts.not_after
            left = humanize(end - now) if end > now else "expired"
            yield facts, occs, [facts.fp[:SHORT], facts.label, ",".join(facts.roles), left, str(len(occs))]

    header = ["CERTIFICATE", "SUBJECT", "ROLE", "EXPIRES IN", "LOCATIONS"]
    widths = [len(h) for h in header]
    any_rows = False
    for _, _, cols in rows():
        any_rows = True
        widths = [max(w, len(c)) for w, c in zip(widths, cols, strict=True)]
    if any_rows:
        out.write(_row(header, widths) + "\n")
        for facts, occs, cols in rows():
            out.write(_row(cols, widths) + "\n")
            for o in occs:
                tags = [t for t, on in (("trust store", o.trust_store), ("served", o.served)) if on]
                out.write(f"    {o.location}" + (f"  ({', '.join(tags)})" if tags else "") + "\n")
            for key, _ in ledger.iter_keys("WHERE spki = ?", (facts.spki,)):
                out.write(f"    {key.location}  (private key)\n")
    else:
        out.write("No certificates found.\n")
    out.write("\n")
    for line in findings_lines(scan.findings, scan.suppressed, ledger.locations_of):
        out.write(line + "\n")
    out.write("\n" + summary(scan))
    for err in scan.errors:
        out.write(f"\n  unreadable: {err.location}: {err.detail}")


def write_csv(scan: Streamed, out: TextIO) -> None:
    codes: dict[str, list[str]] = {}
    for f in scan.findings:
        for loc in f.locations:
            codes.setdefault(loc, []).append(f.code)
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for occ, facts in scan.ledger.occurrences():
        row = cert_json(occ, facts)
        row["sans"] = " ".join(row["sans"])
        row["roles"] = " ".join(row["roles"])
        row["findings"] = " ".join(dict.fromkeys(codes.get(occ.location, []) + codes.get(occ.group, [])))
        writer.writerow(row)


def write_prometheus(scan: Streamed, out: TextIO) -> None:
    out.write("# HELP trustyard_certificate_not_after_timestamp_seconds When the certificate expires (Unix time).\n"
              "# TYPE trustyard_certificate_not_after_timestamp_seconds gauge\n")
    for occ, facts in scan.ledger.occurrences():
        labels = f'location="{_label(occ.location)}",subject="{_label(facts.subject)}"'
        if occ.environment:
            labels += f',environment="{_label(occ.environment)}"'
        out.write(f"trustyard_certificate_not_after_timestamp_seconds{{{labels}}} "
                  f"{int(facts.not_after.timestamp())}\n")
    counts = Counter(f.code for f in scan.findings)
    lines = ["# HELP trustyard_findings Findings of the last scan by code and severity.",
             "# TYPE trustyard_findings gauge"]
    for code in sorted(SEVERITY):
        lines.append(f'trustyard_findings{{code="{code}",severity="{SEVERITY[code]}"}} {counts.get(code, 0)}')
    lines += ["# HELP trustyard_scan_unreadable Locations the last scan could not read.",
              "# TYPE trustyard_scan_unreadable gauge", f"trustyard_scan_unreadable {len(scan.errors)}"]
    out.write("\n".join(lines) + "\n")


__all__ = ["Streamed", "cert_json", "summary", "write_csv", "write_json", "write_prometheus", "write_table"]
