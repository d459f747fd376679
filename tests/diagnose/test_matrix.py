"""The scenario matrix: doctor names each failure, real clients fail the same way, and
explain classifies their messages as doctor did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trustyard.cli import main
from trustyard.diagnose.doctor import diagnose
from trustyard.diagnose.explain import explain
from trustyard.testing import need

from . import clients
from .scenarios import MATRIX, Live

# OpenSSL's X509_check_host falls back to the CN when a certificate has no SAN, so curl,
# Node, Java and OpenSSL-based clients accept a CN-only certificate; Go, rustls and
# browsers do not, and neither does Python with hostname_checks_common_name=False.
ACCEPTS_CN_ONLY = {"curl", "node", "openssl", "java"}


def _doctor(live: Live):  # type: ignore[no-untyped-def]
    cert, key = live.client_cert or (None, None)
    return diagnose(live.target, ca_files=[str(live.ca_file)], name=live.host_name,
                    cert_file=str(cert) if cert else None, key_file=str(key) if key else None, timeout=5)


def _same_as_doctor(text: str, live: Live) -> None:
    found = explain(text)
    assert found.layer == live.layer, (text, found)
    assert live.code == found.code or live.code in found.also, (text, found)


@pytest.mark.parametrize("scenario", sorted(MATRIX))
def test_doctor_names_layer_and_code(live_servers: dict[str, Live], scenario: str) -> None:
    live = live_servers[scenario]
    verdict = _doctor(live)
    assert not verdict.ok
    assert (verdict.layer, verdict.code) == (live.layer, live.code), verdict.summary
    assert verdict.inspect and verdict.fix
    if live.code not in ("not_tls",):
        assert verdict.chain, "the chain actually served is shown even when verification fails"
        assert {"subject", "issuer", "sans", "not_before", "not_after"} <= set(verdict.chain[0])


def test_doctor_names_the_needed_intermediate_and_expired_chain_member(live_servers: dict[str, Live]) -> None:
    missing = _doctor(live_servers["missing_intermediate"])
    assert missing.evidence["needed_issuer"] == "CN=Scenario Intermediate"
    expired = _doctor(live_servers["expired_intermediate"])
    assert expired.evidence["index"] == 1 and expired.evidence["certificate"] == "CN=Old Intermediate"


def test_doctor_ok_only_when_a_client_would_succeed(live_servers: dict[str, Live]) -> None:
    live = live_servers["healthy"]
    verdict = _doctor(live)
    assert verdict.ok and verdict.layer is None and verdict.code is None
    assert clients.python(live) == ""


@pytest.mark.parametrize("scenario", sorted(MATRIX))
def test_curl_and_python_fail_as_doctor_says(live_servers: dict[str, Live], scenario: str) -> None:
    need("curl")
    live = live_servers[scenario]
    for name, text in (("curl", clients.curl(live)), ("python", clients.python(live))):
        if scenario == "cn_only" and name in ACCEPTS_CN_ONLY:
            assert text == "", f"{name} accepts CN-only certificates: {text}"
            continue
        assert text, f"{name} should fail on {scenario}"
        _same_as_doctor(text, live)


@pytest.mark.slow
@pytest.mark.parametrize("client", ["node", "openssl"])
@pytest.mark.parametrize("scenario", sorted(MATRIX))
def test_other_clients_classified_identically(live_servers: dict[str, Live], scenario: str, client: str) -> None:
    need(client)
    live = live_servers[scenario]
    text = getattr(clients, client)(live)
    if scenario == "cn_only":
        assert text == ""
        return
    assert text, f"{client} should fail on {scenario}"
    _same_as_doctor(text, live)


@pytest.mark.slow
def test_java_classified_identically(live_servers: dict[str, Live], tmp_path: Path) -> None:
    need("javac")
    classes = clients.compile_java(tmp_path)
    for scenario, live in sorted(live_servers.items()):
        if scenario in ("healthy", "client_cert_wrong_ca"):  # the Java probe presents no client certificate
            continue
        text = clients.java(classes, live)
        if scenario == "cn_only":
            assert text == "", text
            continue
        _same_as_doctor(text, live)


def test_doctor_cli_json_and_exit_status(live_servers: dict[str, Live], capsys: pytest.CaptureFixture[str]) -> None:
    live = live_servers["expired_leaf"]
    rc = main(["doctor", live.target, "--ca", str(live.ca_file), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert set(doc) >= {"target", "ok", "layer", "code", "summary", "evidence", "inspect", "chain"}
    assert (doc["ok"], doc["layer"], doc["code"]) == (False, "validity", "expired")
    ok = live_servers["healthy"]
    assert main(["doctor", f"https://localhost:{ok.port}/", "--ca", str(ok.ca_file)]) == 0
    assert "OK" in capsys.readouterr().out
