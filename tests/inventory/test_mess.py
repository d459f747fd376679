"""scan on what people actually have: the self-signed certificate that
``openssl req -x509 -newkey rsa:2048 -nodes -days 1 ... -subj "/CN=service-a.internal"`` makes
(OpenSSL 3 marks it CA:TRUE, no SAN), copied around as PEM, PKCS#12, a JKS truststore and a
Kubernetes Secret. Every assertion is on the text a person reads."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from trustyard.cli import main
from trustyard.testing import need

from ..diagnose.servers import Server

SUBJ = "/CN=service-a.internal"


def openssl(*args: str) -> None:
    subprocess.run([need("openssl"), *args], check=True, capture_output=True)


def make_selfsigned(directory: Path, subj: str = SUBJ, *extra: str) -> tuple[Path, Path]:
    """The command from the issue, as people type it."""
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = directory / "key.pem", directory / "cert.pem"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", str(key), "-out", str(cert),
            "-subj", subj, *extra)
    return cert, key


def secret_yaml(name: str, cert: Path, key: Path) -> str:
    b64 = lambda p: base64.b64encode(p.read_bytes()).decode()
    return yaml.safe_dump({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                           "metadata": {"name": name, "namespace": "prod"},
                           "data": {"tls.crt": b64(cert), "tls.key": b64(key)}})


@pytest.fixture(scope="module")
def mess(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need("keytool")
    base = tmp_path_factory.mktemp("mess")
    cert, key = make_selfsigned(base / "service-a")
    text = cert.read_bytes()
    for copy in ("gateway/service-a.crt", "nginx/ssl/server.crt", "client/ca-bundle.pem"):
        (base / copy).parent.mkdir(parents=True, exist_ok=True)
        (base / copy).write_bytes(text)
    (base / "java").mkdir()
    openssl("pkcs12", "-export", "-in", str(cert), "-inkey", str(key), "-name", "service-a",
            "-out", str(base / "java" / "service-a.p12"), "-passout", "pass:changeit")
    openssl("pkcs12", "-export", "-nokeys", "-in", str(cert), "-out", str(base / "java" / "truststore.p12"),
            "-passout", "pass:changeit")
    subprocess.run(["keytool", "-importcert", "-noprompt", "-alias", "service-a", "-file", str(cert),
                    "-keystore", str(base / "java" / "truststore.jks"), "-storetype", "JKS",
                    "-storepass", "changeit"], check=True, capture_output=True)
    (base / "k8s").mkdir()
    (base / "k8s" / "service-a-tls.yaml").write_text(secret_yaml("service-a-tls", cert, key))
    return base


def findings_block(out: str, code: str) -> str:
    """The finding's line and the indented lines under it (at:, fix:)."""
    match = re.search(rf"^\w+ +{code} .*(?:\n {{5,}}.*)*", out, re.M)
    assert match, f"no {code} finding in:\n{out}"
    return match.group(0)


def test_the_classic_openssl_mess_is_seen_for_what_it_is(mess: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "CA:TRUE" in subprocess.run(["openssl", "x509", "-noout", "-text", "-in", str(mess / "service-a" / "cert.pem")],
                                       capture_output=True, text=True).stdout  # the premise: OpenSSL 3
    assert main(["scan", str(mess)]) == 0  # warnings only: exit 0 at the default --fail-on error
    out = capsys.readouterr().out
    # one row for the one certificate, a service certificate, in 8 places
    rows = [line for line in out.splitlines() if "CN=service-a.internal" in line and not line.startswith(" ")]
    assert len(rows) == 1 + 4, out  # the table row, plus four findings naming it
    row = next(r for r in rows if re.match(r"[0-9a-f]{16} ", r))
    assert re.search(r"CN=service-a\.internal +service +\S+( \S+)? +8$", row), row
    # no copy is taken for a root, and a 1-day certificate with a day left is not "expiring"
    assert "root" not in row and "expiring" not in out
    self_signed = findings_block(out, "self_signed_leaf")
    assert "CN=service-a.internal is self-signed (it is marked CA:TRUE" in self_signed
    assert "fix: trustyard token service-a.internal; trustyard issue service-a.internal" in self_signed
    assert "has no DNS or IP subject alternative name" in findings_block(out, "no_san")
    assert "is copied to 8 places" in findings_block(out, "shared_cert")
    in_store = findings_block(out, "leaf_in_trust_store")
    assert "in 3 trust store(s)" in in_store
    for store in ("client/ca-bundle.pem", "java/truststore.jks#service-a", "java/truststore.p12#"):
        assert re.search(rf"at: .*{re.escape(store)}", in_store), in_store
    assert "fix: trust the CA, not one certificate: trustyard roots" in in_store
    # the private key is in the PEM pair, the PKCS#12 and the Secret
    assert "the private key is in 3 places" in findings_block(out, "shared_key")
    for where in ("service-a/cert.pem", "gateway/service-a.crt", "nginx/ssl/server.crt", "java/service-a.p12#service-a",
                  "k8s/service-a-tls.yaml#Secret/prod/service-a-tls/tls.crt"):
        assert re.search(rf"^    \S*{re.escape(where)}", out, re.M), where
    assert "1 distinct certificate in 8 locations, 1 private key in 3 locations" in out


def _role_of(out: str, subject: str) -> str:
    row = next(line for line in out.splitlines() if f" {subject} " in line and re.match(r"[0-9a-f]{16} ", line))
    return row.split(subject, 1)[1].split()[0]


def test_roots_are_roots_only_by_what_they_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a CA made the same way that signed a service certificate in the scan: a root, not a finding
    ca_cert, ca_key = make_selfsigned(tmp_path / "ca", "/CN=Corp Root CA")
    svc = tmp_path / "svc"
    svc.mkdir()
    openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(svc / "tls.key"), "-out", str(svc / "tls.csr"),
            "-subj", "/CN=orders.internal")
    ext = tmp_path / "ext.cnf"
    ext.write_text("subjectAltName=DNS:orders.internal\nbasicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", str(svc / "tls.csr"), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-days", "1",
            "-extfile", str(ext), "-out", str(svc / "tls.crt"))
    (svc / "tls.csr").unlink()
    # a self-signed root that signs nothing here, in a client's bundle next to another root
    other, other_key = make_selfsigned(tmp_path / "other", "/CN=Partner Root CA")
    other_key.unlink()  # a partner's root comes without its key
    (tmp_path / "client").mkdir()
    (tmp_path / "client" / "ca-bundle.pem").write_bytes(ca_cert.read_bytes() + other.read_bytes())
    # a service certificate pinned in a client's bundle among those roots stays a service certificate
    api, _ = make_selfsigned(tmp_path / "api", "/CN=api.internal")
    (tmp_path / "client" / "pinned-bundle.pem").write_bytes(ca_cert.read_bytes() + other.read_bytes() + api.read_bytes())
    # a CA:TRUE self-signed certificate with a host name that is served and paired with its key,
    # and that also signed a certificate: both labels
    gw_cert, gw_key = make_selfsigned(tmp_path / "gw", "/CN=gw.internal")
    openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "child.key"),
            "-out", str(tmp_path / "child.csr"), "-subj", "/CN=child.internal")
    openssl("x509", "-req", "-in", str(tmp_path / "child.csr"), "-CA", str(gw_cert), "-CAkey", str(gw_key),
            "-days", "1", "-extfile", str(ext), "-out", str(tmp_path / "gw" / "child.crt"))
    for leftover in ("child.key", "child.csr"):
        (tmp_path / leftover).unlink()
    server = Server(cert=gw_cert, key=gw_key)
    try:
        assert main(["scan", str(tmp_path), "--endpoint", server.address]) == 0
    finally:
        server.close()
    out = capsys.readouterr().out
    assert _role_of(out, "CN=Corp Root CA") == "root"
    assert _role_of(out, "CN=Partner Root CA") == "root"
    assert _role_of(out, "CN=orders.internal") == "service"
    assert _role_of(out, "CN=gw.internal") == "service,root"
    assert _role_of(out, "CN=api.internal") == "service"
    # roots in a bundle are what a bundle is for; the pinned service certificate is not
    in_store = findings_block(out, "leaf_in_trust_store")
    assert "CN=api.internal" in in_store and "at: " in in_store and "client/pinned-bundle.pem#2" in in_store
    assert len(re.findall(r"^\w+ +leaf_in_trust_store ", out, re.M)) == 1, out
    flagged = re.findall(r"^\w+ +self_signed_leaf +[0-9a-f]{16}  (\S+)", out, re.M)
    assert sorted(flagged) == ["CN=api.internal", "CN=gw.internal"], out
