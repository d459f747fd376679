"""bench/acme/stepca: step-ca (smallstep/certificates) built from Debian's sources, and started for a round.

    python3 bench/acme/stepca.py            # build (or find) the binary; prints its path

Debian ships smallstep/certificates 0.19 as Go sources only (golang-github-smallstep-certificates-dev),
not as a binary. ``ensure_step_ca`` installs golang-go and those sources when they are missing,
writes the small ``main.go`` below (the ``step-ca`` command is ``commands.AppCommand``, an
urfave/cli v1 command) and builds it in GOPATH mode against /usr/share/gocode, into
~/.cache/trustyard-bench/step-ca (outside the repository; $XDG_CACHE_HOME is honoured). It is
idempotent: the build is redone only when the Debian package's version, the Go version or
``main.go`` changed (a stamp file beside the binary records them), and the binary is renamed
into place only when the build succeeded.

``start_step_ca`` runs it the way it ships: a root and an intermediate made for the run (the
intermediate key unencrypted PKCS#8, mode 0600, in the round's temporary directory), one ACME
provisioner, and its Badger v2 database on disk with Badger's default options: SyncWrites on,
so the value log is opened O_DSYNC and every write reaches the disk before it is acknowledged
(persistence on, as for trustyard; strace counted about 16 such writes per order).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import NameOID

PACKAGES = ("golang-go", "golang-github-smallstep-certificates-dev")
SOURCES = Path("/usr/share/gocode")
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trustyard-bench" / "step-ca"
BINARY = CACHE / "step-ca"

MAIN_GO = """\
// step-ca for bench/acme, built by bench/acme/stepca.py from Debian's smallstep/certificates sources.
package main

import (
\t"fmt"
\t"os"

\t"github.com/smallstep/certificates/commands"
\t"github.com/urfave/cli"
)

func main() {
\tapp := cli.NewApp()
\tapp.Name = "step-ca"
\tapp.HelpName = "step-ca"
\tapp.Usage = "an online certificate authority"
\tapp.UsageText = commands.AppCommand.UsageText
\tapp.Flags = commands.AppCommand.Flags
\tapp.Action = commands.AppCommand.Action
\tif err := app.Run(os.Args); err != nil {
\t\tfmt.Fprintln(os.Stderr, err)
\t\tos.Exit(1)
\t}
}
"""


def _package_version(name: str) -> str | None:
    result = subprocess.run(["dpkg-query", "-W", "-f", "${Status} ${Version}", name],
                            capture_output=True, text=True, check=False)
    words = result.stdout.split()
    return words[-1] if result.returncode == 0 and "installed" in words[:3] else None


def _install_packages() -> None:
    missing = [name for name in PACKAGES if _package_version(name) is None]
    if missing:
        print(f"step-ca: installing {' '.join(missing)}", file=sys.stderr, flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, stdout=subprocess.DEVNULL)


def _stamp() -> str:
    go = subprocess.run(["go", "version"], capture_output=True, text=True, check=True).stdout.strip()
    source = _package_version(PACKAGES[1])
    return json.dumps({"package": source, "go": go, "main.go": hashlib.sha256(MAIN_GO.encode()).hexdigest()})


def ensure_step_ca() -> Path:
    """The step-ca binary, built first if it is missing or out of date (see the module doc)."""
    _install_packages()
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "build.lock").open("w") as lock:  # two benchmarks starting at once build it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build()


def _build() -> Path:
    stamp_file = CACHE / "stamp.json"
    stamp = _stamp()
    if BINARY.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return BINARY
    package_dir = CACHE / "gopath" / "src" / "trustyard-bench-step-ca"
    package_dir.mkdir(parents=True, exist_ok=True)
    (package_dir / "main.go").write_text(MAIN_GO)
    env = {**os.environ, "GOPATH": f"{CACHE / 'gopath'}:{SOURCES}", "GO111MODULE": "off",
           "GOCACHE": str(CACHE / "gocache"), "GOFLAGS": ""}
    print(f"step-ca: building {BINARY} from {SOURCES} (a minute or two)", file=sys.stderr, flush=True)
    partial = BINARY.with_suffix(".partial")
    result = subprocess.run(["go", "build", "-o", str(partial), "."], cwd=package_dir, env=env,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"step-ca: `go build` in {package_dir} failed ({result.returncode}):\n"
                           f"{result.stderr[-3000:]}")
    partial.replace(BINARY)
    stamp_file.write_text(stamp)
    return BINARY


# -- one step-ca for one round ------------------------------------------------------------------------

def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
        out.write(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))


def make_ca(where: Path) -> tuple[Path, Path, Path]:
    """A throwaway root and intermediate (P-256) for one run: root.crt, intermediate.crt, intermediate.key."""
    now = datetime.now(UTC)
    root_key, inter_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "step-ca bench root")])
    inter_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "step-ca bench intermediate")])

    def ca_cert(subject: x509.Name, key: Any, path_length: int | None) -> x509.Certificate:
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(root_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
                .not_valid_after(now + timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(root_key, hashes.SHA256()))

    root, inter = ca_cert(root_name, root_key, 1), ca_cert(inter_name, inter_key, 0)
    paths = where / "root.crt", where / "intermediate.crt", where / "intermediate.key"
    paths[0].write_bytes(root.public_bytes(Encoding.PEM))
    paths[1].write_bytes(inter.public_bytes(Encoding.PEM))
    _write_key(paths[2], inter_key)
    return paths


def write_config(where: Path, port: int) -> tuple[Path, Path]:
    """ca.json for one step-ca on 127.0.0.1:``port``; returns it and the root to verify its TLS with."""
    root, crt, key = make_ca(where)
    config = {
        "root": str(root), "crt": str(crt), "key": str(key),
        "address": f"127.0.0.1:{port}", "dnsNames": ["127.0.0.1"],
        "logger": {"format": "text"},
        # Badger v2 with its default options: SyncWrites on, as step-ca ships
        "db": {"type": "badgerv2", "dataSource": str(where / "db")},
        "authority": {"provisioners": [{"type": "ACME", "name": "acme"}]},
    }
    path = where / "ca.json"
    path.write_text(json.dumps(config, indent=2))
    return path, root


def main() -> int:
    if shutil.which("apt-get") is None and any(_package_version(p) is None for p in PACKAGES):
        raise SystemExit(f"step-ca: needs {' '.join(PACKAGES)} (Debian) and apt-get to install them")
    print(ensure_step_ca())
    return 0


if __name__ == "__main__":
    sys.exit(main())
