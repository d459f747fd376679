"""bench/issue: trustyard vs cfssl, same CSR mix, same load, same machine, same run.

    python3 bench/issue/run.py [--seconds 10] [--connections 16] [--threads 2]

Starts `trustyard serve` on its defaults (SQLite, one worker per core, bootstrap-token
authentication, every certificate stored and audited) and `cfssl serve` (HTTPS, no auth,
no database) with the same P-256 intermediate, drives each with wrk for the same time,
prints certs/s, p50/p99 latency, the trustyard/cfssl ratio and the wall time of
`trustyard --help`, and writes the figures to bench/out/issue.json.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

ROOT = Path(__file__).resolve().parents[2]
LUA = Path(__file__).with_name("post.lua")
PASSWORD = "bench-password-not-a-secret"


def ensure_tools() -> None:
    missing = [pkg for tool, pkg in (("wrk", "wrk"), ("cfssl", "golang-cfssl")) if not shutil.which(tool)]
    if missing:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, stdout=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, verify: object, path: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url + path, verify=verify, timeout=2)  # type: ignore[arg-type]
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def csr_mix(count: int, rng: random.Random) -> list[tuple[str, list[str]]]:
    """80% P-256, 20% RSA-2048 keys; one to three DNS names under .internal."""
    out = []
    for i in range(count):
        key = rsa.generate_private_key(65537, 2048) if i % 5 == 4 else ec.generate_private_key(ec.SECP256R1())
        names = [f"svc{i}-{j}.bench.internal" for j in range(rng.randint(1, 3))]
        csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
               .sign(key, hashes.SHA256()))
        out.append((csr.public_bytes(Encoding.PEM).decode(), names))
    return out


def wrk(url: str, bodies: Path, seconds: int, connections: int, threads: int) -> dict[str, float]:
    result = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(LUA), url],
        capture_output=True, text=True, env={**os.environ, "BODIES": str(bodies), "WRK_THREADS": str(threads)},
    )
    match = re.search(r"RESULT requests=(\d+) errors=(\d+) seconds=([\d.]+) p50_ms=([\d.]+) p99_ms=([\d.]+)",
                      result.stdout)
    if not match:
        raise RuntimeError(f"wrk failed:\n{result.stdout}\n{result.stderr}")
    requests, errors, secs, p50, p99 = (float(g) for g in match.groups())
    return {"requests": requests, "errors": errors, "seconds": secs, "certs_per_s": (requests - errors) / secs,
            "p50_ms": p50, "p99_ms": p99}


def help_time(runs: int = 15) -> float:
    exe = shutil.which("trustyard") or sys.executable
    cmd = [exe, "--help"] if exe != sys.executable else [sys.executable, "-m", "trustyard", "--help"]
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=40000, help="one-time tokens to pre-mint for trustyard")
    parser.add_argument("--workers", type=int, default=None, help="trustyard worker processes [default: its own]")
    args = parser.parse_args()
    ensure_tools()
    sys.path.insert(0, str(ROOT / "src"))
    from trustyard.ca import tokens as token_lib
    from trustyard.ca.config import load_config
    from trustyard.ca.home import load_key
    from trustyard.units import parse_duration
    from trustyard.x509.keys import load_private_key_pem

    rng = random.Random(7)
    work = Path(tempfile.mkdtemp(prefix="trustyard-bench-"))
    env = {**os.environ, "TRUSTYARD_PASSWORD": PASSWORD, "TRUSTYARD_HOME": str(work / "home")}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run([sys.executable, "-m", "trustyard", "init", "--allow", "*.internal"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        home = work / "home"
        config = load_config(home)
        csrs = csr_mix(200, rng)

        # trustyard: one token per request, bound to that CSR's names
        prov_key = load_key(config, "provisioners/default.key", PASSWORD.encode())
        with (work / "trustyard.jsonl").open("w") as fh:
            for i in range(args.tokens):
                csr, names = csrs[i % len(csrs)]
                token, _ = token_lib.mint(prov_key, "default", names[0], names, parse_duration("1h"))
                fh.write(json.dumps({"csr": csr, "token": token}) + "\n")
        with (work / "cfssl.jsonl").open("w") as fh:
            for csr, _ in csrs:
                fh.write(json.dumps({"certificate_request": csr}) + "\n")
        # cfssl with authentication: /authsign with an HMAC over each request (its "standard" auth)
        auth_key = os.urandom(16)
        with (work / "cfssl-auth.jsonl").open("w") as fh:
            for csr, _ in csrs:
                request = json.dumps({"certificate_request": csr}).encode()
                mac = hmac.new(auth_key, request, hashlib.sha256).digest()
                fh.write(json.dumps({"token": base64.b64encode(mac).decode(),
                                     "request": base64.b64encode(request).decode()}) + "\n")

        # cfssl: the same intermediate (decrypted into the bench dir, 0600) and the same server cert
        inter_key = load_private_key_pem((home / "ca/intermediate.key").read_bytes(), PASSWORD.encode())
        tls_key = load_private_key_pem((home / "server/tls.key").read_bytes(), PASSWORD.encode())
        for name, key in (("ca-key.pem", inter_key), ("tls-key.pem", tls_key)):
            path = work / name
            path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
            path.chmod(0o600)
        usages = ["digital signature", "server auth", "client auth"]
        (work / "cfssl.json").write_text(json.dumps({"signing": {"default": {"expiry": "24h", "usages": usages}}}))
        (work / "cfssl-auth.json").write_text(json.dumps({
            "signing": {"default": {"expiry": "24h", "usages": usages, "auth_key": "bench"}},
            "auth_keys": {"bench": {"type": "standard", "key": auth_key.hex()}}}))
        # cfssl's certificate database (its 1.2 schema): every signed certificate is inserted
        with sqlite3.connect(work / "cfssl-certs.db") as db:
            db.execute("CREATE TABLE certificates (serial_number BLOB NOT NULL, authority_key_identifier BLOB NOT NULL,"
                       " ca_label BLOB, status BLOB NOT NULL, reason INT, expiry TIMESTAMP, revoked_at TIMESTAMP,"
                       " pem BLOB NOT NULL, PRIMARY KEY(serial_number, authority_key_identifier))")
            db.execute("CREATE TABLE ocsp_responses (serial_number BLOB NOT NULL, authority_key_identifier BLOB NOT NULL,"
                       " body BLOB NOT NULL, expiry TIMESTAMP, PRIMARY KEY(serial_number, authority_key_identifier))")
        (work / "cfssl-db.json").write_text(json.dumps({"driver": "sqlite3",
                                                        "data_source": str(work / "cfssl-certs.db")}))

        results = {}
        verify = str(home / "ca/root.crt")
        import ssl

        context = ssl.create_default_context(cafile=verify)

        port = free_port()
        workers = ["--workers", str(args.workers)] if args.workers else []
        ty = subprocess.Popen([sys.executable, "-m", "trustyard", "serve", "--listen", f"127.0.0.1:{port}",
                               "--log-level", "warning", *workers], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
        processes.append(ty)
        wait_ready(f"https://127.0.0.1:{port}", context, "/healthz")
        if os.environ.get("BENCH_PROFILE"):
            children = Path(f"/proc/{ty.pid}/task/{ty.pid}/children").read_text().split()
            subprocess.Popen(["py-spy", "record", "-d", str(args.seconds - 2), "-o", os.environ["BENCH_PROFILE"],
                                    "-f", "raw", "-p", children[-1]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results["trustyard"] = wrk(f"https://127.0.0.1:{port}/v1/sign", work / "trustyard.jsonl", args.seconds,
                                   args.connections, args.threads)
        os.killpg(ty.pid, signal.SIGTERM)
        ty.wait(30)
        from trustyard.ca.home import open_home_store

        store = open_home_store(config)  # keyed with the home's ca/audit.key, as `trustyard audit verify` does
        stored = store.counts().get("issued", 0)
        audit_ok = store.verify_audit().ok
        store.close()

        for label, config_file, extra, path, bodies in (
            ("cfssl", "cfssl-auth.json", ["-db-config", str(work / "cfssl-db.json")], "authsign", "cfssl-auth.jsonl"),
            ("cfssl-bare", "cfssl.json", [], "sign", "cfssl.jsonl"),
        ):
            cport = free_port()
            cf = subprocess.Popen(["cfssl", "serve", "-address", "127.0.0.1", "-port", str(cport),
                                   "-ca", str(home / "ca/intermediate.crt"), "-ca-key", str(work / "ca-key.pem"),
                                   "-config", str(work / config_file), "-tls-cert", str(home / "server/tls.crt"),
                                   "-tls-key", str(work / "tls-key.pem"), "-loglevel", "5", *extra],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            processes.append(cf)
            wait_ready(f"https://127.0.0.1:{cport}", context, "/api/v1/cfssl/info")
            results[label] = wrk(f"https://127.0.0.1:{cport}/api/v1/cfssl/{path}", work / bodies, args.seconds,
                                 args.connections, args.threads)
            os.killpg(cf.pid, signal.SIGTERM)
            cf.wait(30)
        with sqlite3.connect(work / "cfssl-certs.db") as db:
            cfssl_stored = db.execute("SELECT COUNT(*) FROM certificates").fetchone()[0]
        help_s = help_time()
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)

    ratio = results["trustyard"]["certs_per_s"] / results["cfssl"]["certs_per_s"]
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"load: wrk -t{args.threads} -c{args.connections} -d{args.seconds}s, 200 CSRs (80% P-256, 20% RSA-2048),"
          " P-256 intermediate")
    print()
    print(f"{'server':<12} {'certs/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}  mode")
    modes = {"trustyard": "bootstrap token per request, SQLite ledger + audit, fsync before answering",
             "cfssl": "authsign (HMAC per request), SQLite certdb",
             "cfssl-bare": "sign: no authentication, no database (reference)"}
    for name in ("trustyard", "cfssl", "cfssl-bare"):
        r = results[name]
        print(f"{name:<12} {r['certs_per_s']:>9.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {int(r['errors']):>7}"
              f"  {modes[name]}")
    print()
    print(f"ratio trustyard/cfssl, both with persistence and authentication on: {ratio:.2f}x   (goal >= 1.0x)")
    print(f"ratio trustyard/cfssl-bare: {results['trustyard']['certs_per_s'] / results['cfssl-bare']['certs_per_s']:.2f}x")
    print(f"cfssl certificates stored: {cfssl_stored}")
    print(f"trustyard p99: {results['trustyard']['p99_ms']:.1f} ms   (goal <= 25 ms)")
    print(f"trustyard --help: {help_s * 1000:.0f} ms   (goal <= 300 ms)")
    print(f"trustyard certificates stored: {stored} (>= {int(results['trustyard']['requests'] - results['trustyard']['errors'])}"
          f" answered within wrk's window), audit chain intact: {audit_ok}")
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "issue.json").write_text(json.dumps({"results": results, "ratio": ratio, "help_seconds": help_s,
                                                "stored": stored, "audit_ok": audit_ok,
                                                "cfssl_stored": cfssl_stored}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
