"""The fleet the CA can see: real `trustyard serve` and real `trustyard agent` processes check
in; `trustyard fleet` lists them; the CA's answers (refresh-bundle, renew-now, retry-after) are
obeyed; check-ins with certificates the CA does not honour are refused and change nothing."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustyard.agent.seams import FileOutput
from trustyard.ca import proofs
from trustyard.ca.fleet import Fleet
from trustyard.ca.home import load_authority
from trustyard.client import make_csr
from trustyard.store.fleet_store import FleetStore
from trustyard.testing import TestCA
from trustyard.x509.keys import load_private_key_pem
from trustyard.x509.summary import serial_text

from ..agent.helpers import AgentProcess, agent_args, mint, serial_of, serve, short_ttl_home, wait_for
from ..support import PASSWORD, Server, run_cli


@pytest.fixture
def ca(tmp_path: Path) -> Iterator[Server]:
    server = serve(short_ttl_home(tmp_path / "ca"))
    yield server
    server.stop()


def admin(server: Server) -> dict[str, str]:
    return {"Authorization": "Bearer " + (server.home / "admin.token").read_text().strip()}


def parties(server: Server, stale: bool = False) -> list[dict[str, Any]]:
    with server.client() as c:
        response = c.get("/v1/fleet", params={"stale": "1"} if stale else {}, headers=admin(server))
    assert response.status_code == 200, response.text
    return response.json()["parties"]


def party(server: Server, identity: str) -> dict[str, Any] | None:
    return next((p for p in parties(server) if p["identity"] == identity), None)


def start_agent(ca: Server, tmp_path: Path, name: str, *extra: str) -> tuple[AgentProcess, Path]:
    token = tmp_path / f"{name}.token"
    token.write_text(mint(ca.home, name, name))
    out = tmp_path / name
    agent = AgentProcess(agent_args(ca, out, name, token, "--checkin", "1s", *extra), tmp_path / f"{name}.log")
    return agent, out


def holder(out: Path) -> tuple[list[x509.Certificate], Any]:
    return (x509.load_pem_x509_certificates((out / "tls.crt").read_bytes()),
            load_private_key_pem((out / "tls.key").read_bytes()))


def checkin(server: Server, proof: str) -> httpx.Response:
    with server.client() as c:
        return c.post("/v1/checkin", json={"proof": proof})


def report(instance: str = "test0001", **extra: Any) -> dict[str, Any]:
    return {"instance": instance, "kind": "agent", "bundle_sha256": None, "failures": 0,
            "agent_version": "test", "interval_seconds": 1, **extra}


def rows(server: Server) -> list[Any]:
    authority = load_authority(server.home, PASSWORD)
    try:
        return FleetStore(authority.store).parties()
    finally:
        authority.store.close()


def metric(server: Server, line: str) -> float:
    with server.client() as c:
        text = c.get("/metrics").text
    match = re.search(rf"^{re.escape(line)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_an_agent_appears_in_the_fleet_and_turns_stale_after_three_missed_intervals(ca: Server,
                                                                                       tmp_path: Path) -> None:
    agent, out = start_agent(ca, tmp_path, "orders.internal")
    try:
        seen = wait_for(lambda: party(ca, "orders.internal"), what="the agent's check-in")
        assert seen["kind"] == "agent" and seen["state"] == "fresh"
        assert seen["serial"] == serial_text(serial_of(out))  # type: ignore[arg-type]
        leaf = holder(out)[0][0]
        assert seen["not_after"].startswith(leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%S"))
        assert seen["bundle_sha256"] == hashlib.sha256((out / "ca.crt").read_bytes()).hexdigest()
        assert seen["bundle_current"] is True and seen["interval_seconds"] == 1
        assert re.fullmatch(r"orders\.internal#[0-9a-f]{16}", seen["party"])
        assert (out / "agent-instance").read_text().strip() == seen["instance"]
        # it keeps checking in on the interval
        first = seen["last_checkin"]
        wait_for(lambda: (party(ca, "orders.internal") or {}).get("last_checkin") != first, timeout=10,
                 what="a second check-in")
        code, text, _ = run_cli("fleet", "--home", str(ca.home))
        assert code == 0, text
        assert "PARTY" in text and "LAST CHECK-IN (AGE)" in text and "orders.internal#" in text and "fresh" in text
        assert metric(ca, 'trustyard_fleet_parties{state="fresh"}') == 1
        assert metric(ca, f'trustyard_fleet_last_checkin_timestamp_seconds{{party="{seen["party"]}",kind="agent"}}') > 0
        assert metric(ca, 'trustyard_fleet_checkins_total{result="ok"}') >= 2
    finally:
        agent.stop()
    assert parties(ca, stale=True) == []
    stale = wait_for(lambda: parties(ca, stale=True), timeout=10, what="the stopped agent to turn stale")
    assert [p["identity"] for p in stale] == ["orders.internal"] and stale[0]["state"] == "stale"
    code, text, _ = run_cli("fleet", "--stale", "--json", "--ca-url", ca.url, "--root", str(ca.root),
                            "--admin-token-file", str(ca.home / "admin.token"))
    assert code == 0, text
    assert [p["state"] for p in json.loads(text)["parties"]] == ["stale"]
    assert metric(ca, 'trustyard_fleet_parties{state="stale"}') == 1


def test_an_empty_fleet_says_so(ca: Server) -> None:
    code, text, _ = run_cli("fleet", "--home", str(ca.home))
    assert code == 0 and text.strip() == "No relying parties have checked in."


def test_two_replicas_of_one_service_are_two_parties(ca: Server, tmp_path: Path) -> None:
    token_a, token_b = tmp_path / "a.token", tmp_path / "b.token"
    token_a.write_text(mint(ca.home, "api.internal", "api.internal"))
    token_b.write_text(mint(ca.home, "api.internal", "api.internal"))
    agents = [AgentProcess(agent_args(ca, tmp_path / d, "api.internal", t, "--checkin", "1s"), tmp_path / f"{d}.log")
              for d, t in (("a", token_a), ("b", token_b))]
    try:
        both = wait_for(lambda: len([p for p in parties(ca) if p["identity"] == "api.internal"]) == 2,
                        what="two parties")
        assert both
    finally:
        for a in agents:
            a.stop()


def test_renew_now_requested_through_the_fleet_makes_the_agent_renew_at_its_next_checkin(ca: Server,
                                                                                           tmp_path: Path) -> None:
    agent, out = start_agent(ca, tmp_path, "pay.internal", "--ttl", "10m")  # renews by itself only after 6m
    try:
        wait_for(lambda: party(ca, "pay.internal"), what="the agent's check-in")
        before = serial_of(out)
        authority = load_authority(ca.home, PASSWORD)
        try:
            fleet = Fleet(authority, FleetStore(authority.store))
            assert fleet.request_renewal("*.internal", timedelta(0)) == 1
            assert fleet.request_renewal("nothing.else", timedelta(0)) == 0
        finally:
            authority.store.close()
        wait_for(lambda: serial_of(out) != before, timeout=15, what="the renewal")
        assert "the CA asks for a renewal now" in agent.text()
        # the request is done once the party reports the renewed certificate
        done = wait_for(lambda: (p := party(ca, "pay.internal")) and p["serial"] == serial_text(serial_of(out))
                        and p["renew_requested"] is None and p, timeout=10, what="the request to clear")
        assert done
        renewed = serial_of(out)
        time.sleep(2.5)  # more check-ins: no second renewal
        assert serial_of(out) == renewed
    finally:
        agent.stop()


def test_refresh_bundle_makes_the_agent_fetch_the_roots_again(ca: Server, tmp_path: Path) -> None:
    # With an hour between polls, only the CA's answer can make it fetch the roots now.
    agent, out = start_agent(ca, tmp_path, "cart.internal", "--roots-interval", "1h")
    try:
        wait_for(lambda: party(ca, "cart.internal"), what="the agent's check-in")
        served = (out / "ca.crt").read_bytes()
        FileOutput(out).write_ca(TestCA("Other").pem().decode())
        assert (out / "ca.crt").read_bytes() != served
        wait_for(lambda: (out / "ca.crt").read_bytes() == served, timeout=15, what="ca.crt to be fetched again")
        assert "the CA says the trust bundle changed" in agent.text()
        assert wait_for(lambda: (party(ca, "cart.internal") or {}).get("bundle_current"), timeout=10)
    finally:
        agent.stop()


def test_retry_after_delays_the_next_checkin(ca: Server, tmp_path: Path) -> None:
    agent, _ = start_agent(ca, tmp_path, "ship.internal")
    try:
        wait_for(lambda: party(ca, "ship.internal"), what="the agent's check-in")
        flag = ca.home / "fleet-retry-after"
        flag.write_text("6")
        shed = 'trustyard_fleet_checkins_total{result="shed"}'
        wait_for(lambda: metric(ca, shed) >= 1, timeout=10, what="a shed check-in")
        shed_at = time.monotonic()
        flag.unlink()
        last = party(ca, "ship.internal")["last_checkin"]  # type: ignore[index]
        time.sleep(3)
        # every 1s otherwise: the agent waits out the 6 seconds instead
        assert metric(ca, shed) == 1
        assert party(ca, "ship.internal")["last_checkin"] == last  # type: ignore[index]
        wait_for(lambda: party(ca, "ship.internal")["last_checkin"] != last, timeout=10,  # type: ignore[index]
                 what="the check-in after the wait")
        assert time.monotonic() - shed_at >= 4.5
        assert "the CA sheds load: next check-in in 6s" in agent.text()
    finally:
        agent.stop()


def test_checkins_the_ca_does_not_honour_are_refused_and_change_nothing(ca: Server, tmp_path: Path) -> None:
    token = tmp_path / "t"
    token.write_text(mint(ca.home, "inv.internal", "inv.internal"))
    out = tmp_path / "inv"
    once = AgentProcess(agent_args(ca, out, "inv.internal", token, "--once"), tmp_path / "once.log")
    assert once.process.wait(60) == 0, once.text()
    chain, key = holder(out)
    ok = checkin(ca, proofs.make(key, chain, proofs.CHECKIN, report=report()))
    assert ok.status_code == 200 and ok.json()["accepted"] is True, ok.text
    table = rows(ca)
    assert {r.instance for r in table} >= {"test0001"}

    # the same check-in proof again
    again = proofs.make(key, chain, proofs.CHECKIN, report=report(failures=5))
    assert checkin(ca, again).status_code == 200
    table = rows(ca)
    replay = checkin(ca, again)
    assert replay.status_code == 401 and replay.json()["type"].endswith(":badProof")

    # a renewal proof is no check-in, and a check-in proof renews nothing
    csr = make_csr(key, [])
    csr_der = x509.load_pem_x509_csr(csr).public_bytes(Encoding.DER)
    renewal = proofs.make(key, chain, proofs.RENEW, csr_sha256=proofs.csr_digest(csr_der), report=report())
    refused = checkin(ca, renewal)
    assert refused.status_code == 401 and refused.json()["type"].endswith(":badProof"), refused.text
    with ca.client() as c:
        as_renewal = c.post("/v1/renew", json={"csr": csr.decode(), "proof": proofs.make(
            key, chain, proofs.CHECKIN, report=report(), csr_sha256=proofs.csr_digest(csr_der))})
    assert as_renewal.status_code == 401, as_renewal.text

    # a proof that lives too long
    long_lived = proofs.make(key, chain, proofs.CHECKIN, lifetime=timedelta(minutes=4), report=report())
    assert checkin(ca, long_lived).status_code == 401

    # a certificate from another CA, even with the same name
    other = TestCA("Other").issue("inv.internal")
    foreign = checkin(ca, proofs.make(other.key, [other.cert, *other.chain], proofs.CHECKIN, report=report("x1")))
    assert foreign.status_code == 401 and foreign.json()["type"].endswith(":unknownCertificate"), foreign.text

    # revoked
    with ca.client() as c:
        assert c.post("/v1/revoke", json={"serial": serial_text(chain[0].serial_number)},
                      headers=admin(ca)).status_code == 200
    revoked = checkin(ca, proofs.make(key, chain, proofs.CHECKIN, report=report("x2")))
    assert revoked.status_code == 403 and revoked.json()["type"].endswith(":revoked"), revoked.text

    assert rows(ca) == table
    assert metric(ca, 'trustyard_fleet_checkins_total{result="refused"}') >= 5


def test_a_bad_report_is_a_400_naming_the_field(ca: Server, tmp_path: Path) -> None:
    token = tmp_path / "t"
    token.write_text(mint(ca.home, "bad.internal", "bad.internal"))
    out = tmp_path / "bad"
    once = AgentProcess(agent_args(ca, out, "bad.internal", token, "--once", "--checkin", "1h"),
                        tmp_path / "once.log")
    assert once.process.wait(60) == 0, once.text()
    chain, key = holder(out)
    table = rows(ca)
    answer = checkin(ca, proofs.make(key, chain, proofs.CHECKIN, report=report(instance="../etc")))
    assert answer.status_code == 400 and answer.json()["value"] == "instance", answer.text
    answer = checkin(ca, proofs.make(key, chain, proofs.CHECKIN, report=report(kind="robot")))
    assert answer.status_code == 400 and answer.json()["value"] == "kind", answer.text
    assert rows(ca) == table


def test_a_service_reports_the_bundle_its_contexts_loaded(ca: Server, tmp_path: Path) -> None:
    from trustyard.tls import report_to, server_context

    token = tmp_path / "t"
    token.write_text(mint(ca.home, "svc.internal", "svc.internal"))
    out = tmp_path / "svc"
    once = AgentProcess(agent_args(ca, out, "svc.internal", token, "--once", "--checkin", "1h"),
                        tmp_path / "once.log")
    assert once.process.wait(60) == 0, once.text()
    context = server_context(out)
    reporter = report_to(ca.url, context, root=ca.root, interval=timedelta(seconds=1))
    try:
        service = wait_for(lambda: next((p for p in parties(ca) if p["kind"] == "service"), None),
                           what="the service's check-in")
        assert service["identity"] == "svc.internal" and service["bundle_current"] is True
        assert service["bundle_sha256"] == context.bundle_sha256
        assert service["instance"] == (out / "service-instance").read_text().strip()
        # the agent's own check-in (from --once) is another party
        assert {p["kind"] for p in parties(ca) if p["identity"] == "svc.internal"} == {"agent", "service"}
    finally:
        reporter.stop()
