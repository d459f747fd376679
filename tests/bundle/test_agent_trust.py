"""The agent writes the trust formats asked for, with bundle.json, in the certificate's
generation, and a new bundle version alone in a new generation; bad settings write nothing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from trustyard.ca import bundle
from trustyard.ca.config import load_config
from trustyard.ca.home import open_home_store
from trustyard.testing import TestCA, need

from ..agent.helpers import agent_args, mint, serve
from ..support import Server

PASSWORD = "truststore-pass-1"
TRUST_FILES = ("ca.crt", "truststore.p12", "truststore.jks", "bundle.json")


@pytest.fixture
def ca(sqlite_home: Path) -> Iterator[Server]:
    server = serve(sqlite_home)
    yield server
    server.stop()


def run_agent(ca: Server, out: Path, token: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trustyard", "agent",
                           *agent_args(ca, out, "orders.internal", token), "--once", *extra],
                          capture_output=True, text=True, timeout=120)


def generation(out: Path, name: str) -> str:
    """The generation directory the file ``name`` resolves into."""
    return Path(os.path.realpath(out / name)).parent.name


def keytool_list(path: Path, storetype: str, password: str) -> str:
    keytool = need("keytool", package="default-jdk-headless")
    done = subprocess.run([keytool, "-list", "-keystore", str(path), "-storetype", storetype, "-storepass", password],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_agent_writes_every_format_and_bundle_json_in_one_generation(ca: Server, tmp_path: Path) -> None:
    out, token, secret = tmp_path / "out", tmp_path / "token", tmp_path / "trust.pass"
    token.write_text(mint(ca.home, "orders.internal"))
    secret.write_text(PASSWORD + "\n")
    done = run_agent(ca, out, token, "--trust-formats", "pem,p12,jks", "--trust-password-file", str(secret))
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    assert "with trust bundle version 1" in done.stderr
    # One generation holds the certificate, its key and every trust file.
    assert {generation(out, n) for n in ("tls.crt", "tls.key", *TRUST_FILES)} == {generation(out, "..data/tls.crt")}
    pem = (out / "ca.crt").read_bytes()
    state = json.loads((out / "bundle.json").read_text())
    assert state == {"version": 1, "sha256": hashlib.sha256(pem).hexdigest(), "formats": ["pem", "p12", "jks"]}
    with ca.client() as c:
        assert c.get("/v1/roots").content == pem
    root = x509.load_pem_x509_certificate(ca.root.read_bytes())
    fingerprint = root.fingerprint(hashes.SHA256()).hex(":").upper()
    for name, storetype in (("truststore.jks", "JKS"), ("truststore.p12", "PKCS12")):
        assert oct((out / name).stat().st_mode & 0o777) == "0o644"
        listing = keytool_list(out / name, storetype, PASSWORD)
        assert "1 entry" in listing and fingerprint in listing
    openssl = need("openssl")
    extracted = subprocess.run([openssl, "pkcs12", "-in", str(out / "truststore.p12"), "-nokeys",
                                "-passin", f"pass:{PASSWORD}"], capture_output=True, timeout=60)
    assert extracted.returncode == 0, extracted.stderr
    assert x509.load_pem_x509_certificates(extracted.stdout) == [root]

    # The CA publishes a second root: the next run swaps in a new generation with version 2,
    # keeping the certificate, and the previous generation stays.
    first_generation = generation(out, "bundle.json")
    serial = (out / "tls.crt").read_bytes()
    config = load_config(ca.home)
    store = open_home_store(config)
    try:
        added = bundle.add_root(config, store, TestCA("Next", intermediates=0).cert)
    finally:
        store.close()
    time.sleep(1.2)  # the server re-reads the newest version at most every second
    done = run_agent(ca, out, token, "--trust-formats", "pem,p12,jks", "--trust-password-file", str(secret))
    assert done.returncode == 0, done.stderr
    assert "the CA's trust bundle changed: wrote version 2" in done.stderr
    state = json.loads((out / "bundle.json").read_text())
    assert state["version"] == 2 and state["sha256"] == added.sha256
    assert hashlib.sha256((out / "ca.crt").read_bytes()).hexdigest() == added.sha256
    assert (out / "tls.crt").read_bytes() == serial
    assert generation(out, "bundle.json") != first_generation and (out / first_generation).is_dir()
    assert {generation(out, n) for n in ("tls.crt", *TRUST_FILES)} == {generation(out, "bundle.json")}
    assert "2 entries" in keytool_list(out / "truststore.jks", "JKS", PASSWORD)
    assert "2 entries" in keytool_list(out / "truststore.p12", "PKCS12", PASSWORD)


@pytest.mark.parametrize(("flags", "says"), [
    (("--trust-formats", "pem,pkcs7"), "unknown format(s) 'pkcs7'"),
    (("--trust-formats", "p12"), "need --trust-password-file"),
    (("--trust-formats", "jks", "--trust-password-file", "/nonexistent/pass"), "cannot read the truststore password"),
], ids=["unknown-format", "no-password-file", "missing-password-file"])
def test_bad_trust_settings_exit_2_and_write_nothing(ca: Server, tmp_path: Path, flags: tuple[str, ...],
                                                     says: str) -> None:
    out, token = tmp_path / "out", tmp_path / "token"
    token.write_text(mint(ca.home, "orders.internal"))
    done = run_agent(ca, out, token, *flags)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr
    assert not out.exists()
    with ca.client() as c:  # the token was not spent either
        assert c.get("/v1/certificates", headers={
            "Authorization": "Bearer " + (ca.home / "admin.token").read_text().strip()}).json()["certificates"] == []


def test_trust_formats_and_password_file_come_from_the_agent_config_too(ca: Server, tmp_path: Path) -> None:
    """``trust_formats`` / ``trust_password_file`` in the TOML file (a relative path is the file's)."""
    out, token = tmp_path / "out", tmp_path / "token"
    token.write_text(mint(ca.home, "orders.internal"))
    (tmp_path / "trust.pass").write_text(PASSWORD + "\n")
    config = tmp_path / "agent.toml"
    config.write_text(f'ca_url = "{ca.url}"\nroot = "{ca.root}"\ntrust_formats = "pem,p12"\n'
                      f'trust_password_file = "trust.pass"\n\n[[certificate]]\nname = "orders.internal"\n'
                      f'token_file = "{token}"\nout = "{out}"\n')
    done = subprocess.run([sys.executable, "-m", "trustyard", "agent", "--config", str(config), "--once"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (out / "truststore.p12").exists() and not (out / "truststore.jks").exists()
    assert "1 entry" in keytool_list(out / "truststore.p12", "PKCS12", PASSWORD)
    config.write_text(config.read_text().replace('trust_formats = "pem,p12"', 'trust_formats = "pem,pkcs7"'))
    refused = subprocess.run([sys.executable, "-m", "trustyard", "agent", "--config", str(config), "--once"],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "unknown format(s) 'pkcs7'" in refused.stderr
