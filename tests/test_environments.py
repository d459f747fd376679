"""Environments with their own roots: init names the CA after its environment, and check,
doctor and scan say wrong_environment, naming both, for a chain leading to another
environment's listed root; an unlisted root stays the generic finding."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w

from trustyard.ca.config import load_config
from trustyard.ca.home import InitOptions, init_home
from trustyard.errors import ConfigError
from trustyard.testing import TestCA, free_port, need
from trustyard.x509.summary import fingerprint_sha256

from .agent.helpers import wait_for
from .support import PASSWORD, start_server

TLS_SERVER = Path(__file__).parent / "agent" / "tls_server.py"


def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``trustyard`` as a process: (exit status, stdout, stderr)."""
    import os

    done = subprocess.run([sys.executable, "-m", "trustyard", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "TRUSTYARD_PASSWORD": PASSWORD.decode(), **(env or {})})
    return done.returncode, done.stdout, done.stderr


def subject(path: Path) -> str:
    openssl = need("openssl", package="openssl")
    return subprocess.run([openssl, "x509", "-in", str(path), "-noout", "-subject", "-nameopt", "RFC2253"],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_init_names_the_root_and_intermediate_after_the_environment_and_records_it(tmp_path: Path) -> None:
    home = tmp_path / "staging"
    code, out, err = run_cli("init", "--home", str(home), "--environment", "staging", "--json")
    assert code == 0, err
    assert json.loads(out)["environment"] == "staging"
    assert subject(home / "ca" / "root.crt") == "subject=CN=trustyard staging Root CA,O=trustyard"
    assert subject(home / "ca" / "intermediate.crt") == "subject=CN=trustyard staging Intermediate CA,O=trustyard"
    assert tomllib.loads((home / "trustyard.toml").read_text())["ca"]["environment"] == "staging"
    plain = tmp_path / "plain"
    assert run_cli("init", "--home", str(plain))[0] == 0
    assert subject(plain / "ca" / "root.crt") == "subject=CN=trustyard Root CA,O=trustyard"
    assert "environment" not in tomllib.loads((plain / "trustyard.toml").read_text())["ca"]


@pytest.mark.parametrize("bad", ["Staging", "stag_ing", "-staging", "a" * 33, "prod env"])
def test_init_refuses_an_environment_name_that_is_not_a_dns_label_and_creates_nothing(tmp_path: Path,
                                                                                         bad: str) -> None:
    home = tmp_path / "ca"
    code, _, err = run_cli("init", "--home", str(home), "--environment", bad)
    assert code != 0 and "environment" in err and "DNS label" in err
    assert not home.exists()


@pytest.fixture
def pkis() -> dict[str, TestCA]:
    return {"production": TestCA("production"), "staging": TestCA("staging"), "other": TestCA("other")}


def environments_file(tmp_path: Path, pkis: dict[str, TestCA], *, as_pem: bool = False) -> Path:
    """This machine is production; staging's root is listed (by fingerprint, or as a PEM file)."""
    staging_root = tmp_path / "staging-root.crt"
    staging_root.write_bytes(pkis["staging"].pem())
    entry = "staging-root.crt" if as_pem else f"sha256:{fingerprint_sha256(pkis['staging'].root)}"
    path = tmp_path / "environments.toml"
    path.write_text(f'environment = "production"\n[environments]\nstaging = ["{entry}"]\n')
    return path


def test_check_reports_wrong_environment_naming_both(tmp_path: Path, pkis: dict[str, TestCA]) -> None:
    staged = pkis["staging"].issue("orders.internal")
    # served as leaf + intermediate (the agent's tls.crt): found through the listed root's PEM
    leaf_dir = staged.write_agent_dir(tmp_path / "tls", bundle=pkis["production"].pem())
    code, out, err = run_cli("check", str(leaf_dir), "--environments", str(environments_file(tmp_path, pkis,
                                                                                              as_pem=True)))
    assert code == 11, out + err
    assert "wrong_environment" in err and "'staging'" in err and "'production'" in err
    # a full chain (leaf, intermediate, root) is found from the root's fingerprint alone
    (leaf_dir / "tls.crt").write_bytes(staged.chain_pem() + pkis["staging"].pem())
    code, out, err = run_cli("check", str(leaf_dir), "--environments", str(environments_file(tmp_path, pkis)),
                             "--json")
    assert code == 11
    [failure] = json.loads(out)["failures"]
    assert failure["detail"].startswith("wrong_environment: ") and "'staging'" in failure["detail"]


def test_check_keeps_the_generic_finding_for_a_root_no_environment_lists(tmp_path: Path,
                                                                        pkis: dict[str, TestCA]) -> None:
    stranger = pkis["other"].issue("orders.internal")
    leaf_dir = stranger.write_agent_dir(tmp_path / "tls", bundle=pkis["production"].pem())
    (leaf_dir / "tls.crt").write_bytes(stranger.chain_pem() + pkis["other"].pem())
    code, out, err = run_cli("check", str(leaf_dir), "--environments", str(environments_file(tmp_path, pkis)))
    assert code == 11
    assert "wrong_environment" not in out + err
    assert "unknown_issuer" in err or "root_in_chain_untrusted" in err


def test_check_reads_the_environments_from_client_toml(tmp_path: Path, pkis: dict[str, TestCA],
                                                       ) -> None:
    staged = pkis["staging"].issue("orders.internal")
    leaf_dir = staged.write_agent_dir(tmp_path / "tls", bundle=pkis["production"].pem())
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "client.toml").write_text(
        environments_file(tmp_path, pkis, as_pem=True).read_text().replace("staging-root.crt",
                                                                         str(tmp_path / "staging-root.crt")))
    code, _, err = run_cli("check", str(leaf_dir), env={"TRUSTYARD_CONFIG_DIR": str(config_dir)})
    assert code == 11 and "wrong_environment" in err and "'production'" in err


def serve_dir(directory: Path, tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    port, pid_file = free_port(), tmp_path / f"server-{directory.name}.pid"
    process = subprocess.Popen([sys.executable, str(TLS_SERVER), str(directory), str(port), str(pid_file)])
    wait_for(pid_file.exists, what="the TLS server")
    return process, port


def test_doctor_against_a_real_tls_server_reports_wrong_environment(tmp_path: Path, pkis: dict[str, TestCA]) -> None:
    staged = pkis["staging"].issue("localhost")
    staged_dir = staged.write_agent_dir(tmp_path / "staged")
    stranger_dir = pkis["other"].issue("localhost").write_agent_dir(tmp_path / "stranger")
    bundle = tmp_path / "production.crt"
    bundle.write_bytes(pkis["production"].pem())
    listed = environments_file(tmp_path, pkis, as_pem=True)
    (staging_server, port), (other_server, other_port) = serve_dir(staged_dir, tmp_path), serve_dir(stranger_dir,
                                                                                                    tmp_path)
    try:
        code, out, err = run_cli("doctor", f"localhost:{port}", "--ca", str(bundle), "--environments", str(listed),
                                 "--json")
        assert out, err
        verdict = json.loads(out)
        assert code == 1 and (verdict["layer"], verdict["code"]) == ("trust", "wrong_environment")
        assert verdict["evidence"]["environment"] == "production"
        assert verdict["evidence"]["chain_environment"] == "staging"
        assert "this environment's CA (production)" in verdict["fix"]
        code, out, _ = run_cli("doctor", f"localhost:{other_port}", "--ca", str(bundle), "--environments",
                               str(listed), "--json")
        assert code == 1 and json.loads(out)["code"] == "unknown_issuer"
    finally:
        for server in (staging_server, other_server):
            server.terminate()
            server.wait(10)


def test_scan_reports_wrong_environment_with_a_fix(tmp_path: Path, pkis: dict[str, TestCA]) -> None:
    tree = tmp_path / "srv"
    pkis["staging"].issue("orders.internal").write_agent_dir(tree / "orders", bundle=pkis["production"].pem())
    pkis["other"].issue("billing.internal").write_agent_dir(tree / "billing", bundle=pkis["production"].pem())
    bundle = tmp_path / "production.crt"
    bundle.write_bytes(pkis["production"].pem())
    code, out, err = run_cli("scan", str(tree), "--ca", str(bundle), "--environments",
                             str(environments_file(tmp_path, pkis, as_pem=True)), "--json")
    assert code == 1, err
    findings = {(f["code"], Path(f["locations"][0]).parent.name): f for f in json.loads(out)["findings"]}
    wrong = findings[("wrong_environment", "orders")]
    assert "'staging'" in wrong["detail"] and "'production'" in wrong["detail"]
    assert "this environment's CA" in wrong["fix"]
    assert ("untrusted_chain", "billing") in findings and ("wrong_environment", "billing") not in findings


def test_a_malformed_environments_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "env.toml"
    bad.write_text('[environments]\nstaging = ["sha256:not-hex"]\n')
    code, _, err = run_cli("check", str(tmp_path), "--environments", str(bad))
    assert code != 0 and "neither a sha256: fingerprint nor a readable PEM file" in err


def test_roots_save_records_the_cas_environment_and_keeps_the_other_environments(tmp_path: Path) -> None:
    home = tmp_path / "staging"
    created = init_home(home, PASSWORD, InitOptions(environment="staging"))
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    listed = f"sha256:{'ab' * 32}"
    (config_dir / "client.toml").write_text(f'ca_url = "https://old"\nroot = "root.crt"\n[environments]\n'
                                            f'production = ["{listed}"]\n')
    server = start_server(home)
    try:
        code, out, err = run_cli("roots", "--ca-url", server.url, "--fingerprint", created.root_fingerprint,
                                 "--save", env={"TRUSTYARD_CONFIG_DIR": str(config_dir)})
    finally:
        server.stop()
    assert code == 0, err
    assert "The CA's environment is staging" in out
    saved = tomllib.loads((config_dir / "client.toml").read_text())
    assert saved["environment"] == "staging" and saved["environments"] == {"production": [listed]}
    assert saved["ca_url"] == server.url


def test_the_ca_homes_environments_are_read_and_checked(tmp_path: Path, pkis: dict[str, TestCA]) -> None:
    home = tmp_path / "production"
    init_home(home, PASSWORD, InitOptions(environment="production"))
    (tmp_path / "staging-root.crt").write_bytes(pkis["staging"].pem())
    doc = tomllib.loads((home / "trustyard.toml").read_text())
    (home / "trustyard.toml").write_text(tomli_w.dumps({**doc, "environments": {"staging": ["../staging-root.crt"]}}))
    config = load_config(home)
    assert config.environment == "production" and config.environments_view().current == "production"
    leaf_dir = pkis["staging"].issue("orders.internal").write_agent_dir(tmp_path / "tls",
                                                                        bundle=pkis["production"].pem())
    code, _, err = run_cli("check", str(leaf_dir), env={"TRUSTYARD_HOME": str(home),
                                                        "TRUSTYARD_CONFIG_DIR": str(tmp_path / "none")})
    assert code == 11 and "wrong_environment" in err and "'production'" in err and "'staging'" in err
    (home / "trustyard.toml").write_text(tomli_w.dumps({**doc, "environments": {"Staging": ["sha256:00"]}}))
    with pytest.raises(ConfigError, match="environment name"):
        load_config(home)
