"""Check-ins with certificates the CA no longer honours, on the authority's clock: a renewed
certificate still checks in for a while (a slow reload), but not long after; an expired one
never; each refusal leaves the relying-party table as it was."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustyard.ca import proofs
from trustyard.ca.fleet import SUPERSEDED_GRACE, Fleet
from trustyard.ca.home import load_authority
from trustyard.client import make_csr, new_key_and_csr
from trustyard.errors import Forbidden
from trustyard.store.fleet_store import FleetStore
from trustyard.x509.keys import KeyType

from ..support import PASSWORD

REPORT = {"instance": "r1", "kind": "agent", "bundle_sha256": None, "agent_version": "t", "interval_seconds": 60}


def test_superseded_long_ago_and_expired_certificates_are_refused(sqlite_home: Path) -> None:
    authority = load_authority(sqlite_home, PASSWORD, minting=True)
    now = datetime.now(UTC)
    authority.clock = lambda: now
    try:
        fleet = Fleet(authority, FleetStore(authority.store))
        token = authority.mint_token("default", "r.internal", ["r.internal"])
        key, csr = new_key_and_csr(KeyType.EC_P256, ["r.internal"])
        old = authority.issue_for_token(csr, token, timedelta(hours=24))
        renewal_csr = make_csr(key, [])  # the renewal's key does not matter here
        der = x509.load_pem_x509_csr(renewal_csr).public_bytes(Encoding.DER)
        authority.renew(renewal_csr, proofs.make(key, [old.certificate], proofs.RENEW,
                                                 csr_sha256=proofs.csr_digest(der)))

        def checkin() -> object:
            return fleet.checkin(proofs.make(key, [old.certificate], proofs.CHECKIN, report=REPORT))

        assert checkin().accepted  # type: ignore[attr-defined]  # just renewed: still accepted
        table = fleet.parties()
        authority.clock = lambda: now + SUPERSEDED_GRACE + timedelta(minutes=1)
        with pytest.raises(Forbidden) as refused:
            checkin()
        assert refused.value.code == "superseded"
        authority.clock = lambda: now + timedelta(hours=25)
        with pytest.raises(Forbidden) as refused:
            checkin()
        assert refused.value.code == "expired"
        assert fleet.parties() == table
    finally:
        authority.store.close()
