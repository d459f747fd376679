"""An ACME certificate an emergency replaces: its renewal information says renew now (a window
already in the past), a finalize with its key is refused as a bad CSR, a new key is
certified, and when the grace runs out the old certificate is revoked and counted replaced."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from trustyard.acme import ari
from trustyard.ca import emergency
from trustyard.ca.emergency import Emergencies, Selector
from trustyard.x509.summary import serial_text

from .client import b64, csr_der
from .conftest import Env, authorize, issue, leaf, poll

ACME = "urn:ietf:params:acme:error:"


def _window(env: Env, acme: object, cert: object) -> tuple[datetime, datetime]:
    response = env.http.get(acme.directory["renewalInfo"] + "/" + ari.cert_id(cert))  # type: ignore[attr-defined]
    assert response.status_code == 200, response.text
    window = response.json()["suggestedWindow"]
    return (datetime.fromisoformat(window["start"].replace("Z", "+00:00")),
            datetime.fromisoformat(window["end"].replace("Z", "+00:00")))


def test_renewal_info_of_an_affected_certificate_is_in_the_past(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from trustyard.x509.names import parse_name

    monkeypatch.setattr(emergency, "ACTIVE_RECHECK", 0.0)  # the worker sees the new emergency at once

    acme = env.account()
    _order, pem, key = issue(acme, env.srv, "hit.internal")
    _order, other_pem, _ = issue(acme, env.srv, "spared.internal")
    hit, spared = leaf(pem), leaf(other_pem)
    start, _end = _window(env, acme, hit)
    assert start > datetime.now(UTC)  # a fresh certificate: later
    emergencies = Emergencies(env.authority.store)  # type: ignore[arg-type]
    emergencies.start(Selector.of("name", ["hit.internal"]), "keyCompromise", timedelta(minutes=5))

    _start, end = _window(env, acme, hit)
    assert end <= datetime.now(UTC) + timedelta(seconds=1)  # renew now
    assert _window(env, acme, spared)[0] > datetime.now(UTC)

    # the client renews: with the old key refused, with a new one certified
    response = acme.new_order("hit.internal")
    order_url = response.headers["Location"]
    authorize(acme, env.srv, response.json())
    order = poll(acme, order_url, ("ready", "invalid"))
    refused = acme.post(order["finalize"], {"csr": b64(csr_der(key, [parse_name("hit.internal")]))})
    assert refused.status_code == 400 and refused.json()["type"] == ACME + "badCSR", refused.text
    assert "emergency" in refused.json()["detail"]
    _order, new_pem, new_key = issue(acme, env.srv, "hit.internal")
    assert new_key.public_key() != key.public_key() and isinstance(new_key, ec.EllipticCurvePrivateKey)

    # the grace runs out: the old certificate is revoked, replaced by the new one
    later = Emergencies(env.authority.store, clock=lambda: datetime.now(UTC) + timedelta(minutes=6))  # type: ignore[arg-type]
    assert later.sweep() == 1
    assert env.authority.get(serial_text(hit.serial_number)).status == "revoked"  # type: ignore[union-attr]
    identities = later.status()["identities"]
    assert identities == [{"identity": "hit.internal", "serial": identities[0]["serial"], "state": "replaced",
                           "replacement": serial_text(leaf(new_pem).serial_number)}]
