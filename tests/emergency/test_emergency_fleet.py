"""An emergency on a real `trustyard serve` with real `trustyard agent` processes: the running
agent is told renew-now, renews to a new key, and its old certificate is revoked once the
replacement checks in; the agent that is gone is revoked when the grace runs out (by serve's
background job) and shown unreachable."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import tomli_w
from cryptography import x509

from trustyard.ca.emergency import spki_sha256
from trustyard.ca.home import load_authority
from trustyard.x509.summary import serial_text

from ..agent.helpers import AgentProcess, agent_args, leaf, mint, serve, short_ttl_home, wait_for
from ..support import PASSWORD, Server
from .helpers import em


@pytest.fixture
def ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A CA whose leaves name their CRL, which reflects a revocation within a second."""
    monkeypatch.setenv("TRUSTYARD_PASSWORD", PASSWORD.decode())
    home = short_ttl_home(tmp_path / "ca")
    doc = tomllib.loads((home / "trustyard.toml").read_text())
    for prov in doc["provisioners"]:
        prov["crl"] = True
    doc["crl"] = {"delay": "1s"}
    (home / "trustyard.toml").write_text(tomli_w.dumps(doc))
    server = serve(home)
    yield server
    server.stop()


def _crl_serials(ca: Server, cert: x509.Certificate) -> set[int]:
    url = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value[0].full_name[0].value  # type: ignore[index]
    with ca.client() as c:
        response = c.get(urlsplit(url).path)
    if response.status_code != 200:
        return set()
    return {r.serial_number for r in x509.load_der_x509_crl(response.content)}


def _agent(ca: Server, tmp_path: Path, name: str, *extra: str) -> tuple[AgentProcess, Path]:
    token = tmp_path / f"{name}.token"
    token.write_text(mint(ca.home, name, name))
    out = tmp_path / name
    return AgentProcess(agent_args(ca, out, name, token, "--checkin", "1s", "--ttl", "10m", *extra),
                        tmp_path / f"{name}.log"), out


def _record(ca: Server, serial: str) -> Any:
    authority = load_authority(ca.home, PASSWORD)
    try:
        return authority.get(serial)
    finally:
        authority.store.close()


def _status(capsys: Any, ca: Server) -> dict[str, Any]:
    code, out, err = em(capsys, ca.home, "status", "--json")
    assert code == 0, err
    return json.loads(out)


def _states(capsys: Any, ca: Server) -> dict[str, str]:
    return {i["identity"]: i["state"] for i in _status(capsys, ca)["identities"]}


def test_agents_renew_to_new_keys_and_old_certificates_are_revoked(ca: Server, tmp_path: Path, capsys: Any) -> None:
    gone, gone_out = _agent(ca, tmp_path, "gone.internal", "--once")
    assert gone.process.wait(60) == 0, gone.text()
    agent, out = _agent(ca, tmp_path, "pay.internal")
    try:
        wait_for(lambda: (out / "agent-instance").exists(), what="the agent's first certificate")
        before = leaf(out)
        assert before is not None
        old_serial, gone_serial = serial_text(before.serial_number), serial_text(leaf(gone_out).serial_number)  # type: ignore[union-attr]
        code, printed, err = em(capsys, ca.home, "--all", "--reason", "keyCompromise", "--grace", "8s", "--json")
        assert code == 0, err
        started = json.loads(printed)
        assert started["emergency"]["count"] == 2 and started["renew_now"] == 2

        renewed = wait_for(lambda: (c := leaf(out)) is not None and c.serial_number != before.serial_number and c,
                           timeout=20, what="the renewal")
        assert spki_sha256(renewed.public_key()) != spki_sha256(before.public_key())
        assert "the CA asks for a renewal now" in agent.text()
        wait_for(lambda: _states(capsys, ca).get("pay.internal") == "replaced", timeout=15,
                 what="the replacement to be seen")
        old = _record(ca, old_serial)
        assert old.status == "revoked" and old.revocation_reason == "keyCompromise"
        assert _record(ca, serial_text(renewed.serial_number)).status == "issued"
        crl = wait_for(lambda: (got := _crl_serials(ca, before)) and before.serial_number in got and got,
                       timeout=15, what="the old certificate on its CRL")
        assert renewed.serial_number not in crl

        report = wait_for(lambda: (r := _status(capsys, ca))["counts"]["unreachable"] == 1 and r, timeout=20,
                          what="the grace to run out for the agent that is gone")
        assert report["counts"] == {"replaced": 1, "pending": 0, "unreachable": 1}
        by_name = {i["identity"]: i for i in report["identities"]}
        assert by_name["pay.internal"]["replacement"] == serial_text(renewed.serial_number)
        assert by_name["gone.internal"] == {"identity": "gone.internal", "serial": gone_serial,
                                            "state": "unreachable", "replacement": None}
        assert _record(ca, gone_serial).status == "revoked"
        # the agent keeps its new certificate: no renewal loop
        assert leaf(out).serial_number == renewed.serial_number  # type: ignore[union-attr]
    finally:
        agent.stop()


def test_require_bootstrap_refuses_renewal_over_https_and_a_token_bootstraps_the_replacement(
        ca: Server, tmp_path: Path, capsys: Any) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    from trustyard.ca import proofs
    from trustyard.client import make_csr
    from trustyard.x509.keys import load_private_key_pem

    bystander, _ = _agent(ca, tmp_path, "bystander.internal", "--once")
    assert bystander.process.wait(60) == 0, bystander.text()
    agent, out = _agent(ca, tmp_path, "inv.internal")
    try:
        wait_for(lambda: (out / "agent-instance").exists(), what="the agent's first certificate")
    finally:
        agent.stop()
    chain = x509.load_pem_x509_certificates((out / "tls.crt").read_bytes())
    key = load_private_key_pem((out / "tls.key").read_bytes())
    old_serial = serial_text(chain[0].serial_number)
    code, _out, err = em(capsys, ca.home, "--name", "inv.internal", "--reason", "keyCompromise",
                         "--require-bootstrap", "--grace", "1h")
    assert code == 0, err

    from trustyard.x509.keys import KeyType, generate_private_key

    csr = make_csr(generate_private_key(KeyType.EC_P256), [])
    digest = proofs.csr_digest(x509.load_pem_x509_csr(csr).public_bytes(Encoding.DER))
    with ca.client() as c:
        refused = c.post("/v1/renew", json={"csr": csr.decode(), "proof": proofs.make(
            key, chain, proofs.RENEW, csr_sha256=digest)})
    assert refused.status_code == 403 and refused.json()["type"] == "urn:trustyard:error:bootstrapRequired", \
        refused.text
    assert "bootstrap token" in refused.json()["detail"]

    code, _out, err = em(capsys, ca.home, "tokens", "--out", str(tmp_path / "tokens"))
    assert code == 0, err
    fresh_out = tmp_path / "inv-new"
    fresh = AgentProcess(agent_args(ca, fresh_out, "inv.internal", tmp_path / "tokens" / "inv.internal.token",
                                    "--checkin", "1s", "--ttl", "10m"), tmp_path / "inv-new.log")
    try:
        wait_for(lambda: _states(capsys, ca).get("inv.internal") == "replaced", timeout=20,
                 what="the bootstrapped replacement to be seen")
        new = leaf(fresh_out)
        assert new is not None and spki_sha256(new.public_key()) != spki_sha256(chain[0].public_key())
        assert _status(capsys, ca)["identities"][0]["replacement"] == serial_text(new.serial_number)
        old = _record(ca, old_serial)
        assert old.status == "revoked" and old.revocation_reason == "keyCompromise"
    finally:
        fresh.stop()
