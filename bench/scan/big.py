"""A generated estate of N certificates in M files (default 1,000,000 in 200,000), with planted
copies, shared keys and leaves in trust stores, and what `trustyard scan` makes of it.

    python3 bench/scan/run.py --certs 1000000 --files 200000 [--rebuild] [--workers 2]

Kinds of file (shares of M): PEM chains (leaf, intermediate, root), PEM files of many distinct
leaves (the remainder of N), DER, PKCS#12 (key, leaf, intermediate), Java keystores (a key
entry with its chain and the root as a trusted entry, via pyjks) and Kubernetes TLS Secrets
(tls.crt leaf + intermediate, tls.key, ca.crt root). Every leaf has its own P-256 key. Planted,
K of each (M/1000 unless --plants): an exact copy of a leaf in another file (``shared_cert``),
a second certificate for the key of a leaf (``shared_key``), a leaf in a trust-store-named PEM
beside the root (``leaf_in_trust_store``). Nothing else in the tree is a finding.

Measured in one run: raw parsing of the same files with the loader for each (pyca/cryptography;
PyYAML + base64 for manifests, pyjks for keystores, as scan uses them), then
`trustyard scan TREE --format json` as a subprocess (peak RSS of that process by wait4, its
JSON written to a file), the ratio of the rates, and the recall of the planted findings
(read from the JSON's findings lines, the document is never loaded whole).
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, pkcs12
from cryptography.x509.oid import NameOID

VERSION = 1
JKS_PASSWORD = "changeit"
FILES_PER_DIR = 500
# kind -> (share of the files, certificates per file); "pem_many" takes the rest of the certificates
SHARES: dict[str, tuple[float, int]] = {
    "pem_chain": (0.25, 3),
    "der": (0.25, 1),
    "p12": (0.10, 2),
    "secret": (0.15, 3),
    "jks": (0.02, 3),
    "pem_many": (0.23, 0),
}


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(now: datetime) -> dict[str, bytes]:
    root_key = ec.generate_private_key(ec.SECP256R1())
    inter_key = ec.generate_private_key(ec.SECP256R1())

    def make(subject: str, key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey, issuer: str,
             ) -> x509.Certificate:
        return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False, key_agreement=False,
                                             key_cert_sign=True, crl_sign=True, encipher_only=False,
                                             decipher_only=False), critical=True)
                .sign(signer, hashes.SHA256()))

    root = make("Big Bench Root", root_key, root_key, "Big Bench Root")
    inter = make("Big Bench Intermediate", inter_key, root_key, "Big Bench Root")
    return {"root": root.public_bytes(Encoding.DER), "inter": inter.public_bytes(Encoding.DER),
            "inter_key": inter_key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())}


class _Signer:
    def __init__(self, ca: dict[str, bytes], now: datetime) -> None:
        self.inter = x509.load_der_x509_certificate(ca["inter"])
        self.root = x509.load_der_x509_certificate(ca["root"])
        self.key = serialization.load_der_private_key(ca["inter_key"], None)
        self.now = now

    def leaf(self, host: str, key: ec.EllipticCurvePrivateKey | None = None
             ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = key or ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(_name(host)).issuer_name(self.inter.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(self.now - timedelta(days=1)).not_valid_after(self.now + timedelta(days=89))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
                .sign(self.key, hashes.SHA256()))  # type: ignore[arg-type]
        return cert, key


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def _secret(name: str, crt: bytes, key: bytes, ca: bytes) -> bytes:
    b64 = lambda b: base64.b64encode(b).decode()
    return (f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: bench\n"
            f"type: kubernetes.io/tls\ndata:\n  tls.crt: {b64(crt)}\n  tls.key: {b64(key)}\n  ca.crt: {b64(ca)}\n"
            ).encode()


def _jks(alias: str, leaf: x509.Certificate, key: ec.EllipticCurvePrivateKey, s: _Signer) -> bytes:
    import jks

    entry = jks.PrivateKeyEntry.new(alias, [leaf.public_bytes(Encoding.DER), s.inter.public_bytes(Encoding.DER)],
                                    key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption()), "pkcs8")
    root = jks.TrustedCertEntry.new("root", s.root.public_bytes(Encoding.DER))
    return bytes(jks.KeyStore.new("jks", [entry, root]).saves(JKS_PASSWORD))


def _write_range(args: tuple[str, dict[str, bytes], str, list[tuple[int, str, int]]]) -> list[list[Any]]:
    """Write the files of one slice of the plan; returns their manifest rows."""
    tree_s, ca, now_s, plan = args
    tree, s = Path(tree_s), _Signer(ca, datetime.fromisoformat(now_s))
    rows: list[list[Any]] = []
    made_dirs: set[Path] = set()
    for i, kind, n in plan:
        d = tree / f"d{i // FILES_PER_DIR:04d}"
        if d not in made_dirs:
            d.mkdir(parents=True, exist_ok=True)
            made_dirs.add(d)
        host = f"s{i}.bench.internal"
        if kind == "pem_many":
            data = _pem(*(s.leaf(f"s{i}-{j}.bench.internal")[0] for j in range(n)))
            rel = f"{d.name}/certs-{i}.pem"
        else:
            leaf, key = s.leaf(host)
            if kind == "pem_chain":
                data, rel = _pem(leaf, s.inter, s.root), f"{d.name}/s{i}-fullchain.pem"
            elif kind == "der":
                data, rel = leaf.public_bytes(Encoding.DER), f"{d.name}/s{i}.der"
            elif kind == "p12":
                data = pkcs12.serialize_key_and_certificates(f"s{i}".encode(), key, leaf, [s.inter], NoEncryption())
                rel = f"{d.name}/s{i}.p12"
            elif kind == "secret":
                data = _secret(f"s{i}-tls", _pem(leaf, s.inter), _key_pem(key), _pem(s.root))
                rel = f"{d.name}/s{i}-tls.yaml"
            else:
                data, rel = _jks(f"s{i}", leaf, key, s), f"{d.name}/s{i}.jks"
        (tree / rel).write_bytes(data)
        rows.append([rel, kind, n])
    return rows


def plan_files(certs: int, files: int, plants: int) -> list[tuple[int, str, int]]:
    """(index, kind, certificates) for the mixed files; pem_many files take what the others leave."""
    mixed_files = files - 3 * plants
    mixed_certs = certs - 4 * plants
    kinds: list[str] = []
    for kind, (share, _) in SHARES.items():
        kinds += [kind] * int(mixed_files * share)
    kinds += ["pem_many"] * (mixed_files - len(kinds))
    random.Random(1).shuffle(kinds)
    fixed = sum(SHARES[k][1] for k in kinds)
    many = kinds.count("pem_many")
    rest = mixed_certs - fixed
    if many == 0 or rest < many:
        raise SystemExit(f"{certs} certificates do not fill {files} files of this mix: give more certificates")
    per, extra = divmod(rest, many)
    out = []
    seen_many = 0
    for i, kind in enumerate(kinds):
        if kind == "pem_many":
            out.append((i, kind, per + (1 if seen_many < extra else 0)))
            seen_many += 1
        else:
            out.append((i, kind, SHARES[kind][1]))
    return out


def _plant(tree: Path, ca: dict[str, bytes], now: datetime, rows: list[list[Any]], plants: int,
           ) -> dict[str, list[dict[str, str]]]:
    """K exact copies of DER leaves, K re-keyed certificates, K leaves in trust stores."""
    s = _Signer(ca, now)
    rng = random.Random(3)
    ders = [r for r in rows if r[1] == "der"]
    picks = rng.sample(ders, 2 * plants)
    planted: dict[str, list[dict[str, str]]] = {"shared_cert": [], "shared_key": [], "leaf_in_trust_store": []}
    for d in ("copies", "rekeyed", "trust"):
        (tree / d).mkdir(exist_ok=True)
    for k, (rel, _, _) in enumerate(picks[:plants]):  # the same certificate in a second place
        data = (tree / rel).read_bytes()
        cert = x509.load_der_x509_certificate(data)
        copy = f"copies/copy-{k}.crt"
        (tree / copy).write_bytes(_pem(cert))
        rows.append([copy, "pem_chain", 1])
        planted["shared_cert"].append({"fingerprint": cert.fingerprint(hashes.SHA256()).hex(), "a": rel, "b": copy})
    for k, (rel, _, _) in enumerate(picks[plants:]):  # a second certificate for a leaf's key
        # the key of a DER leaf is not in the tree: re-key both (the original is rewritten)
        key = ec.generate_private_key(ec.SECP256R1())
        first, _ = s.leaf(x509.load_der_x509_certificate((tree / rel).read_bytes()).subject.rfc4514_string()[3:], key)
        (tree / rel).write_bytes(first.public_bytes(Encoding.DER))
        second, _ = s.leaf(f"rekeyed-{k}.bench.internal", key)
        other = f"rekeyed/rekeyed-{k}.der"
        (tree / other).write_bytes(second.public_bytes(Encoding.DER))
        rows.append([other, "der", 1])
        spki = first.public_key().public_bytes(Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        planted["shared_key"].append({"spki": hashlib.sha256(spki).hexdigest(), "a": rel, "b": other})
    for k in range(plants):  # a service certificate pinned in a trust store
        leaf, _ = s.leaf(f"pinned-{k}.bench.internal")
        store = f"trust/truststore-{k}.pem"
        (tree / store).write_bytes(_pem(s.root, leaf))
        rows.append([store, "pem_chain", 2])
        planted["leaf_in_trust_store"].append({"fingerprint": leaf.fingerprint(hashes.SHA256()).hex(), "a": store})
    return planted


def build(root: Path, certs: int, files: int, plants: int, workers: int) -> dict[str, Any]:
    started = time.perf_counter()
    tree = root / "tree"
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    now = datetime.now(UTC).replace(microsecond=0)
    ca = _ca(now)
    plan = plan_files(certs, files, plants)
    chunk = max(1, len(plan) // (workers * 20))
    slices = [(str(tree), ca, now.isoformat(), plan[a:a + chunk]) for a in range(0, len(plan), chunk)]
    rows: list[list[Any]] = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for part in pool.map(_write_range, slices):
            rows += part
    planted = _plant(tree, ca, now, rows, plants)
    manifest = {"version": VERSION, "certs_asked": certs, "files_asked": files, "files": rows,
                "certificates": sum(r[2] for r in rows), "planted": planted,
                "by_kind": {k: sum(1 for r in rows if r[1] == k) for k in sorted({r[1] for r in rows})},
                "generation_seconds": round(time.perf_counter() - started, 1)}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def cached(cache: Path, certs: int, files: int, plants: int, workers: int, rebuild: bool
           ) -> tuple[Path, dict[str, Any]]:
    mpath = cache / "manifest.json"
    if not rebuild and mpath.is_file():
        manifest = json.loads(mpath.read_text())
        if (manifest.get("version"), manifest.get("certs_asked"), manifest.get("files_asked")) == (VERSION, certs, files) \
                and len(manifest["planted"]["shared_cert"]) == plants:
            manifest["cached"] = True
            return cache / "tree", manifest
    cache.mkdir(parents=True, exist_ok=True)
    manifest = build(cache, certs, files, plants, workers)
    manifest["cached"] = False
    return cache / "tree", manifest


# ------------------------------------------------------------------ measuring

def raw_parse(tree: Path, rows: list[list[Any]]) -> tuple[int, float, float]:
    """Every file with the loader for its kind: the cost of parsing alone (count, wall s, CPU s)."""
    import jks
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    count = 0
    started, cpu = time.perf_counter(), time.process_time()
    for rel, kind, _ in rows:
        data = (tree / rel).read_bytes()
        if kind in ("pem_chain", "pem_many"):
            count += len(x509.load_pem_x509_certificates(data))
        elif kind == "der":
            x509.load_der_x509_certificate(data)
            count += 1
        elif kind == "p12":
            p12 = pkcs12.load_pkcs12(data, None)
            count += (p12.cert is not None) + len(p12.additional_certs)
        elif kind == "secret":
            doc = yaml.load(data, Loader=loader)
            for name, value in doc["data"].items():
                blob = base64.b64decode(value)
                if name.endswith(".key"):
                    serialization.load_pem_private_key(blob, None)
                else:
                    count += len(x509.load_pem_x509_certificates(blob))
        elif kind == "jks":
            store = jks.KeyStore.loads(data, JKS_PASSWORD, try_decrypt_keys=True)
            for entry in store.private_keys.values():
                serialization.load_der_private_key(entry.pkey_pkcs8, None)
                for _, der in entry.cert_chain:
                    x509.load_der_x509_certificate(der)
                    count += 1
            for trusted in store.certs.values():
                x509.load_der_x509_certificate(trusted.cert)
                count += 1
    return count, time.perf_counter() - started, time.process_time() - cpu


def recall(json_path: Path, planted: dict[str, list[dict[str, str]]]) -> dict[str, Any]:
    """Planted findings found, from the findings lines of the scan's JSON (one item a line)."""
    findings: list[dict[str, Any]] = []
    certificates = 0
    section = None
    with json_path.open() as f:
        for line in f:
            if line.startswith('  "'):
                section = line.split('"')[1]
                continue
            if section == "certificates" and line.startswith("    {"):
                certificates += 1
            elif section == "findings" and line.startswith("    {"):
                findings.append(json.loads(line.strip().rstrip(",")))
    by_code: dict[str, list[dict[str, Any]]] = {}
    for f in findings:
        by_code.setdefault(f["code"], []).append(f)
    fps = {c: {f["fingerprint_sha256"] for f in by_code.get(c, [])} for c in ("shared_cert", "leaf_in_trust_store")}
    found = {
        "shared_cert": sum(p["fingerprint"] in fps["shared_cert"] for p in planted["shared_cert"]),
        "leaf_in_trust_store": sum(p["fingerprint"] in fps["leaf_in_trust_store"] for p in planted["leaf_in_trust_store"]),
        "shared_key": sum(any(f"SPKI sha256 {p['spki'][:16]}" in f["detail"] for f in by_code.get("shared_key", []))
                          for p in planted["shared_key"]),
    }
    return {"certificates_reported": certificates, "findings": len(findings),
            "by_code": {c: len(v) for c, v in sorted(by_code.items())},
            "planted": {c: len(v) for c, v in planted.items()}, "found": found,
            "unplanned": {c: len(by_code.get(c, [])) - found[c] for c in found}}


__all__ = ["build", "cached", "raw_parse", "recall"]
