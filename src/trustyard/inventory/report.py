"""Renderings of an Inventory: a table for people (one row per distinct certificate, then
the findings, most severe first, each with its fix), JSON, CSV, and the
Prometheus text format for node_exporter's textfile collector."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime

from ..units import humanize
from .findings import SEVERITY
from .model import CertItem, Finding, Inventory, Severity


def to_json(inv: Inventory) -> str:
    """One document, one certificate/key/finding/error per line: readable and greppable,
    and made by the C encoder (``indent`` would switch json to its pure-Python encoder,
    a third of a 20,000-certificate scan)."""
    doc = inv.to_json()
    parts = []
    for name, items in doc.items():
        body = ",\n    ".join(json.dumps(i) for i in items)
        parts.append(f'  {json.dumps(name)}: [' + (f"\n    {body}\n  ]" if items else "]"))
    return "{\n" + ",\n".join(parts) + "\n}"


def summary(inv: Inventory) -> str:
    """``1 distinct certificate in 7 locations, 1 private key in 3 locations, 5 findings, 0 unreadable``."""
    distinct = len({c.fingerprint for c in inv.certificates})
    keys = len({k.spki or f"?{k.location}" for k in inv.keys})
    parts = [_count(distinct, "distinct certificate") + _where(len(inv.certificates)),
             _count(keys, "private key") + _where(len(inv.keys))]
    by_severity = Counter(str(f.severity) for f in inv.findings)
    found = _count(len(inv.findings), "finding")
    if by_severity:
        found += " (" + ", ".join(f"{by_severity[str(s)]} {s}" for s in reversed(Severity) if by_severity[str(s)]) + ")"
    tail = [f"{len(inv.suppressed)} suppressed"] if inv.suppressed else []
    return ", ".join([*parts, found, f"{len(inv.errors)} unreadable", *tail])


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _where(locations: int) -> str:
    return f" in {locations} locations" if locations > 1 else ""


SHORT = 16  # hex digits of the fingerprint the table prints; --where accepts them


def to_table(inv: Inventory, now: datetime | None = None) -> str:
    """One row per distinct certificate with its locations beneath, then the findings, most
    severe first, each with the ``fix:`` commands, then the summary line."""
    now = now or datetime.now(UTC)
    lines: list[str] = []
    by_fp: dict[str, list[CertItem]] = {}
    for c in inv.certificates:
        by_fp.setdefault(c.fingerprint, []).append(c)
    keys_by_spki: dict[str, list[str]] = {}
    for k in inv.keys:
        if k.spki:
            keys_by_spki.setdefault(k.spki, []).append(k.location)
    worst_of: dict[str, int] = {}
    for f in inv.findings:
        if f.fingerprint:
            worst_of[f.fingerprint] = max(worst_of.get(f.fingerprint, -1), f.severity)
    if by_fp:
        rows = []
        for fp, items in sorted(by_fp.items(), key=lambda kv: (-worst_of.get(kv[0], -1), kv[1][0].label)):
            first = items[0]
            end = first.cert.not_valid_after_utc
            left = humanize(end - now) if end > now else "expired"
            rows.append((fp, [fp[:SHORT], first.label, ",".join(first.roles), left, str(len(items))]))
        header = ["CERTIFICATE", "SUBJECT", "ROLE", "EXPIRES IN", "LOCATIONS"]
        widths = [max(len(r[i]) for r in [header] + [cols for _, cols in rows]) for i in range(len(header))]
        lines.append(_row(header, widths))
        for fp, cols in rows:
            lines.append(_row(cols, widths))
            for item in by_fp[fp]:
                tags = [t for t, on in (("trust store", item.trust_store), ("served", item.served)) if on]
                lines.append(f"    {item.location}" + (f"  ({', '.join(tags)})" if tags else ""))
            for key in keys_by_spki.get(by_fp[fp][0].spki, []):
                lines.append(f"    {key}  (private key)")
    else:
        lines.append("No certificates found.")
    lines.append("")
    lines += findings_lines(inv.findings, inv.suppressed,
                            lambda fp: (i.location for i in by_fp.get(fp, [])))
    lines.append("")
    lines.append(summary(inv))
    for err in inv.errors:
        lines.append(f"  unreadable: {err.location}: {err.detail}")
    return "\n".join(lines)


def findings_lines(findings: Sequence[Finding], suppressed: Sequence[Finding],
                   locations_of: Callable[[str], Iterable[str]]) -> Iterator[str]:
    """The findings part of the table, then the suppressed ones: for the in-memory report and
    the streamed one (``ledger_report``). ``locations_of``: every place a certificate is, so a
    finding at all of them need not list them again."""
    if findings:
        code_w = max(len("CODE"), *(len(f.code) for f in findings))
        yield f"{'SEVERITY':9} {'CODE':{code_w}}  {'CERTIFICATE':{SHORT}}  DETAIL"
        for f in findings:
            short = f.fingerprint[:SHORT] if f.fingerprint else "-"
            yield f"{f.severity!s:9} {f.code:{code_w}}  {short:{SHORT}}  {f.detail}"
            if not (f.fingerprint and set(f.locations) == set(locations_of(f.fingerprint))):
                for loc in f.locations:
                    yield f"{'':9} at: {loc}"
            if f.fix:
                yield f"{'':9} fix: {f.fix}"
    else:
        yield "No findings."
    if suppressed:
        yield ""
        yield f"SUPPRESSED ({len(suppressed)}, not counted)"
        for f in suppressed:
            facts = dict(f.facts)
            yield f"{'':9} {f.locations[0]}  {facts.get('construct', f.code)}  ({facts.get('suppressed_by')})"


def _row(cols: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()


CSV_FIELDS = ["location", "subject", "issuer", "sans", "not_before", "not_after", "serial",
              "fingerprint_sha256", "spki_sha256", "self_signed", "is_ca", "environment", "roles", "findings"]


def to_csv(inv: Inventory) -> str:
    codes: dict[str, list[str]] = {}
    for f in inv.findings:
        for loc in f.locations:
            codes.setdefault(loc, []).append(f.code)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for c in inv.certificates:
        row = c.to_json()
        row["sans"] = " ".join(row["sans"])
        row["roles"] = " ".join(row["roles"])
        row["findings"] = " ".join(dict.fromkeys(codes.get(c.location, []) + codes.get(c.group, [])))
        writer.writerow(row)
    return out.getvalue()


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def to_prometheus(inv: Inventory) -> str:
    lines = [
        "# HELP trustyard_certificate_not_after_timestamp_seconds When the certificate expires (Unix time).",
        "# TYPE trustyard_certificate_not_after_timestamp_seconds gauge",
    ]
    for c in inv.certificates:
        labels = f'location="{_label(c.location)}",subject="{_label(c.subject_text)}"'
        if c.environment:
            labels += f',environment="{_label(c.environment)}"'
        lines.append(f"trustyard_certificate_not_after_timestamp_seconds{{{labels}}} "
                     f"{int(c.cert.not_valid_after_utc.timestamp())}")
    counts = Counter(f.code for f in inv.findings)
    lines += ["# HELP trustyard_findings Findings of the last scan by code and severity.",
              "# TYPE trustyard_findings gauge"]
    for code in sorted(SEVERITY):
        lines.append(f'trustyard_findings{{code="{code}",severity="{SEVERITY[code]}"}} {counts.get(code, 0)}')
    lines += ["# HELP trustyard_scan_unreadable Locations the last scan could not read.",
              "# TYPE trustyard_scan_unreadable gauge", f"trustyard_scan_unreadable {len(inv.errors)}"]
    return "\n".join(lines) + "\n"


def worst(inv: Inventory) -> Severity | None:
    return max((f.severity for f in inv.findings), default=None)
