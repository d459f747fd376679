"""A generated tree of certificates in mixed formats, cached between runs.

One root, one intermediate and a small pool of leaf keys: signing a leaf with P-256
costs tens of microseconds, so 20,000 certificates take seconds, not minutes. Every
file's format is recorded in ``manifest.json`` so the raw-parse baseline can call the
right pyca/cryptography loader on each file without guessing.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    pkcs7,
    pkcs12,
)
from cryptography.x509.oid import NameOID

VERSION = 2  # bump when the layout changes, so a stale cache is rebuilt
P12_PASSWORD = b"changeit"

# (kind, files, certificates per file); the shares below make 20,500 certificates
MIX: tuple[tuple[str, int, int], ...] = (
    ("pem", 6000, 1),  # one leaf
    ("pem_bundle", 1500, 3),  # leaf, intermediate, root
    ("der", 4000, 1),
    ("p7b", 1000, 2),  # PKCS#7 in PEM: leaf, intermediate
    ("p7c", 500, 2),  # PKCS#7 in DER
    ("p12", 1450, 2),  # PKCS#12 without a password: key, leaf, intermediate
    ("p12_pw", 50, 2),  # PKCS#12 under the keytool default password
)
KEYS = 200  # PEM private keys, some beside a certificate of the same stem
JUNK = 300  # files that are not certificates: the scan must skip them quickly
FILES_PER_DIR = 200


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class Factory:
    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = self._ca(_name("Bench Root"), self.root_key, self.root_key, _name("Bench Root"))
        self.inter_key = ec.generate_private_key(ec.SECP256R1())
        self.inter = self._ca(_name("Bench Intermediate"), self.inter_key, self.root_key, self.root.subject)
        self.leaf_keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(24)]
        self.leaf_keys.append(rsa.generate_private_key(65537, 2048))

    def _ca(self, subject: x509.Name, key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey,
            issuer: x509.Name) -> x509.Certificate:
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(self.now - timedelta(days=1)).not_valid_after(self.now + timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(signer, hashes.SHA256()))

    def leaf(self, i: int) -> tuple[x509.Certificate, object]:
        """Mostly healthy 90-day leaves; a few expired, self-signed, CN-only or long-lived."""
        key = self.leaf_keys[i % len(self.leaf_keys)]
        host = f"svc{i}.bench.internal"
        start = self.now - timedelta(days=1)
        end = start + timedelta(days=90)
        r = self.rng.random()
        if r < 0.03:
            start, end = self.now - timedelta(days=60), self.now - timedelta(days=30)
        elif r < 0.05:
            end = start + timedelta(days=800)
        builder = (x509.CertificateBuilder().subject_name(_name(host)).public_key(key.public_key())  # type: ignore[attr-defined]
                   .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
        if self.rng.random() > 0.02:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        if self.rng.random() < 0.02:  # self-signed
            return builder.issuer_name(_name(host)).sign(key, hashes.SHA256()), key  # type: ignore[arg-type]
        return builder.issuer_name(self.inter.subject).sign(self.inter_key, hashes.SHA256()), key


def build(root: Path) -> dict[str, object]:
    """Write the tree under ``root/tree`` and return the manifest."""
    started = time.perf_counter()
    f = Factory()
    tree = root / "tree"
    if tree.exists():
        shutil.rmtree(tree)
    files: list[tuple[str, str, int]] = []  # (relative path, kind, certificates)

    def path_for(stem: str, suffix: str) -> Path:
        d = tree / f"d{len(files) // FILES_PER_DIR:03d}"
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{stem}{suffix}"

    def emit(p: Path, data: bytes, kind: str, certs: int) -> None:
        p.write_bytes(data)
        files.append((str(p.relative_to(tree)), kind, certs))

    suffix = {"pem": ".crt", "pem_bundle": "-fullchain.pem", "der": ".der", "p7b": ".p7b", "p7c": ".p7c",
              "p12": ".p12", "p12_pw": ".pfx"}
    plan = [kind for kind, count, _ in MIX for _ in range(count)]
    random.Random(1).shuffle(plan)
    per_file = {kind: per for kind, _, per in MIX}
    keys_left = KEYS
    for n, kind in enumerate(plan):
        cert, key = f.leaf(n)
        stem = f"svc{n}"
        p = path_for(stem, suffix[kind])
        if kind == "pem":
            data = cert.public_bytes(Encoding.PEM)
        elif kind == "pem_bundle":
            data = b"".join(c.public_bytes(Encoding.PEM) for c in (cert, f.inter, f.root))
        elif kind == "der":
            data = cert.public_bytes(Encoding.DER)
        elif kind == "p7b":
            data = pkcs7.serialize_certificates([cert, f.inter], Encoding.PEM)
        elif kind == "p7c":
            data = pkcs7.serialize_certificates([cert, f.inter], Encoding.DER)
        else:
            enc = BestAvailableEncryption(P12_PASSWORD) if kind == "p12_pw" else NoEncryption()
            data = pkcs12.serialize_key_and_certificates(stem.encode(), key, cert, [f.inter], enc)  # type: ignore[arg-type]
        emit(p, data, kind, per_file[kind])
        if kind == "pem" and keys_left > 0 and n % 7 == 0:  # tls.crt + tls.key style pairs
            kp = p.with_suffix(".key")
            emit(kp, key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()), "key", 0)  # type: ignore[attr-defined]
            os.chmod(kp, 0o600)
            keys_left -= 1
    for i in range(keys_left):
        key = f.leaf_keys[i % len(f.leaf_keys)]
        emit(path_for(f"orphan{i}", ".key"),
             key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()), "key", 0)  # type: ignore[attr-defined]
    rng = random.Random(2)
    for i in range(JUNK):
        text = "\n".join(f"setting_{j} = {rng.random()}" for j in range(rng.randint(5, 200)))
        emit(path_for(f"notes{i}", rng.choice([".txt", ".conf", ".py", ".log"])), text.encode(), "junk", 0)
    manifest = {
        "version": VERSION,
        "files": files,
        "certificates": sum(c for _, _, c in files),
        "by_kind": {kind: sum(1 for _, k, _ in files if k == kind) for kind in sorted({k for _, k, _ in files})},
        "generation_seconds": round(time.perf_counter() - started, 2),
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def cached(cache: Path, rebuild: bool = False) -> tuple[Path, dict[str, object]]:
    """The tree under ``cache``, built once and reused while its version matches."""
    mpath = cache / "manifest.json"
    if not rebuild and mpath.is_file():
        manifest = json.loads(mpath.read_text())
        if manifest.get("version") == VERSION and (cache / "tree").is_dir():
            manifest["cached"] = True
            return cache / "tree", manifest
    cache.mkdir(parents=True, exist_ok=True)
    manifest = build(cache)
    manifest["cached"] = False
    return cache / "tree", manifest
