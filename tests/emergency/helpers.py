"""Issuing, renewing and checking in on an in-process authority, for the emergency tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustyard.ca import proofs
from trustyard.ca.authority import Authority
from trustyard.ca.fleet import Answer, Fleet
from trustyard.cli import main
from trustyard.store.fleet_store import FleetStore
from trustyard.x509.keys import KeyType, PrivateKey, generate_private_key
from trustyard.x509.summary import serial_text

from ..support import csr_pem


@dataclass
class Held:
    """A certificate and its key, as a holder keeps them."""

    key: PrivateKey
    chain: list[x509.Certificate]

    @property
    def serial(self) -> str:
        return serial_text(self.chain[0].serial_number)


def issue(authority: Authority[Any], name: str, key: PrivateKey | None = None) -> Held:
    key = key or generate_private_key(KeyType.EC_P256)
    from trustyard.x509.names import parse_name

    csr = csr_pem(key, [parse_name(name)])
    issued = authority.issue_for_token(csr, authority.mint_token("default", name, [name]))
    return Held(key, [issued.certificate, *issued.chain])


def renew(authority: Authority[Any], held: Held, key: PrivateKey | None = None) -> Held:
    """Renew ``held`` for ``key`` (a new one when None)."""
    key = key or generate_private_key(KeyType.EC_P256)
    csr = csr_pem(key, [])
    der = x509.load_pem_x509_csr(csr).public_bytes(Encoding.DER)
    proof = proofs.make(held.key, held.chain, proofs.RENEW, csr_sha256=proofs.csr_digest(der))
    issued = authority.renew(csr, proof)
    return Held(key, [issued.certificate, *issued.chain])


def report(instance: str, **extra: Any) -> dict[str, Any]:
    return {"instance": instance, "kind": "agent", "bundle_sha256": None, "failures": 0,
            "agent_version": "test", "interval_seconds": 60, **extra}


def checkin(fleet: Fleet, held: Held, instance: str, **extra: Any) -> Answer:
    return fleet.checkin(proofs.make(held.key, held.chain, proofs.CHECKIN, report=report(instance, **extra)))


def renew_now(answer: Answer) -> bool:
    return any(d.name == "renew-now" for d in answer.directives)


def fleet_of(authority: Authority[Any]) -> Fleet:
    return Fleet(authority, FleetStore(authority.store))  # type: ignore[arg-type]


def em(capsys: Any, home: Path, *args: str) -> tuple[int, str, str]:
    """``trustyard emergency ARGS --home HOME`` as the command runs it: (exit status, stdout, stderr)."""
    capsys.readouterr()
    code = main(["emergency", *args, "--home", str(home)])
    out, err = capsys.readouterr()
    return code, out, err


def status(capsys: Any, home: Path) -> dict[str, Any]:
    code, out, err = em(capsys, home, "status", "--json")
    assert code == 0, err
    return json.loads(out)


def audit(authority: Authority[Any], action: str) -> list[Any]:
    return [e for e in authority.store.audit_entries() if e.action == action]  # type: ignore[attr-defined]
