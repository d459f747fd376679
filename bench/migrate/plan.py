"""bench/migrate part (b): `trustyard migrate plan --save` over a large self-signed estate.

    python3 bench/migrate/plan.py [--certs 5000] [--locations 20000] [--endpoints 500] [--json]
    python3 bench/migrate/plan.py --quick        # 50 certificates, 200 locations, 5 endpoints

The estate (cached under $TMPDIR, rebuilt with --rebuild): CERTS self-signed P-256 server
identities, each a directory with server.crt and server.key; LOCATIONS client trust locations
holding a copy of one of them (round robin), 70% PEM bundles (beside an unrelated root), 10% JKS
(pyjks, password changeit), 10% PKCS#12 truststores (changeit) and 10% Kubernetes Secret
manifests; ENDPOINTS of the identities are also served by real TLS listeners on 127.0.0.1 (one
asyncio process, one port each) and given to the plan as ``--endpoint 127.0.0.1:PORT/NAME``:
the plan connects to every one of them (its scan's endpoint probe) and ties each to its files.

Measured: the plan's wall time and the peak RSS of its process (``wait4`` on it, from a bare
launcher so the fork does not count this process's memory), with the plan saved into a fresh
CA home (SQLite). Checked: one boundary per identity, every location on its boundary, every
endpoint tied to its files. Goals: under 30 s, under 1 GiB.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    pkcs12,
)
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT = HERE.parent / "out"
CACHE = Path(tempfile.gettempdir()) / "trustyard-bench-migrate-plan"
TRUSTYARD = [sys.executable, "-c", "import sys; from trustyard.cli import main; sys.exit(main())"]
GOAL_S, GOAL_MIB = 30.0, 1024
sys.path.insert(0, str(ROOT / "bench" / "scan"))
from tls_farm import handle  # noqa: E402  (bench/scan's listener: one line read, one answer)

PASSWORD = "bench-ca-password"
KINDS = ("pem",) * 7 + ("jks", "p12", "manifest")

_LAUNCHER = (  # forks and execs the command, then reports the child's own peak RSS (KiB)
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.execvp(sys.argv[2], sys.argv[2:])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "os.write(int(sys.argv[1]), f'{usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}'.encode())\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def host(i: int) -> str:
    return f"svc{i:05d}.bench.internal"


def _cert(name: str, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))


def build_estate(base: Path, certs: int, locations: int) -> Path:
    """The estate's root (made once per size and kept)."""
    import jks

    root = base / "estate"
    if (base / "complete").exists():
        return root
    shutil.rmtree(base, ignore_errors=True)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _cert("Unrelated Root", other_key).public_bytes(Encoding.PEM)
    pems: list[bytes] = []
    ders: list[x509.Certificate] = []
    for i in range(certs):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(host(i), key)
        d = root / "servers" / f"svc{i:05d}"
        d.mkdir(parents=True)
        pem = cert.public_bytes(Encoding.PEM)
        (d / "server.crt").write_bytes(pem)
        (d / "server.key").write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        pems.append(pem)
        ders.append(cert)
    p12_enc = BestAvailableEncryption(b"changeit")
    for j in range(locations):
        i, kind = j % certs, KINDS[j % len(KINDS)]
        d = root / "clients" / f"app{j // 50:04d}"
        d.mkdir(parents=True, exist_ok=True)
        if kind == "pem":
            (d / f"trust-{j}.pem").write_bytes(other + pems[i])
        elif kind == "jks":
            entry = jks.TrustedCertEntry.new(f"svc{i}", ders[i].public_bytes(Encoding.DER))
            (d / f"trust-{j}.jks").write_bytes(jks.KeyStore.new("jks", [entry]).saves("changeit"))
        elif kind == "p12":
            (d / f"trust-{j}.p12").write_bytes(pkcs12.serialize_java_truststore(
                [pkcs12.PKCS12Certificate(ders[i], f"svc{i}".encode())], p12_enc))
        else:
            (d / f"trust-{j}.yaml").write_text(
                f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: trust-{j}\n  namespace: app{j // 50}\n"
                f"type: Opaque\ndata:\n  ca.crt: {base64.b64encode(pems[i]).decode()}\n")
    (base / "complete").write_text("")
    return root


# ------------------------------------------------------------------ the listeners

async def _serve(root: Path, count: int) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda loop, context: None)  # probes hang up after the handshake

    servers = []
    for i in range(count):
        d = root / "servers" / f"svc{i:05d}"
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(d / "server.crt"), str(d / "server.key"))
        servers.append(await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx, backlog=256,
                                                  ssl_handshake_timeout=30))
    print(json.dumps({"ports": [s.sockets[0].getsockname()[1] for s in servers]}), flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    for s in servers:
        s.close()


# ------------------------------------------------------------------ the measured run

def run_measured(cmd: list[str], env: dict[str, str], timeout: float
                 ) -> tuple[float, int, int, float, bytes, bytes]:
    """Wall seconds, exit status, peak RSS (KiB), CPU seconds, stdout and stderr of one command."""
    rfd, wfd = os.pipe()
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(wfd), *cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, pass_fds=(wfd,), env=env)
    os.close(wfd)
    out, err = proc.communicate(timeout=timeout)
    wall = time.perf_counter() - started
    with os.fdopen(rfd, "rb") as r:
        rss, cpu = (r.read().decode() or "0 0").split()
    return wall, proc.returncode, int(rss), float(cpu), out, err


def bench(certs: int, locations: int, endpoints: int, rebuild: bool, cache: Path = CACHE) -> dict[str, object]:
    base = cache / f"{certs}-{locations}"
    if rebuild:
        shutil.rmtree(base, ignore_errors=True)
    started = time.perf_counter()
    root = build_estate(base, certs, locations)
    built = time.perf_counter() - started
    farm = subprocess.Popen([sys.executable, __file__, "--farm", str(root), str(endpoints)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert farm.stdout is not None
        ports = json.loads(farm.stdout.readline())["ports"]
        with tempfile.TemporaryDirectory(prefix="trustyard-bench-plan-") as tmp:
            home = Path(tmp) / "ca"
            sys.path.insert(0, str(ROOT / "src"))
            from trustyard.ca.home import InitOptions, init_home

            init_home(home, PASSWORD.encode(), InitOptions(allow=("*.bench.internal",)))
            cmd = [*TRUSTYARD, "migrate", "plan", str(root), "--save", "--home", str(home), "--json",
                   "--timeout", "30s"]
            for i, port in enumerate(ports):
                cmd += ["--endpoint", f"127.0.0.1:{port}/{host(i)}"]
            env = {**os.environ, "TRUSTYARD_PASSWORD": PASSWORD,
                   "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
            load = os.getloadavg()
            wall, code, rss, cpu, out, err = run_measured(cmd, env, timeout=1800)
    finally:
        if farm.stdin:
            farm.stdin.close()
        farm.wait(timeout=30)
    if code != 0:
        raise SystemExit(f"migrate plan exited {code}: {err.decode(errors='replace')[-3000:]}")
    doc = json.loads(out)
    boundaries = doc["boundaries"]
    clients = sum(len(b["clients"]) for b in boundaries)
    by_kind: dict[str, int] = {}
    for b in boundaries:
        for c in b["clients"]:
            by_kind[c["kind"]] = by_kind.get(c["kind"], 0) + 1
    with_endpoint = sum(1 for b in boundaries if b["endpoint"])
    tied = sum(1 for b in boundaries if b["endpoint"] and b["cert_files"] and b["key_files"])
    problems = []
    if len(boundaries) != certs:
        problems.append(f"{len(boundaries)} boundaries, not {certs}")
    if clients != locations:
        problems.append(f"{clients} client locations on boundaries, not {locations}")
    if tied != endpoints:
        problems.append(f"{tied} endpoints tied to their files, not {endpoints}")
    if sum(1 for v in doc["boundaries"] if v["saved"] == "added") != certs:
        problems.append("not every boundary was saved")
    return {
        "certificates": certs, "locations": locations, "endpoints": endpoints,
        "estate_build_s": round(built, 1), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
        "peak_rss_mib": round(rss / 1024, 1),
        "boundaries": len(boundaries), "client_locations": clients, "locations_by_kind": by_kind,
        "boundaries_with_endpoint": with_endpoint, "goal_s": GOAL_S, "goal_mib": GOAL_MIB,
        "met": wall < GOAL_S and rss / 1024 < GOAL_MIB and not problems, "problems": problems,
        "load_average_at_start": [round(x, 1) for x in load],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "at": datetime.now(UTC).isoformat()},
    }


def table(r: dict[str, object]) -> str:
    rows = [
        ("estate", f"{r['certificates']:,} self-signed identities (cert + key files), {r['locations']:,} client "
                   f"locations {r['locations_by_kind']}, {r['endpoints']} real loopback TLS listeners", ""),
        ("**wall time** of `migrate plan --save`", f"**{r['wall_s']} s**", f"< {GOAL_S:.0f} s"),
        ("CPU time of its process (user + system)", f"{r['cpu_s']} s", ""),
        ("**peak RSS** of its process", f"**{r['peak_rss_mib']} MiB**", f"< {GOAL_MIB} MiB"),
        ("boundaries / client locations placed", f"{r['boundaries']:,} / {r['client_locations']:,}", "all"),
        ("endpoints probed and tied to their files", f"{r['boundaries_with_endpoint']} of {r['endpoints']}", "all"),
        ("load average at start", " / ".join(map(str, r["load_average_at_start"])), ""),  # type: ignore[call-overload]
    ]
    out = ["| figure | measured | goal |", "|---|---:|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    if r["problems"]:
        out.append("\nPROBLEMS: " + "; ".join(r["problems"]))  # type: ignore[arg-type]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--farm"]:
        asyncio.run(_serve(Path(argv[1]), int(argv[2])))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--certs", type=int, default=5000)
    ap.add_argument("--locations", type=int, default=20000)
    ap.add_argument("--endpoints", type=int, default=500)
    ap.add_argument("--quick", action="store_true", help="50 certificates, 200 locations, 5 endpoints")
    ap.add_argument("--rebuild", action="store_true", help="make the cached estate again")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    ap.add_argument("--cache", type=Path, default=CACHE, help=f"where the estates are kept [{CACHE}]")
    args = ap.parse_args(argv)
    if args.quick:
        args.certs, args.locations, args.endpoints = 50, 200, 5
    if not 0 < args.endpoints <= args.certs <= args.locations:
        ap.error("need 0 < endpoints <= certs <= locations")
    result = bench(args.certs, args.locations, args.endpoints, args.rebuild, args.cache)
    OUT.mkdir(exist_ok=True)
    (OUT / f"migrate-plan-{args.certs}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
