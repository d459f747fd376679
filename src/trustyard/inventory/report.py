"""Renderings of an Inventory: a table for people (most severe first), JSON, CSV, and the
Prometheus text format for node_exporter's textfile collector."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter

from .findings import SEVERITY
from .model import Inventory, Severity


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


def to_table(inv: Inventory) -> str:
    lines = []
    if inv.findings:
        width = max(len(f.code) for f in inv.findings)
        lines.append(f"{'SEVERITY':9} {'CODE':{width}} DETAIL / LOCATIONS")
        for f in inv.findings:
            lines.append(f"{str(f.severity):9} {f.code:{width}} {f.detail}")
            for loc in f.locations:
                lines.append(f"{'':9} {'':{width}}   {loc}")
    else:
        lines.append("no findings")
    lines.append("")
    lines.append(f"{len(inv.certificates)} certificates, {len(inv.keys)} private keys, "
                 f"{len(inv.findings)} findings, {len(inv.errors)} unreadable")
    for err in inv.errors:
        lines.append(f"  unreadable: {err.location}: {err.detail}")
    return "\n".join(lines)


CSV_FIELDS = ["location", "subject", "issuer", "sans", "not_before", "not_after", "serial",
              "fingerprint_sha256", "spki_sha256", "self_signed", "is_ca", "environment", "findings"]


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
        row["findings"] = " ".join(codes.get(c.location, []) + codes.get(c.group, []))
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
