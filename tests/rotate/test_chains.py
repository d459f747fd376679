"""Chains after a rotation on a real CA home, checked with ``openssl verify``: a root rotation's
new leaves validate for a client holding only the old root (through the cross-certificate) and
for one holding only the new root; an intermediate rotation's leaves chain to the new
intermediate; the retiring gate counts what the old intermediate still vouches for."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustyard.ca import bundle
from trustyard.ca.config import load_config
from trustyard.ca.home import load_authority, open_home_store
from trustyard.ca.rotation_watch import home_journal
from trustyard.testing import need
from trustyard.x509.summary import fingerprint_sha256, pem_bundle

from ..support import PASSWORD, new_csr


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def issue(home: Path, name: str):  # type: ignore[no-untyped-def]
    authority = load_authority(home, PASSWORD, minting=True)
    try:
        _key, csr = new_csr(name)
        return authority.issue_for_token(csr, authority.mint_token("default", name, [name]))
    finally:
        authority.store.close()


def to_active(home: Path, kind: str) -> tuple:  # type: ignore[type-arg]
    """Prepare a ``kind`` rotation and advance it to active, the gates passed on a fake clock."""
    config = load_config(home)
    store = open_home_store(config, migrate=False)
    clock = Clock()
    journal = home_journal(config, PASSWORD, store, clock=clock)
    row = journal.prepare(kind, "test", "chain test")
    journal.advance("test", "publish")
    clock.now += timedelta(hours=3)  # past the dwell (no relying party checks in here)
    journal.advance("test", "adopt")
    row = journal.advance("test", "activate")
    return row, journal, clock, store


def openssl_verify(tmp: Path, anchors: list[x509.Certificate], untrusted: list[x509.Certificate],
                   leaf: x509.Certificate) -> subprocess.CompletedProcess[str]:
    files = {}
    for name, certs in (("anchors", anchors), ("untrusted", untrusted), ("leaf", [leaf])):
        files[name] = tmp / f"{name}.pem"
        files[name].write_text(pem_bundle(certs))
    args = [need("openssl", package="openssl"), "verify", "-CAfile", str(files["anchors"])]
    if untrusted:
        args += ["-untrusted", str(files["untrusted"])]
    return subprocess.run([*args, str(files["leaf"])], capture_output=True, text=True, timeout=30)


def test_after_a_root_rotation_old_root_clients_validate_through_the_cross_certificate(
        sqlite_home: Path, tmp_path: Path) -> None:
    old_root = x509.load_pem_x509_certificate((sqlite_home / "ca" / "root.crt").read_bytes())
    row, journal, _clock, store = to_active(sqlite_home, "root")
    store.close()
    made = journal.maker.load(row.paths)
    assert made.root is not None and made.cross is not None
    assert made.cross.issuer == old_root.subject and made.cross.subject == made.root.subject
    assert made.cross.public_key() == made.root.public_key()

    issued = issue(sqlite_home, "orders.internal")
    leaf, chain = issued.certificate, list(issued.chain)
    assert leaf.issuer == made.intermediate.subject
    assert [fingerprint_sha256(c) for c in chain] == [fingerprint_sha256(made.intermediate),
                                                      fingerprint_sha256(made.cross)]
    only_old = openssl_verify(tmp_path, [old_root], chain, leaf)
    assert only_old.returncode == 0, only_old.stdout + only_old.stderr
    only_new = openssl_verify(tmp_path, [made.root], chain, leaf)
    assert only_new.returncode == 0, only_new.stdout + only_new.stderr
    without_cross = openssl_verify(tmp_path, [old_root], [made.intermediate], leaf)
    assert without_cross.returncode != 0  # the cross-certificate is what old-root clients need
    # The new root and the cross-certificate were published in the trust bundle beside the old root.
    bundle_certs = x509.load_pem_x509_certificates((sqlite_home / "ca" / "roots.pem").read_bytes())
    assert {fingerprint_sha256(c) for c in bundle_certs} >= {fingerprint_sha256(old_root), fingerprint_sha256(made.root),
                                                      fingerprint_sha256(made.cross)}
    published = bundle.latest(store)
    assert published is not None and published.version == 2  # init published 1
    assert {fingerprint_sha256(c) for c in published.certificates} == {fingerprint_sha256(c) for c in bundle_certs}
    key_file = sqlite_home / row.paths["root_key"]
    assert key_file.stat().st_mode & 0o777 == 0o600 and b"ENCRYPTED" in key_file.read_bytes()


def test_an_intermediate_rotation_switches_issuance_and_retires_when_old_leaves_are_gone(
        ca_home: Path, tmp_path: Path) -> None:
    """On SQLite and on PostgreSQL (``ca_home``)."""
    sqlite_home = ca_home
    old_root = x509.load_pem_x509_certificate((sqlite_home / "ca" / "root.crt").read_bytes())
    before = issue(sqlite_home, "before.internal")
    row, journal, clock, store = to_active(sqlite_home, "intermediate")
    try:
        made = journal.maker.load(row.paths)
        key_file = sqlite_home / row.paths["intermediate_key"]
        assert key_file.stat().st_mode & 0o777 == 0o600 and b"ENCRYPTED" in key_file.read_bytes()
        after = issue(sqlite_home, "after.internal")
        assert before.certificate.issuer != after.certificate.issuer == made.intermediate.subject
        assert list(after.chain) == [made.intermediate]
        result = openssl_verify(tmp_path, [old_root], list(after.chain), after.certificate)
        assert result.returncode == 0, result.stdout + result.stderr
        assert openssl_verify(tmp_path, [old_root], list(before.chain), after.certificate).returncode != 0

        clock.now += timedelta(hours=2)
        row = journal.advance("test", "window over")
        assert row.state == "retiring"
        gate = journal.gate(row)
        assert gate.still_vouched == 1 and not gate.ok  # "before.internal" is unexpired and not replaced
        authority = load_authority(sqlite_home, PASSWORD)
        authority.revoke(before.record.serial, admin=True)
        authority.store.close()
        assert journal.gate(row).still_vouched == 0
        assert journal.advance("test", "nothing left").state == "retired"
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["intermediate", "root"])
def test_a_rollback_leaves_issuance_and_the_bundle_as_they_were(sqlite_home: Path, kind: str) -> None:
    bundle_before = (sqlite_home / "ca" / "roots.pem").read_bytes()
    config = load_config(sqlite_home)
    store = open_home_store(config, migrate=False)
    try:
        journal = home_journal(config, PASSWORD, store)
        row = journal.prepare(kind, "test", "try")
        journal.advance("test", "publish")
        assert (sqlite_home / "ca" / "roots.pem").read_bytes() != bundle_before
        journal.rollback("test", "changed my mind")
    finally:
        store.close()
    assert x509.load_pem_x509_certificates((sqlite_home / "ca" / "roots.pem").read_bytes()) == \
        x509.load_pem_x509_certificates(bundle_before)
    assert not (sqlite_home / row.paths["intermediate_key"]).exists()
    issued = issue(sqlite_home, "still.internal")
    assert issued.certificate.issuer == x509.load_pem_x509_certificate(
        (sqlite_home / "ca" / "intermediate.crt").read_bytes()).subject


def test_the_server_certificate_moves_to_the_new_root_with_the_cross_certificate(
        sqlite_home: Path, tmp_path: Path) -> None:
    from trustyard.ca.rotation_watch import renew_server_certificate

    old_root = x509.load_pem_x509_certificate((sqlite_home / "ca" / "root.crt").read_bytes())
    config = load_config(sqlite_home)
    store = open_home_store(config, migrate=False)
    try:
        assert renew_server_certificate(config, PASSWORD, datetime.now(UTC), store) is None  # young, same root
    finally:
        store.close()
    row, journal, _clock, store = to_active(sqlite_home, "root")
    try:
        made = journal.maker.load(row.paths)
        cert = renew_server_certificate(config, PASSWORD, datetime.now(UTC), store)
        assert cert is not None and cert.issuer == made.root.subject  # type: ignore[union-attr]
        served = x509.load_pem_x509_certificates((sqlite_home / "server" / "tls.crt").read_bytes())
        assert served[0] == cert and served[1:] == [made.cross]
        for anchor in (old_root, made.root):
            result = openssl_verify(tmp_path, [anchor], served[1:], served[0])  # type: ignore[list-item]
            assert result.returncode == 0, result.stdout + result.stderr
        assert renew_server_certificate(config, PASSWORD, datetime.now(UTC), store) is None
    finally:
        store.close()


def test_a_certificate_signed_before_the_switch_keeps_its_own_chain_after_it(sqlite_home: Path) -> None:
    """A leaf the old intermediate signed, fetched after the switch (an ACME download), comes
    with the old intermediate; a new leaf with the new one."""
    before = issue(sqlite_home, "early.internal")
    row, journal, _clock, store = to_active(sqlite_home, "intermediate")
    store.close()
    made = journal.maker.load(row.paths)
    authority = load_authority(sqlite_home, PASSWORD)
    try:
        old_der = before.certificate.public_bytes(Encoding.DER)
        assert authority.material.chain_for(old_der) == (made.old_intermediate,)
        after = issue(sqlite_home, "late.internal")
        assert authority.material.chain_for(after.certificate.public_bytes(Encoding.DER)) == (made.intermediate,)
        assert authority.material.chain_pem_for(old_der) == pem_bundle([made.old_intermediate])  # type: ignore[list-item]
    finally:
        authority.store.close()
