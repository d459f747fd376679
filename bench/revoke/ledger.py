"""The ledger side of bench/revoke: a throwaway CA home with CRLs on, revoked and good
certificates written straight into its ledger (spread over the shards by serial, as issuance
does), and the CRL figures (one shard's regeneration, the largest shard).

Moved here from bench/crl (which it replaces); bench/revoke/run.py drives it.
"""

from __future__ import annotations

import random
import sys
import time
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import tomli_w  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding  # noqa: E402
from sqlalchemy import func, insert, select  # noqa: E402

from trustyard.ca.authority import Authority  # noqa: E402
from trustyard.ca.config import load_config  # noqa: E402
from trustyard.ca.crl_job import CrlJob  # noqa: E402
from trustyard.ca.home import InitOptions, init_home, load_authority  # noqa: E402
from trustyard.store.crls import Due  # noqa: E402
from trustyard.store.schema import certificates  # noqa: E402

REASONS = ("keyCompromise", "superseded", "cessationOfOperation", "affiliationChanged", "unspecified")
BATCH = 20_000


@dataclass
class Cert:
    """One certificate the bench wrote into the ledger (what OCSP must answer for it)."""

    serial: int
    status: str  # "good" or "revoked"
    not_after: datetime
    revoked_at: datetime | None = None
    reason: str | None = None


@dataclass
class Ledger:
    home: Path
    authority: Authority
    job: CrlJob
    shards: int
    rng: random.Random
    revoked: int = 0
    # every good certificate, and a sample of the revoked ones (all of them would be 1M objects)
    good: list[Cert] = field(default_factory=list)
    revoked_sample: list[Cert] = field(default_factory=list)

    @property
    def issuer_sha256(self) -> str:
        return self.authority.material.issuer_sha256

    def close(self) -> None:
        self.authority.store.close()


def make_home(base: Path, shards: int, db_url: str = "", url: str = "") -> Path:
    """A CA home (no key password) whose provisioners have ``crl = true``, with ``shards`` shards."""
    home = base / "ca"
    init_home(home, None, InitOptions(allow=("*.internal", "127.0.0.1/32"),
                                      **({"database_url": db_url} if db_url else {})))
    doc = tomllib.loads((home / "trustyard.toml").read_text())
    for prov in doc["provisioners"]:
        prov["crl"] = True
    doc["crl"] = {"shards": shards}
    if url:
        doc["server"]["url"] = url
    (home / "trustyard.toml").write_text(tomli_w.dumps(doc))
    return home


def open_ledger(home: Path, shards: int, seed: int = 1) -> Ledger:
    authority = load_authority(home, None, minting=True)
    job = CrlJob(load_config(home), None, authority.store)
    job.load_issuers()
    return Ledger(home, authority, job, shards, random.Random(seed))


def add(ledger: Ledger, revoked: int, good: int = 0, sample_every: int = 100) -> float:
    """Write ``revoked`` revoked and ``good`` issued, unexpired certificates; the seconds it took.
    Revocation times fall in the last 30 days (whole seconds), reasons rotate over ``REASONS``."""
    now = datetime.now(UTC).replace(microsecond=0)
    issuer = ledger.issuer_sha256
    started = time.perf_counter()
    todo = [("revoked", revoked), ("good", good)]
    for status, count in todo:
        for start in range(0, count, BATCH):
            rows = []
            for i in range(min(BATCH, count - start)):
                serial = ledger.rng.getrandbits(159) | 1 << 150
                not_after = now + timedelta(days=30 + ledger.rng.randrange(300))
                row = dict(serial=format(serial, "x"), provisioner="bench", subject="x", sans="[]",
                           requested_at=now, not_before=now - timedelta(days=60), not_after=not_after,
                           issuer_sha256=issuer, crl_shard=serial % ledger.shards)
                if status == "revoked":
                    at = now - timedelta(seconds=ledger.rng.randrange(30 * 86400))
                    reason = REASONS[(ledger.revoked + start + i) % len(REASONS)]
                    row.update(status="revoked", revoked_at=at, revocation_reason=reason)
                    if (start + i) % sample_every == 0:
                        ledger.revoked_sample.append(Cert(serial, "revoked", not_after, at, reason))
                else:
                    row.update(status="issued")
                    ledger.good.append(Cert(serial, "good", not_after))
                rows.append(row)
            with ledger.authority.store.transaction() as conn:
                conn.execute(insert(certificates), rows)
    ledger.revoked += revoked
    return time.perf_counter() - started


def all_revoked(ledger: Ledger) -> list[tuple[int, datetime, str, datetime]]:
    """(serial, revoked_at, reason, not_after) of every revoked certificate, for the peer's index."""
    with ledger.authority.store.transaction(write=False) as conn:
        rows = conn.execute(select(certificates.c.serial, certificates.c.revoked_at,
                                   certificates.c.revocation_reason, certificates.c.not_after)
                            .where(certificates.c.status == "revoked")).fetchall()
    return [(int(r[0], 16), r[1], r[2], r[3]) for r in rows]


def largest_shard(ledger: Ledger) -> tuple[int, int]:
    """(shard, revoked entries) of the shard with the most revoked certificates."""
    with ledger.authority.store.transaction(write=False) as conn:
        rows = conn.execute(select(certificates.c.crl_shard, func.count())
                            .where(certificates.c.status == "revoked")
                            .group_by(certificates.c.crl_shard)).fetchall()
    shard, count = max(rows, key=lambda r: r[1])
    return int(shard), int(count)


def regenerate(ledger: Ledger, shard: int) -> dict[str, float | int]:
    """Time one shard's query and its whole regeneration (query, build, sign, store)."""
    issuer = ledger.issuer_sha256
    t = time.perf_counter()
    entries = ledger.job.crls.entries(issuer, shard, ledger.job.clock())
    query = time.perf_counter() - t
    t = time.perf_counter()
    crl = ledger.job.generate(Due(issuer[:16], shard, issuer, 0), ledger.job.issuers[issuer],
                              1_000_000 + ledger.revoked)
    generate = time.perf_counter() - t
    return {"shard": shard, "entries": len(entries), "query_s": round(query, 3), "generate_s": round(generate, 3),
            "bytes": len(crl.public_bytes(Encoding.DER))}

