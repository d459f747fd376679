"""For ACME too, the CA's log has a line for what an ACME client got and was refused,
as for REST (the app in-process; tests/test_serve_log.py runs the real server)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from trustyard.ca.home import InitOptions, init_home
from trustyard.x509.summary import serial_text

from ..support import PASSWORD
from .challtestsrv import ChallTestSrv
from .client import b64
from .conftest import ALLOW, Env, issue, leaf, make_env


@pytest.fixture
def sqlite_env(tmp_path: Path, challtestsrv: ChallTestSrv) -> Iterator[Env]:
    home = tmp_path / "ca"
    init_home(home, PASSWORD, InitOptions(allow=ALLOW))
    yield from make_env(home, challtestsrv)


def test_acme_issuance_revocation_and_refusals_are_logged(sqlite_env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trustyard.ca")
    acme = sqlite_env.account()
    account = f"acme:{acme.kid.rsplit('/', 1)[1]}"  # type: ignore[union-attr]
    _order, pem, _key = issue(acme, sqlite_env.srv, "web.internal")
    serial = serial_text(leaf(pem).serial_number)
    assert acme.new_order("web.example.com").status_code == 400
    der = leaf(pem).public_bytes(Encoding.DER)
    assert acme.post(acme.directory["revokeCert"], {"certificate": b64(der), "reason": 1}).status_code == 200
    assert acme.post(acme.directory["revokeCert"], {"certificate": b64(der), "reason": 1}).status_code == 400
    assert sqlite_env.http.post(acme.directory["newAccount"], content=b"{}",
                                headers={"Content-Type": "application/json"}).status_code == 415

    said = caplog.messages
    issued = [m for m in said if m.startswith(f"issued serial={serial} ")]
    assert issued and issued[0].startswith(f"issued serial={serial} names=web.internal lifetime=")
    assert issued[0].endswith(" provisioner=acme client=testclient")
    assert (f"revoked serial={serial} reason=keyCompromise names=web.internal by={account} client=testclient"
            in said)
    rejected = [m for m in said if m.startswith("refused action=acme.new-order code=rejectedIdentifier ")]
    assert len(rejected) == 1 and "web.example.com" in rejected[0], said
    assert rejected[0].endswith(f" by={account} client=testclient")
    again = [m for m in said if "alreadyRevoked" in m]  # the authority's refusal: one line, not two
    assert len(again) == 1 and again[0].startswith("refused action=certificate.revoke code=alreadyRevoked "), said
    assert any(m.startswith("refused action=acme.new-account code=malformed ")
               and m.endswith(" client=testclient unauthenticated=yes") for m in said), said
