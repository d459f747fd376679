"""A client is set up once (`roots --save`), and a wrong root, a missing
file or a dead CA each get an error a person can act on, through the real CLI and a real
`trustyard serve` on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from trustyard.testing import free_port

from .support import PASSWORD, start_server


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "TRUSTYARD_PASSWORD": PASSWORD.decode(), **(env or {})}
    for name in ("TRUSTYARD_CA_URL", "TRUSTYARD_ROOT", "TRUSTYARD_HOME", "TRUSTYARD_TOKEN"):
        environment.pop(name, None) if name not in (env or {}) else None
    return subprocess.run([sys.executable, "-m", "trustyard", *args], capture_output=True, text=True,
                          env=environment, timeout=120)


def fingerprint(path: Path) -> str:
    return x509.load_pem_x509_certificate(path.read_bytes()).fingerprint(hashes.SHA256()).hex()


@pytest.fixture(scope="module")
def cas(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    base = tmp_path_factory.mktemp("cas")
    for name in ("a", "b"):
        result = run("init", "--home", str(base / name), "--allow", "*.internal")
        assert result.returncode == 0, result.stderr
    server = start_server(base / "a")
    yield server, base / "b"
    server.stop()


def test_roots_save_sets_up_issue_renew_list_revoke_and_agent(cas, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, _ = cas
    env = {"TRUSTYARD_CONFIG_DIR": str(tmp_path / "conf")}
    root_fp = fingerprint(server.root)
    saved = run("roots", "--ca-url", server.url, "--fingerprint", root_fp, "--save", env=env)
    assert saved.returncode == 0, saved.stderr
    conf = tmp_path / "conf"
    assert f"The root certificate has been saved in {conf / 'root.crt'}" in saved.stdout
    assert root_fp in saved.stdout
    assert f"The client configuration has been saved in {conf / 'client.toml'} (ca_url {server.url})" \
        in saved.stdout
    assert "issue, renew, revoke, list and agent use them when --ca-url and --root are not given" in saved.stdout
    assert (conf / "root.crt").read_text() == (server.home / "ca/roots.pem").read_text()
    assert f'ca_url = "{server.url}"' in (conf / "client.toml").read_text()

    token = run("token", "--home", str(server.home), "web.internal", "--json", env=env)
    assert token.returncode == 0, token.stderr
    out = tmp_path / "web"
    issued = run("issue", "web.internal", "--token", json.loads(token.stdout)["token"], "--out", str(out), env=env)
    assert issued.returncode == 0, issued.stderr
    assert "serial" in issued.stdout and (out / "tls.crt").exists()

    renewed = run("renew", "--cert", str(out / "tls.crt"), "--key", str(out / "tls.key"), env=env)
    assert renewed.returncode == 0, renewed.stderr

    admin = str(server.home / "admin.token")
    listed = run("list", "--admin-token-file", admin, env=env)
    assert listed.returncode == 0, listed.stderr
    serial = x509.load_pem_x509_certificate((out / "tls.crt").read_bytes()).serial_number
    assert format(serial, "x") in listed.stdout

    revoked = run("revoke", "--serial", format(serial, "x"), "--admin-token-file", admin, env=env)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in revoked.stdout

    token_file = tmp_path / "agent.token"
    minted = run("token", "--home", str(server.home), "agent.internal", "--json", env=env)
    token_file.write_text(json.loads(minted.stdout)["token"])
    agent_out = tmp_path / "agent"
    agent = run("agent", "--name", "agent.internal", "--token-file", str(token_file), "--out", str(agent_out),
                "--once", env=env)
    assert agent.returncode == 0, agent.stderr
    assert (agent_out / "tls.crt").exists()

    # explicit flags win over the saved config: another CA's root given as --root is used (and fails)
    with_flag = run("list", "--admin-token-file", admin, "--root", str(cas[1] / "ca/root.crt"), env=env)
    assert with_flag.returncode == 1 and "is not trusted by the root" in with_flag.stderr


def test_without_setup_the_error_says_how_to_set_up(tmp_path: Path) -> None:
    result = run("issue", "web.internal", "--token", "t", "--ca-url", "https://127.0.0.1:1",
                 env={"TRUSTYARD_CONFIG_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert "trustyard roots --ca-url URL --fingerprint SHA256 --save" in result.stderr


def test_a_root_that_does_not_trust_the_ca_is_a_trust_error(cas, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, other_home = cas
    other_root = other_home / "ca/root.crt"
    result = run("issue", "web.internal", "--token", "t", "--ca-url", server.url, "--root", str(other_root),
                 "--out", str(tmp_path / "x"), env={"TRUSTYARD_CONFIG_DIR": str(tmp_path)})
    assert result.returncode == 1
    err = result.stderr
    served_issuer = x509.load_pem_x509_certificate((server.home / "server/tls.crt").read_bytes()).issuer
    other = x509.load_pem_x509_certificate(other_root.read_bytes())
    assert err.startswith(f"trustyard: error [untrustedServer]: the CA at {server.url} is not trusted by the root "
                          f"{other_root}"), err
    assert f"issued by {served_issuer.rfc4514_string()}" in err
    assert f"{other.subject.rfc4514_string()} (sha256 {fingerprint(other_root)})" in err
    assert f"trustyard roots --ca-url {server.url} --fingerprint SHA256 --save" in err
    assert "caUnavailable" not in err and "_ssl.c" not in err and "SSL:" not in err
    assert not (tmp_path / "x").exists()


def test_network_and_local_file_errors_carry_no_internals(cas, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, _ = cas
    env = {"TRUSTYARD_CONFIG_DIR": str(tmp_path)}
    refused = run("issue", "web.internal", "--token", "t", "--ca-url", f"https://127.0.0.1:{free_port()}",
                  "--root", str(server.root), env=env)
    assert refused.returncode == 1
    assert "cannot reach the CA" in refused.stderr and "connection refused" in refused.stderr
    assert "Errno" not in refused.stderr and "_ssl.c" not in refused.stderr

    missing = run("issue", "web.internal", "--token", "t", "--ca-url", server.url, "--root",
                  str(tmp_path / "nope.crt"), env=env)
    assert missing.returncode == 2
    assert missing.stderr.startswith(f"trustyard: error: root {tmp_path / 'nope.crt'}: no such file")

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    bad_root = run("issue", "web.internal", "--token", "t", "--ca-url", server.url, "--root", str(garbage), env=env)
    assert bad_root.returncode == 2 and "no PEM certificate in it" in bad_root.stderr
    assert "_ssl.c" not in bad_root.stderr and "Traceback" not in bad_root.stderr

    cert = tmp_path / "tls.crt"
    cert.write_bytes((server.home / "server/tls.crt").read_bytes())
    bad_key = run("renew", "--cert", str(cert), "--key", str(garbage), "--ca-url", server.url, "--root",
                  str(server.root), env=env)
    assert bad_key.returncode == 2
    assert bad_key.stderr.strip() == f"trustyard: error: cannot load the key {garbage}: no PEM private key in it"
    bad_cert = run("renew", "--cert", str(garbage), "--key", str(garbage), env=env)
    assert bad_cert.returncode == 2 and "[" not in bad_cert.stderr
    assert f"cannot load the certificate {garbage}: no PEM certificate in it" in bad_cert.stderr


def test_agent_config_file_falls_back_to_the_saved_client_config(tmp_path: Path) -> None:
    """flags > the agent's --config file > `roots --save`, for ca_url and root."""
    from trustyard.agent.config import load_config_file

    saved = {"ca_url": "https://saved.internal:8443", "root": str(tmp_path / "conf/root.crt")}
    bare = tmp_path / "bare.toml"
    bare.write_text('[[certificate]]\nname = "a.internal"\nout = "a"\n')
    config = load_config_file(bare, {"ca_url": None, "root": None}, saved)
    assert (config.ca_url, config.root) == (saved["ca_url"], tmp_path / "conf/root.crt")
    own = tmp_path / "own.toml"
    own.write_text('ca_url = "https://file.internal"\nroot = "r.crt"\n' + bare.read_text())
    config = load_config_file(own, {"ca_url": None, "root": None}, saved)
    assert (config.ca_url, config.root) == ("https://file.internal", tmp_path / "r.crt")
    config = load_config_file(own, {"ca_url": "https://flag.internal", "root": None}, saved)
    assert config.ca_url == "https://flag.internal"
