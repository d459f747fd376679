"""``inspect`` reads what ``scan`` reads. Inputs are made with the real openssl CLI
and keytool, and the assertions are on the text a person reads."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from trustyard.testing import free_port, need
from trustyard.x509.summary import spki_sha256


def openssl(*args: str, cwd: Path) -> None:
    need("openssl")
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def inspect(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TRUSTYARD_STORE_PASSWORD"}
    return subprocess.run([sys.executable, "-m", "trustyard", "inspect", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, env=env)


def the_mess(tmp: Path) -> None:
    """What a platform engineer has: OpenSSL 3 marks it CA:TRUE, with no SAN."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", "key.pem", "-out", "cert.pem",
            "-subj", "/CN=service-a.internal", cwd=tmp)


def spki_of(path: Path) -> str:
    return spki_sha256(x509.load_pem_x509_certificate(path.read_bytes()))


def test_a_key_and_its_certificate_say_they_match(tmp_path: Path) -> None:
    the_mess(tmp_path)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30",
            "-keyout", "other.key", "-out", "other.crt", "-subj", "/CN=other.internal", cwd=tmp_path)
    result = inspect("key.pem", "cert.pem", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("[0] cert.pem\n    subject      CN=service-a.internal\n")
    assert f"key key.pem: rsa-2048, SPKI sha256 {spki_of(tmp_path / 'cert.pem')}, matches cert.pem" in out
    assert "    SANs         (none)\n" in out
    assert "    Basic Constraints         CA:TRUE, critical\n" in out

    alone = inspect("other.key", "cert.pem", cwd=tmp_path).stdout
    assert f"key other.key: ec-p256, SPKI sha256 {spki_of(tmp_path / 'other.crt')}, matches none of the " \
           "certificates given" in alone
    assert "key other.key: ec-p256" in inspect("other.key", cwd=tmp_path).stdout


def test_pkcs12_needs_its_password_and_then_shows_the_pair(tmp_path: Path) -> None:
    the_mess(tmp_path)
    openssl("pkcs12", "-export", "-in", "cert.pem", "-inkey", "key.pem", "-out", "store.p12", "-name", "service-a",
            "-passout", "pass:s3cret", cwd=tmp_path)
    locked = inspect("store.p12", cwd=tmp_path)
    assert locked.returncode == 1
    assert locked.stderr.strip() == "trustyard: error: store.p12: PKCS#12 store: no given password opens it " \
                                    "(use --password)"
    opened = inspect("store.p12", "--password", "s3cret", cwd=tmp_path)
    assert opened.returncode == 0, opened.stderr
    assert opened.stdout.startswith("[0] store.p12#service-a\n    subject      CN=service-a.internal\n")
    assert f"key store.p12#service-a: rsa-2048, SPKI sha256 {spki_of(tmp_path / 'cert.pem')}, " \
           "matches store.p12#service-a" in opened.stdout


def test_jks_truststore_made_by_keytool(tmp_path: Path) -> None:
    need("keytool")
    the_mess(tmp_path)
    subprocess.run(["keytool", "-importcert", "-noprompt", "-alias", "service-a", "-file", "cert.pem", "-keystore",
                    "trust.jks", "-storetype", "JKS", "-storepass", "changeit"], cwd=tmp_path, check=True,
                   capture_output=True)
    result = inspect("trust.jks", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    fp = x509.load_pem_x509_certificate((tmp_path / "cert.pem").read_bytes()).fingerprint(hashes.SHA256()).hex()
    assert result.stdout.startswith("[0] trust.jks#service-a\n    subject      CN=service-a.internal\n")
    assert f"    sha256       {fp}\n" in result.stdout


def test_one_secret_of_a_manifest(tmp_path: Path) -> None:
    the_mess(tmp_path)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30",
            "-keyout", "orders.key", "-out", "orders.crt", "-subj", "/CN=orders.internal",
            "-addext", "subjectAltName=DNS:orders.internal", cwd=tmp_path)

    def secret(ns: str, name: str, crt: str, key: str) -> str:
        b64 = lambda f: base64.b64encode((tmp_path / f).read_bytes()).decode()
        return (f"apiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata:\n  name: {name}\n"
                f"  namespace: {ns}\ndata:\n  tls.crt: {b64(crt)}\n  tls.key: {b64(key)}\n")

    (tmp_path / "secrets.yaml").write_text(secret("prod", "service-a-tls", "cert.pem", "key.pem") + "---\n"
                                           + secret("prod", "orders-tls", "orders.crt", "orders.key"))
    result = inspect("secrets.yaml#prod/orders-tls", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("[0] secrets.yaml#Secret/prod/orders-tls/tls.crt\n    subject      CN=orders.internal\n")
    assert "service-a" not in out
    assert (f"key secrets.yaml#Secret/prod/orders-tls/tls.key: ec-p256, SPKI sha256 {spki_of(tmp_path / 'orders.crt')}"
            ", matches secrets.yaml#Secret/prod/orders-tls/tls.crt") in out
    missing = inspect("secrets.yaml#prod/nope", cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.strip() == ("trustyard: error: secrets.yaml: no Secret or ConfigMap prod/nope "
                                      "(found: Secret/prod/orders-tls, Secret/prod/service-a-tls)")


def test_extensions_and_warnings_scan_would_give(tmp_path: Path) -> None:
    # CN only, weak key, 825 days, CA:FALSE: every rule of scan's shape check fires
    openssl("req", "-x509", "-newkey", "rsa:1024", "-nodes", "-days", "825", "-keyout", "weak.key", "-out",
            "weak.crt", "-subj", "/CN=legacy.internal", "-addext", "basicConstraints=critical,CA:FALSE", cwd=tmp_path)
    weak = inspect("weak.crt", cwd=tmp_path)
    assert weak.returncode == 0, weak.stderr
    lines = weak.stdout.splitlines()
    warns = {line.split(":")[1].strip() for line in lines if line.startswith("warn: ")}
    assert {"self_signed_leaf", "weak_key", "no_san", "long_validity"} <= warns, weak.stdout
    assert "warn: weak_key: CN=legacy.internal: RSA key of 1024 bits" in lines
    assert "warn: long_validity: CN=legacy.internal is valid for 825 days (more than 398)" in lines
    assert "    Basic Constraints         CA:FALSE, critical" in lines

    # CA:TRUE on a certificate that serves orders.internal
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30",
            "-keyout", "svc.key", "-out", "svc.crt", "-subj", "/CN=orders.internal",
            "-addext", "subjectAltName=DNS:orders.internal",
            "-addext", "keyUsage=critical,digitalSignature,keyEncipherment",
            "-addext", "extendedKeyUsage=serverAuth,clientAuth", cwd=tmp_path)
    svc = inspect("svc.crt", cwd=tmp_path).stdout.splitlines()
    assert "    Basic Constraints         CA:TRUE, critical" in svc
    assert "    Key Usage                 Digital Signature, Key Encipherment, critical" in svc
    assert "    Extended Key Usage        TLS Web Server Authentication, TLS Web Client Authentication" in svc
    assert any(line.startswith("warn: self_signed_leaf: CN=orders.internal is self-signed") for line in svc), svc


def _chain(tmp: Path) -> None:
    """A name-constrained CA and a leaf it signed, made with the openssl CLI."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30",
            "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=Team CA",
            "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-addext", "nameConstraints=critical,permitted;DNS:.internal,excluded;IP:10.0.0.0/255.0.0.0", cwd=tmp)
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "leaf.key",
            "-out", "leaf.csr", "-subj", "/CN=web.internal", cwd=tmp)
    (tmp / "ext.cnf").write_text("subjectAltName=DNS:web.internal\nbasicConstraints=CA:FALSE\n"
                                 "extendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\n"
                                 "subjectKeyIdentifier=hash\n")
    openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "10",
            "-extfile", "ext.cnf", "-out", "leaf.pem", cwd=tmp)


def test_served_chain_shows_name_constraints_and_key_identifiers_and_writes_pem(tmp_path: Path) -> None:
    _chain(tmp_path)
    port = free_port()
    server = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", "leaf.pem", "-key",
                               "leaf.key", "-cert_chain", "ca.pem", "-quiet", "-naccept", "4"],
                              cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        text = inspect(f"127.0.0.1:{port}", cwd=tmp_path)
        assert text.returncode == 0, text.stderr
        lines = text.stdout.splitlines()
        ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
        ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex(":").upper()
        assert lines[0] == f"[0] 127.0.0.1:{port}#0" and f"[1] 127.0.0.1:{port}#1" in lines
        assert f"    Authority Key Identifier  {ski}" in lines  # the leaf points at the CA ...
        assert f"    Subject Key Identifier    {ski}" in lines  # ... which is served next
        assert "    Basic Constraints         CA:TRUE, pathlen:0, critical" in lines
        assert "    Key Usage                 Certificate Sign, CRL Sign, critical" in lines
        assert "    Name Constraints          permitted DNS:.internal; excluded IP:10.0.0.0/8, critical" in lines

        pem = inspect(f"127.0.0.1:{port}", "--format", "pem", cwd=tmp_path)
        assert pem.returncode == 0, pem.stderr
        served = x509.load_pem_x509_certificates(pem.stdout.encode())
        assert served == [x509.load_pem_x509_certificate((tmp_path / n).read_bytes()) for n in ("leaf.pem", "ca.pem")]
        (tmp_path / "served.pem").write_text(pem.stdout)
        verify = subprocess.run(["openssl", "verify", "-CAfile", "ca.pem", "served.pem"], cwd=tmp_path,
                                capture_output=True, text=True)
        assert verify.returncode == 0, verify.stderr
    finally:
        server.terminate()
        server.wait(10)
