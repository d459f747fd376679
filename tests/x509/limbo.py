"""Run the C2SP x509-limbo cases through trustyard's verifier, doctor's offline layers and
plain cryptography. ``PYTHONPATH=src python3 -m tests.x509.limbo [-v]`` prints the
agreement table (``-v``: and every disagreement)."""

from __future__ import annotations

import ipaddress
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

# ``../shared/x509-limbo/limbo.json`` beside the checkout (or beside any directory above it)
LIMBO = next((p / "shared" / "x509-limbo" / "limbo.json" for p in Path(__file__).resolve().parents
              if (p / "shared" / "x509-limbo" / "limbo.json").is_file()), Path("limbo.json"))


@dataclass(frozen=True)
class Outcome:
    accepted: bool | None  # None: crashed
    layer: str | None = None
    code: str | None = None
    detail: str = ""


@lru_cache(maxsize=1)
def cases() -> list[dict[str, Any]]:
    return list(json.loads(LIMBO.read_text())["testcases"])


def _load(pem: str) -> x509.Certificate:
    with warnings.catch_warnings():  # serial-zero cases are exactly what is being tested
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return x509.load_pem_x509_certificate(pem.encode())


def materials(case: dict[str, Any]) -> dict[str, Any]:
    peer = case["expected_peer_name"]
    return {
        "peer": _load(case["peer_certificate"]),
        "intermediates": [_load(c) for c in case["untrusted_intermediates"]],
        "anchors": [_load(c) for c in case["trusted_certs"]],
        "usage": "client" if case["validation_kind"] == "CLIENT" else "server",
        "name": None if peer is None else peer["value"],
        "name_kind": None if peer is None else peer["kind"],
        "at": datetime.fromisoformat(case["validation_time"]) if case["validation_time"] else None,
        "max_depth": case["max_chain_depth"],
        "crls": [x509.load_pem_x509_crl(c.encode()) for c in case.get("crls") or ()],
    }


def run_verifier(case: dict[str, Any]) -> Outcome:
    from trustyard.x509.verify import verify

    m = materials(case)
    v = verify(m["peer"], m["intermediates"], m["anchors"], usage=m["usage"], name=m["name"], at=m["at"],
               max_depth=m["max_depth"], crls=m["crls"])
    return Outcome(v.ok, v.layer, v.code, v.detail)


def run_doctor(case: dict[str, Any]) -> Outcome:
    from trustyard.diagnose.doctor import classify_chain

    m = materials(case)
    verdict = classify_chain([m["peer"], *m["intermediates"]], m["anchors"], name=m["name"], usage=m["usage"],
                             now=m["at"], max_depth=m["max_depth"], crls=m["crls"])
    if verdict is None:
        return Outcome(True)
    return Outcome(False, verdict.layer, verdict.code, verdict.summary)


def run_cryptography(case: dict[str, Any]) -> Outcome:
    """Plain cryptography, the way its own limbo harness drives it (client verifier for CLIENT,
    which its harness skips; it takes no CRLs)."""
    from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

    m = materials(case)
    builder = PolicyBuilder().store(Store(m["anchors"]))
    if m["at"] is not None:
        builder = builder.time(m["at"])
    if m["max_depth"] is not None:
        builder = builder.max_chain_depth(m["max_depth"])
    try:
        if m["usage"] == "server" and m["name"] is not None:
            name: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(m["name"])) if m["name_kind"] == "IP" \
                else x509.DNSName(m["name"])
            verifier: Any = builder.build_server_verifier(name)  # type: ignore[arg-type]
        else:
            verifier = builder.build_client_verifier()
        verifier.verify(m["peer"], m["intermediates"])
    except (VerificationError, ValueError) as exc:
        return Outcome(False, detail=str(exc))
    return Outcome(True)


def judge(case: dict[str, Any], run: Callable[[dict[str, Any]], Outcome]) -> tuple[str, Outcome]:
    """agree | false_accept | false_reject | crash."""
    try:
        out = run(case)
    except Exception as exc:
        return "crash", Outcome(None, detail=f"{type(exc).__name__}: {exc}")
    expected = case["expected_result"] == "SUCCESS"
    if out.accepted == expected:
        return "agree", out
    return ("false_accept" if out.accepted else "false_reject"), out


RUNNERS: dict[str, Callable[[dict[str, Any]], Outcome]] = {
    "trustyard verifier": run_verifier, "trustyard doctor": run_doctor, "cryptography (plain)": run_cryptography,
}
KINDS = ("agree", "false_accept", "false_reject", "crash")


def table() -> tuple[str, dict[str, dict[str, list[str]]]]:
    results: dict[str, dict[str, list[str]]] = {}
    for title, run in RUNNERS.items():
        by_kind: dict[str, list[str]] = {k: [] for k in KINDS}
        for case in cases():
            kind, _ = judge(case, run)
            by_kind[kind].append(case["id"])
        results[title] = by_kind
    lines = [f"x509-limbo, {len(cases())} cases", "",
             "| | agree | false accept | false reject | crash |", "|---|---|---|---|---|"]
    for title, by_kind in results.items():
        lines.append(f"| {title} | " + " | ".join(str(len(by_kind[k])) for k in KINDS) + " |")
    return "\n".join(lines), results


if __name__ == "__main__":
    import sys

    text, results = table()
    print(text)
    if "-v" in sys.argv:
        for title, by_kind in results.items():
            for kind in ("false_accept", "false_reject", "crash"):
                for case_id in by_kind[kind]:
                    print(f"{title}: {kind}: {case_id}")
