"""The CRL generation job and the shard URLs, in-process on SQLite and PostgreSQL: the CDP a
leaf carries, what a shard lists, CRL numbers, pkilint, and the one-generation-per-period claim."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustyard.ca.config import load_config
from trustyard.ca.crl_job import CrlJob
from trustyard.ca.home import load_authority, open_home_store
from trustyard.errors import ConfigError
from trustyard.store.crls import CrlStore
from trustyard.x509.keys import load_private_key_pem, signature_hash
from trustyard.x509.summary import fingerprint_sha256

from ..support import PASSWORD
from .helpers import cdp_url, crl_home, issue

SHARDS = 4


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def _served(store: CrlStore, url: str) -> x509.CertificateRevocationList:
    ident, name = url.split("/")[-2:]
    published = store.get(ident, int(name.removesuffix(".crl")))
    assert published is not None
    return x509.load_der_x509_crl(published.der)


def test_a_crl_provisioner_names_the_shard_of_the_serial_and_others_name_none(tmp_path: Path) -> None:
    """The CDP is <server url>/crl/<16 hex of the issuer's fingerprint>/<serial mod shards>.crl;
    a provisioner without crl = true (the default) issues without one."""
    home = crl_home(tmp_path / "ca", crl={"shards": SHARDS}, url="https://ca.internal:9443/")
    authority = load_authority(home, PASSWORD, minting=True)
    try:
        issued, _key = issue(authority, "a.internal")
        cert = issued.certificate
        issuer = fingerprint_sha256(authority.chain[0])[:16]
        assert cdp_url(cert) == f"https://ca.internal:9443/crl/{issuer}/{cert.serial_number % SHARDS}.crl"
        ext = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
        assert not ext.critical
        prov = next(iter(authority.provisioners.values()))
        authority.provisioners[prov.name] = type(prov)(prov.name, prov.policy, prov.public_key, prov.private_key)
        plain, _key = issue(authority, "b.internal")
        with pytest.raises(x509.ExtensionNotFound):
            plain.certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    finally:
        authority.store.close()


def test_a_shard_lists_its_unexpired_revoked_certificates_only_and_numbers_increase_across_restarts(
        tmp_path: Path, db_url: str) -> None:
    # A day's period: the clock below moves a few seconds and must stay in the first one.
    home = crl_home(tmp_path / "ca", db_url, crl={"shards": SHARDS, "period": "24h", "next_update": "30h",
                                                   "delay": "2s"})
    authority = load_authority(home, PASSWORD, minting=True)
    clock = Clock()
    job = CrlJob(load_config(home), PASSWORD, authority.store, clock=clock)
    crls = CrlStore(authority.store)
    try:
        assert job.tick() == SHARDS and job.tick() == 0  # every shard once, then nothing is due
        revoked, _ = issue(authority, "gone.internal")
        kept, _ = issue(authority, "kept.internal")
        authority.revoke(revoked.record.serial, "superseded", admin=True)
        url = cdp_url(revoked.certificate)
        before = _served(crls, url)
        assert before.get_revoked_certificate_by_serial_number(revoked.certificate.serial_number) is None
        clock.now = datetime.now(UTC)
        assert job.tick() == 0  # due once its first mark is half the delay old: a burst shares one CRL
        clock.now += timedelta(seconds=1)
        assert job.tick() == 1  # the revocation made its shard due, and only that one
        crl = _served(crls, url)
        assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
        assert crl.get_revoked_certificate_by_serial_number(revoked.certificate.serial_number) is not None
        assert crl.get_revoked_certificate_by_serial_number(kept.certificate.serial_number) is None
        assert crl.next_update_utc - crl.last_update_utc == timedelta(hours=30)
        assert crl.is_signature_valid(authority.chain[0].public_key())  # type: ignore[arg-type]
        idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
        assert idp.critical and idp.value.full_name[0].value == url  # type: ignore[index]
        numbers = {row[:2]: row[3] for row in crls.rows()}
    finally:
        authority.store.close()

    # A restart (new store, new job) in the next period: every number goes up, none restarts.
    clock.now += timedelta(hours=24)
    store = open_home_store(load_config(home), migrate=False)
    try:
        again = CrlJob(load_config(home), PASSWORD, store, clock=clock)
        assert again.tick() == SHARDS
        after = {row[:2]: row[3] for row in CrlStore(store).rows()}
        assert all(after[key] == numbers[key] + 1 for key in numbers)
        # Once the certificate has expired it drops out of the list.
        clock.now = revoked.certificate.not_valid_after_utc + timedelta(hours=25)  # and a later period
        assert again.tick() == SHARDS
        gone = _served(CrlStore(store), url)
        assert gone.get_revoked_certificate_by_serial_number(revoked.certificate.serial_number) is None
    finally:
        store.close()


def _lint(path: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "pkilint.bin.lint_crl", "lint", "-t", "CRL", "-p", "PKIX",
                             "-s", "WARNING", str(path)], capture_output=True, text=True, timeout=60)
    return result.stdout.strip() + result.stderr.strip()


def test_every_crl_passes_pkilint_with_no_warnings(tmp_path: Path) -> None:
    home = crl_home(tmp_path / "ca", crl={"shards": SHARDS})
    authority = load_authority(home, PASSWORD, minting=True)
    job = CrlJob(load_config(home), PASSWORD, authority.store)
    try:
        for reason in ("keyCompromise", "unspecified", "cessationOfOperation"):
            issued, _ = issue(authority, "x.internal")
            authority.revoke(issued.record.serial, reason, admin=True)
        job.tick()
        for ident, shard, _number, served in CrlStore(authority.store).rows():
            assert served > 0
            published = CrlStore(authority.store).get(ident, shard)
            assert published is not None
            path = tmp_path / f"{shard}.crl"
            path.write_bytes(published.der)
            assert _lint(path) == "", (shard, _lint(path))
    finally:
        authority.store.close()
    # The linter does find faults: a CRL number marked critical is one.
    bad = x509.load_der_x509_crl(path.read_bytes())
    key = load_private_key_pem((home / "ca" / "intermediate.key").read_bytes(), PASSWORD)
    wrong = (x509.CertificateRevocationListBuilder().issuer_name(bad.issuer).last_update(bad.last_update_utc)
             .next_update(bad.next_update_utc).add_extension(x509.CRLNumber(1), critical=True)
             .sign(key, signature_hash(key)))  # type: ignore[arg-type]
    (tmp_path / "wrong.crl").write_bytes(wrong.public_bytes(Encoding.DER))
    assert _lint(tmp_path / "wrong.crl") != ""


def test_the_number_of_shards_cannot_change_once_crls_exist(tmp_path: Path) -> None:
    home = crl_home(tmp_path / "ca", crl={"shards": SHARDS})
    store = open_home_store(load_config(home))
    try:
        CrlJob(load_config(home), PASSWORD, store).load_issuers()
        text = (home / "trustyard.toml").read_text().replace(f"shards = {SHARDS}", "shards = 8")
        (home / "trustyard.toml").write_text(text)
        with pytest.raises(ConfigError, match="cannot change"):
            CrlJob(load_config(home), PASSWORD, store).load_issuers()
    finally:
        store.close()


@pytest.mark.parametrize("table, message", [
    ({"shards": 0}, "shards"), ({"period": "1h", "next_update": "1h"}, "next_update"),
    ({"delay": "soon"}, "delay"), ({"shards": "16"}, "integer"), ({"colour": "red"}, "unknown"),
])
def test_bad_crl_settings_are_refused_at_load(tmp_path: Path, table: dict[str, object], message: str) -> None:
    home = crl_home(tmp_path / "ca", crl=table)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=message):
        load_config(home)


@pytest.mark.postgres
def test_two_replicas_on_postgresql_generate_exactly_one_crl_per_shard_per_period(
        tmp_path: Path, postgres: str) -> None:
    from ..support import create_database

    url = create_database(postgres, "crl_replicas")
    home = crl_home(tmp_path / "ca", url, crl={"shards": 16})
    load_authority(home, PASSWORD).store.close()  # migrates
    config, clock = load_config(home), Clock()
    stores = [open_home_store(config, migrate=False) for _ in range(2)]
    jobs = [CrlJob(config, PASSWORD, store, clock=clock) for store in stores]
    try:
        for job in jobs:
            job.load_issuers()

        def both() -> list[int]:
            barrier, made = threading.Barrier(2), [0, 0]

            def run(i: int) -> None:
                barrier.wait()
                for _ in range(3):
                    made[i] += jobs[i].tick()
            threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            return made

        for period in (1, 2, 3):
            made = both()
            assert sum(made) == 16, made
            assert {row[2] for row in CrlStore(stores[0]).rows()} == {period}
            assert {row[3] for row in CrlStore(stores[1]).rows()} == {period}
            clock.now += jobs[0].period
    finally:
        for store in stores:
            store.close()


def test_a_shards_entries_are_read_from_the_partial_index(tmp_path: Path, db_url: str) -> None:
    """The query a generation runs uses ix_certificates_crl (revoked certificates with a shard
    only), on SQLite and PostgreSQL alike, so its cost follows the shard, not the ledger."""
    from sqlalchemy import text

    from trustyard.store.crls import _ENTRIES

    home = crl_home(tmp_path / "ca", db_url, crl={"shards": SHARDS})
    store = open_home_store(load_config(home))
    try:
        with store.transaction() as conn:
            compiled = _ENTRIES.compile(conn)
            params = {"b_issuer": "ab" * 32, "b_shard": 1, "b_now": datetime.now(UTC)}
            if store.is_sqlite:
                plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", tuple(
                    params[k] for k in compiled.positiontup or ())).fetchall()
            else:
                conn.execute(text("SET LOCAL enable_seqscan = off"))  # a near-empty table is scanned otherwise
                plan = conn.exec_driver_sql(f"EXPLAIN {compiled}", params).fetchall()
        text_plan = " ".join(str(row) for row in plan)
        assert "ix_certificates_crl" in text_plan, text_plan
    finally:
        store.close()


def test_a_key_compromise_puts_the_renewals_on_their_own_shards_crls_too(tmp_path: Path) -> None:
    from trustyard.ca import proofs

    from ..support import new_csr

    home = crl_home(tmp_path / "ca", crl={"shards": SHARDS})
    authority = load_authority(home, PASSWORD, minting=True)
    job = CrlJob(load_config(home), PASSWORD, authority.store)
    try:
        job.tick()
        first, key = issue(authority, "r.internal")
        _new_key, csr = new_csr("r.internal")
        der = x509.load_pem_x509_csr(csr).public_bytes(Encoding.DER)
        proof = proofs.make(key, [first.certificate], proofs.RENEW, csr_sha256=proofs.csr_digest(der))
        second = authority.renew(csr, proof)
        authority.revoke(first.record.serial, "keyCompromise", admin=True)
        job.clock = lambda: datetime.now(UTC) + job.delay  # the dirty shards' marks are half a delay old
        job.tick()
        for issued in (first, second):
            crl = _served(CrlStore(authority.store), cdp_url(issued.certificate))
            assert crl.get_revoked_certificate_by_serial_number(issued.certificate.serial_number) is not None
    finally:
        authority.store.close()


def _nice_of_thread(native_id: int) -> int:
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16])  # the 19th field of stat(5): nice


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="per-thread priorities are read from Linux's /proc")
def test_the_crl_thread_alone_runs_at_a_lower_priority_so_the_api_keeps_the_cores(tmp_path: Path) -> None:
    """At a million revoked certificates a round costs seconds of CPU; the thread generating
    CRLs is niced by 10 while the rest of the process keeps its priority."""
    home = crl_home(tmp_path / "ca", "", crl={"shards": SHARDS})
    authority = load_authority(home, PASSWORD, minting=True)
    job = CrlJob(load_config(home), PASSWORD, authority.store)
    process_nice = _nice_of_thread(threading.get_native_id())
    job.start()
    try:
        deadline = time.monotonic() + 30
        while job.generated < SHARDS and time.monotonic() < deadline:  # its first round ran
            time.sleep(0.05)
        assert job.generated == SHARDS
        assert job.thread.native_id is not None
        assert _nice_of_thread(job.thread.native_id) == min(19, process_nice + 10)
        assert _nice_of_thread(threading.get_native_id()) == process_nice
    finally:
        job.stop()
        authority.store.close()
