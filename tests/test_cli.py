"""Items 1, 2, 3 and 9 through the real command line and a real server process."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from trustyard.cli import main

from .support import PASSWORD, new_csr, start_server


def run(*args: str, env: dict[str, str] | None = None, input_: str | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "TRUSTYARD_PASSWORD": PASSWORD.decode(), **(env or {})}
    return subprocess.run([sys.executable, "-m", "trustyard", *args], capture_output=True, text=True,
                          env=environment, input=input_, timeout=120)


def jrun(*args: str, **kw) -> dict:  # type: ignore[no-untyped-def]
    result = run(*args, "--json", **kw)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("live") / "ca"
    doc = jrun("init", "--home", str(home), "--allow", "*.internal", "--allow", "10.0.0.0/8", "--dns", "ca.internal")
    server = start_server(home, workers=2)
    yield server, doc
    server.stop()


# -- init -----------------------------------------------------------------------------------------

def test_init_creates_everything_encrypted_and_private(tmp_path: Path) -> None:
    home = tmp_path / "ca"
    result = run("init", "--home", str(home), "--dns", "ca.prod.internal")
    assert result.returncode == 0, result.stderr
    root = x509.load_pem_x509_certificate((home / "ca/root.crt").read_bytes())
    fingerprint = root.fingerprint(__import__("cryptography.hazmat.primitives.hashes", fromlist=["x"]).SHA256()).hex()
    assert fingerprint in result.stdout
    assert "*.internal, spiffe://trustyard.internal/*" in result.stdout and "the default" in result.stdout
    for key in ("ca/root.key", "ca/intermediate.key", "server/tls.key", "provisioners/default.key", "admin.token",
                "trustyard.toml", "trustyard.db"):
        assert stat.S_IMODE((home / key).stat().st_mode) == 0o600, key
    for key in ("ca/root.key", "ca/intermediate.key", "provisioners/default.key"):
        data = (home / key).read_bytes()
        assert b"ENCRYPTED PRIVATE KEY" in data
        with pytest.raises(TypeError):
            serialization.load_pem_private_key(data, password=None)
        serialization.load_pem_private_key(data, password=PASSWORD)
    # root: self-signed, ~10 years; intermediate: ~1 year, signed by root, name-constrained
    inter = x509.load_pem_x509_certificate((home / "ca/intermediate.crt").read_bytes())
    assert root.issuer == root.subject
    assert 3649 <= (root.not_valid_after_utc - root.not_valid_before_utc).days <= 3650
    assert 364 <= (inter.not_valid_after_utc - inter.not_valid_before_utc).days <= 365
    inter.verify_directly_issued_by(root)
    constraints = inter.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical and x509.DNSName("internal") in constraints.value.permitted_subtrees
    # the server certificate covers localhost, 127.0.0.1, ::1 and --dns
    tls = x509.load_pem_x509_certificate((home / "server/tls.crt").read_bytes())
    sans = [str(v) for v in tls.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            .get_values_for_type(x509.DNSName)] + [str(v) for v in tls.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)]
    assert {"localhost", "127.0.0.1", "::1", "ca.prod.internal"} <= set(sans)
    # and refuses to overwrite
    again = run("init", "--home", str(home))
    assert again.returncode == 1 and "already exists" in again.stderr
    assert (home / "ca/root.crt").read_bytes() == root.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("key_type", ["ec-p384", "ed25519", "rsa-2048"])
def test_init_key_types(tmp_path: Path, key_type: str) -> None:
    doc = jrun("init", "--home", str(tmp_path / "ca"), "--key-type", key_type, "--allow", "spiffe://prod.internal/*")
    inter = x509.load_pem_x509_certificate((tmp_path / "ca/ca/intermediate.crt").read_bytes())
    from trustyard.x509.keys import key_type_of

    assert key_type_of(inter.public_key()).value == key_type  # type: ignore[union-attr,arg-type]
    assert doc["allow"] == ["spiffe://prod.internal/*"] and doc["allow_is_default"] is False


def test_init_password_sources(tmp_path: Path) -> None:
    no_password = run("init", "--home", str(tmp_path / "a"), env={"TRUSTYARD_PASSWORD": ""})
    assert no_password.returncode == 2 and "--password-file" in no_password.stderr
    assert not (tmp_path / "a" / "trustyard.toml").exists()
    pw = tmp_path / "pw"
    pw.write_text("from-a-file\n")
    assert run("init", "--home", str(tmp_path / "b"), "--password-file", str(pw), env={"TRUSTYARD_PASSWORD": ""}).returncode == 0
    serialization.load_pem_private_key((tmp_path / "b/ca/intermediate.key").read_bytes(), b"from-a-file")
    insecure = run("init", "--home", str(tmp_path / "c"), "--insecure-no-password", env={"TRUSTYARD_PASSWORD": ""})
    assert insecure.returncode == 0 and "NOT encrypted" in insecure.stdout
    assert stat.S_IMODE((tmp_path / "c/ca/intermediate.key").stat().st_mode) == 0o600


def test_home_from_environment(tmp_path: Path) -> None:
    result = run("init", env={"TRUSTYARD_HOME": str(tmp_path / "envhome")})
    assert result.returncode == 0 and (tmp_path / "envhome" / "trustyard.toml").exists()


def test_bad_allow_pattern_changes_nothing(tmp_path: Path) -> None:
    result = run("init", "--home", str(tmp_path / "ca"), "--allow", "spiffe://a/*/b")
    assert result.returncode == 2 and "invalid" in result.stderr
    assert not (tmp_path / "ca").exists()


def test_offline_root_keeps_issuing(tmp_path: Path) -> None:
    home = tmp_path / "ca"
    assert run("init", "--home", str(home)).returncode == 0
    offline = tmp_path / "vault"
    offline.mkdir()
    shutil.move(str(home / "ca/root.key"), offline / "root.key")
    server = start_server(home, workers=1)
    try:
        token = run("token", "--home", str(home), "svc.internal").stdout.strip()
        out = tmp_path / "svc"
        doc = jrun("issue", "svc.internal", "--token", token, "--ca-url", server.url, "--root",
                   str(home / "ca/root.crt"), "--out", str(out))
        assert doc["serial"]
        assert (out / "tls.crt").exists()
    finally:
        server.stop()


def test_serve_defaults_to_one_worker_per_core(tmp_path: Path) -> None:
    home = tmp_path / "ca"
    assert run("init", "--home", str(home)).returncode == 0
    import httpx

    from trustyard.testing import free_port

    from .support import str_ctx

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "trustyard", "serve", "--home", str(home), "--listen",
                                f"127.0.0.1:{port}"], env={**os.environ, "TRUSTYARD_PASSWORD": PASSWORD.decode()},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        health = None
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=str_ctx(home / "ca/root.crt"))
                if health.status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert health is not None and "server" not in health.headers  # the CA does not advertise its software
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        workers = [c for c in children if b"multiprocessing" in Path(f"/proc/{c}/cmdline").read_bytes()
                   and b"resource_tracker" not in Path(f"/proc/{c}/cmdline").read_bytes()]
        assert len(workers) == os.cpu_count()
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err  # SIGTERM: clean shutdown
    assert b"with %d worker(s)" % os.cpu_count() in err and b"serving the existing CA" in err


def test_serve_with_wrong_password_says_so(tmp_path: Path) -> None:
    home = tmp_path / "ca"
    assert run("init", "--home", str(home)).returncode == 0
    result = run("serve", "--home", str(home), env={"TRUSTYARD_PASSWORD": "wrong"})
    assert result.returncode == 2 and "cannot load key" in result.stderr


# -- client commands against a real server ----------------------------------------------------

def test_roots_pinned_by_fingerprint(live, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, init_doc = live
    out = tmp_path / "bundle.pem"
    doc = jrun("roots", "--ca-url", server.url, "--fingerprint", init_doc["root_fingerprint_sha256"], "--out", str(out))
    assert doc["roots"] == [init_doc["root_fingerprint_sha256"]]
    assert out.read_text() == (server.home / "ca/roots.pem").read_text()
    wrong = run("roots", "--ca-url", server.url, "--fingerprint", "00" * 32, "--out", str(tmp_path / "x.pem"))
    assert wrong.returncode == 1 and "fingerprint" in wrong.stderr and not (tmp_path / "x.pem").exists()


def test_issue_renew_revoke_list_inspect(live, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, _ = live
    root = str(server.home / "ca/root.crt")
    token = jrun("token", "--home", str(server.home), "web.internal", "--san", "web.internal", "--san", "10.1.2.3")["token"]
    out = tmp_path / "web"
    issued = jrun("issue", "web.internal", "--san", "web.internal", "--san", "10.1.2.3", "--token", token,
                  "--ca-url", server.url, "--root", root, "--out", str(out), "--key-type", "ec-p384")
    assert stat.S_IMODE((out / "tls.key").stat().st_mode) == 0o600
    chain = x509.load_pem_x509_certificates((out / "tls.crt").read_bytes())
    assert len(chain) == 2 and format(chain[0].serial_number, "x") == issued["serial"]
    assert (out / "ca.crt").read_text() == (server.home / "ca/roots.pem").read_text()
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(out / "ca.crt"), "-untrusted", str(out / "tls.crt"),
                             str(out / "tls.crt")], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    # the key never left: the CA ledger has no key material, only the certificate
    assert b"PRIVATE" not in (server.home / "trustyard.db").read_bytes()

    old_key = (out / "tls.key").read_bytes()
    renewed = jrun("renew", "--cert", str(out / "tls.crt"), "--key", str(out / "tls.key"), "--ca-url", server.url,
                   "--root", root)
    assert renewed["serial"] != issued["serial"] and (out / "tls.key").read_bytes() != old_key

    inspected = jrun("inspect", str(out / "tls.crt"))
    leaf = inspected["certificates"][0]
    assert leaf["serial"] == renewed["serial"] and leaf["sans"] == ["web.internal", "10.1.2.3"]
    assert leaf["key_type"] == "ec-p384" and inspected["chain_order"] == ["ok"]
    assert 0 < leaf["seconds_left"] <= 86400

    listed = jrun("list", "--ca-url", server.url, "--root", root, "--home", str(server.home))
    serials = {c["serial"]: c["status"] for c in listed["certificates"]}
    assert serials[issued["serial"]] == "issued" and serials[renewed["serial"]] == "issued"

    revoked = jrun("revoke", "--cert", str(out / "tls.crt"), "--key", str(out / "tls.key"), "--reason",
                   "keyCompromise", "--ca-url", server.url, "--root", root)
    assert revoked["status"] == "revoked"
    again = run("renew", "--cert", str(out / "tls.crt"), "--key", str(out / "tls.key"), "--ca-url", server.url,
                "--root", root)
    assert again.returncode == 1 and "revoked" in again.stderr
    admin_revoke = jrun("revoke", "--serial", issued["serial"], "--ca-url", server.url, "--root", root,
                        "--home", str(server.home))
    assert admin_revoke["status"] == "revoked"


def test_inspect_live_endpoint_shows_served_chain(live) -> None:  # type: ignore[no-untyped-def]
    server, _init_doc = live
    doc = jrun("inspect", f"127.0.0.1:{server.port}")
    leaf = doc["certificates"][0]
    assert "localhost" in leaf["sans"] and "ca.internal" in leaf["sans"]
    text = run("inspect", f"127.0.0.1:{server.port}").stdout
    assert "time left" in text and "sha256" in text


def test_forwarded_headers_are_not_trusted(live) -> None:  # type: ignore[no-untyped-def]
    """No proxy is configured, so a local process cannot make the CA believe it was reached over
    plain HTTP or from another address (the ACME URLs clients sign, the audit's actor)."""
    server, _ = live
    forwarded = {"X-Forwarded-Proto": "http", "X-Forwarded-For": "203.0.113.9"}
    _key, csr = new_csr("proxied.internal")
    with server.client() as c:
        directory = c.get("/acme/acme/directory", headers=forwarded).json()
        refused = c.post("/v1/sign", json={"csr": csr.decode(), "token": "not-a-token"}, headers=forwarded)
    assert refused.status_code in (400, 401, 403), refused.text
    denials = [r for r in jrun("audit", "--home", str(server.home))["refusals"]
               if r["reason"] == "certificate.issue:badToken"]
    assert denials and denials[-1]["source"] == "127.0.0.1"  # the address the request came from
    assert directory["newOrder"].startswith(f"https://127.0.0.1:{server.port}/acme/acme/")


def test_local_issuance_through_the_same_authority(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "ca"
    assert run("init", "--home", str(home)).returncode == 0
    os.environ["TRUSTYARD_PASSWORD"] = PASSWORD.decode()
    try:
        assert main(["issue", "batch.internal", "--home", str(home), "--out", str(tmp_path / "o"), "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert main(["audit", "--home", str(home), "--json"]) == 0
        actions = [e["action"] for e in json.loads(capsys.readouterr().out)["entries"]]
        assert actions == ["token.mint", "certificate.issue"]
        assert main(["list", "--home", str(home), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["certificates"][0]["serial"] == doc["serial"]
        # a name outside the policy is refused locally exactly as remotely
        assert main(["issue", "x.example.com", "--home", str(home), "--out", str(tmp_path / "p")]) == 1
        assert "not allowed" in capsys.readouterr().err and not (tmp_path / "p").exists()
        # the provisioner is chosen with --provisioner; one without a token key cannot mint
        assert main(["issue", "y.internal", "--home", str(home), "--provisioner", "acme", "--out",
                     str(tmp_path / "q")]) == 1
        assert "no signing key" in capsys.readouterr().err and not (tmp_path / "q").exists()
    finally:
        del os.environ["TRUSTYARD_PASSWORD"]


def test_help_explains_every_command() -> None:
    result = run("--help")
    for command in ("init", "serve", "token", "issue", "renew", "revoke", "list", "inspect", "roots", "audit"):
        assert command in result.stdout
    for command in ("init", "serve", "token", "issue", "renew", "revoke", "list", "inspect", "roots"):
        sub = run(command, "--help")
        assert sub.returncode == 0 and "Usage: trustyard " + command in sub.stdout


def test_metrics_add_up_across_worker_processes(live, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import re

    server, _ = live
    with server.client() as client:
        def issued() -> float:
            text = client.get("/metrics").text
            match = re.search(r'^trustyard_certificates_issued_total\{provisioner="default"\} (\S+)$', text, re.M)
            return float(match.group(1)) if match else 0.0

        before = issued()
        for i in range(6):  # new connections: the two workers both take some
            token = jrun("token", "--home", str(server.home), f"m{i}.internal")["token"]
            jrun("issue", f"m{i}.internal", "--token", token, "--ca-url", server.url, "--root",
                 str(server.home / "ca/root.crt"), "--out", str(tmp_path / str(i)))
        assert issued() == before + 6
