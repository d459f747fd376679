"""bench/crl: the revoke path and one shard's regeneration with many revoked certificates.

    python3 bench/crl/run.py [--revoked 1000000] [--shards 16] [--db-url postgresql://...]

Makes a throwaway CA home (SQLite in $TMPDIR unless ``--db-url``) whose provisioner has
``crl = true``, writes ``--revoked`` revoked, unexpired certificates of its intermediate
straight into the ledger (spread over the shards by serial, as issuance does), then times
200 revocations through ``Authority.revoke`` (p50, p99: they mark a shard dirty and build no
CRL) and the regeneration of one shard (query, build, sign, store) by ``CrlJob.generate``.

Writes bench/out/crl.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

import tomli_w  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from trustyard.ca.config import load_config  # noqa: E402
from trustyard.ca.crl_job import CrlJob  # noqa: E402
from trustyard.ca.home import InitOptions, init_home, load_authority  # noqa: E402
from trustyard.store.crls import Due  # noqa: E402
from trustyard.store.schema import certificates  # noqa: E402
from trustyard.x509.keys import KeyType, generate_private_key  # noqa: E402
from trustyard.x509.names import parse_name  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--revoked", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--db-url", default="")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="trustyard-crl-bench-")) / "ca"
    init_home(home, None, InitOptions(**({"database_url": args.db_url} if args.db_url else {})))
    doc = tomllib.loads((home / "trustyard.toml").read_text())
    for prov in doc["provisioners"]:
        prov["crl"] = True
    doc["crl"] = {"shards": args.shards}
    (home / "trustyard.toml").write_text(tomli_w.dumps(doc))
    authority = load_authority(home, None, minting=True)
    job = CrlJob(load_config(home), None, authority.store)
    job.load_issuers()
    issuer = authority.material.issuer_sha256
    now = datetime.now(UTC)
    started = time.perf_counter()
    for start in range(0, args.revoked, 20_000):
        rows = []
        for _ in range(min(20_000, args.revoked - start)):
            serial = random.getrandbits(159) | 1 << 150
            rows.append(dict(serial=format(serial, "x"), provisioner="bench", subject="x", sans="[]", status="revoked",
                             requested_at=now, not_before=now, not_after=now + timedelta(days=1),
                             issuer_sha256=issuer, crl_shard=serial % args.shards, revoked_at=now,
                             revocation_reason="keyCompromise"))
        with authority.store.transaction() as conn:
            conn.execute(insert(certificates), rows)
    loaded = time.perf_counter() - started
    prov = next(iter(authority.provisioners))
    key = generate_private_key(KeyType.EC_P256)
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import Encoding

    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([parse_name("bench.internal")]), critical=False)
           .sign(key, hashes.SHA256()).public_bytes(Encoding.PEM))  # type: ignore[arg-type]
    latencies = []
    for _ in range(200):
        token = authority.mint_token(prov, "bench.internal", ["bench.internal"])
        serial = authority.issue_for_token(csr, token).record.serial
        t = time.perf_counter()
        authority.revoke(serial, "keyCompromise", admin=True)
        latencies.append(time.perf_counter() - t)
    latencies.sort()
    ident = issuer[:16]
    t = time.perf_counter()
    entries = job.crls.entries(issuer, 0, job.clock())
    query = time.perf_counter() - t
    t = time.perf_counter()
    job.generate(Due(ident, 0, issuer, 0), job.issuers[issuer], 1_000_000)
    generate = time.perf_counter() - t
    result = {"revoked": args.revoked, "shards": args.shards, "database": "postgresql" if args.db_url else "sqlite",
              "load_seconds": round(loaded, 1), "revoke_p50_ms": round(latencies[100] * 1000, 2),
              "revoke_p99_ms": round(latencies[197] * 1000, 2), "shard_entries": len(entries),
              "shard_query_seconds": round(query, 3), "shard_generate_seconds": round(generate, 3)}
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "crl.json").write_text(json.dumps(result, indent=2) + "\n")
    authority.store.close()


if __name__ == "__main__":
    main()
