"""Values keep one form through the pipeline.

Serial numbers have one normalizer (``serial_text`` / ``serial_int``) and junk is refused at the
edge with a 400 naming the field; lifetimes reach the authority as ``timedelta`` (text is parsed
once, at the API or the command line); the authority's issuing verb says what it issues for, and
is not the signer's ``sign``; a parsed CSR is called what it is.
"""

from __future__ import annotations

import inspect
import typing
from datetime import timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from trustyard.ca import authority as authority_module
from trustyard.ca.authority import Authority
from trustyard.errors import BadRequest
from trustyard.x509 import csr as csr_module
from trustyard.x509.summary import serial_int, serial_text

from .support import new_csr

# -- one serial normalizer ---------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, 0xABCDEF, 0x5F1C2E9A7B3D4C6E8F0A1B2C3D4E5F6071829304, 2**159 - 1])
def test_serial_text_and_serial_int_round_trip(value: int) -> None:
    text = serial_text(value)
    assert text == format(value, "x")
    assert serial_int(text) == value
    assert serial_text(text) == text  # idempotent
    assert serial_text(text.upper()) == text and serial_text("000" + text) == text
    assert serial_int("  " + text.upper() + "\n") == value


@pytest.mark.parametrize("junk", ["", "zz", "0x1f", "1f:2a", "-1", "1 2", "g", "\u0661\u0662", "1f\x00", " "])
def test_serial_normalizer_refuses_junk(junk: str) -> None:
    with pytest.raises(ValueError, match="serial"):
        serial_text(junk)
    with pytest.raises(ValueError, match="serial"):
        serial_int(junk)


@pytest.mark.parametrize("junk", [-1, True, 1.5, None, b"1f"])
def test_serial_normalizer_refuses_other_types(junk: object) -> None:
    with pytest.raises(ValueError):
        serial_text(junk)  # type: ignore[arg-type]


# -- the API refuses a serial that is not hex text ---------------------------------------------


@pytest.fixture
def ca_home(sqlite_home: Path) -> Path:
    """These tests run on SQLite only: conftest's authority, client and admin use this home."""
    return sqlite_home


def _problem(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return response.json()


def test_get_certificate_with_a_non_hex_serial_is_a_400(client: TestClient, admin: dict[str, str]) -> None:
    for headers in ({}, admin):
        doc = _problem(client.get("/v1/certificates/zz", headers=headers), 400)
        assert doc["field"] == "serial" and doc["detail"].startswith("serial:")
    # hex text that names no certificate is still a 404, in any case and with leading zeros
    assert client.get("/v1/certificates/00ABCDEF", headers=admin).status_code == 404


def test_revoke_with_a_non_hex_serial_is_a_400(client: TestClient, authority: Authority,
                                               admin: dict[str, str]) -> None:
    token = authority.mint_token("default", "orders.internal", [])
    _, csr = new_csr("orders.internal")
    issued = client.post("/v1/sign", json={"csr": csr.decode(), "token": token})
    assert issued.status_code == 201, issued.text
    serial = issued.json()["serial"]
    for junk in ("zz", "0x" + serial, serial + "g"):
        doc = _problem(client.post("/v1/revoke", json={"serial": junk}, headers=admin), 400)
        assert doc["field"] == "serial"
    assert authority.get(serial).status == "issued"  # type: ignore[union-attr]  # nothing changed
    # the same serial, spelt in capitals with a leading zero, is the same certificate
    revoked = client.post("/v1/revoke", json={"serial": "0" + serial.upper()}, headers=admin)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["serial"] == serial and revoked.json()["status"] == "revoked"


def test_the_authority_refuses_a_junk_serial_for_every_caller(authority: Authority) -> None:
    with pytest.raises(BadRequest) as info:
        authority.get("not-hex")
    assert info.value.fields["field"] == "serial"
    with pytest.raises(BadRequest):
        authority.revoke("zz", admin=True, actor="test")


# -- names that say what they are ------------------------------------------------------------


def test_the_authority_issues_for_a_token_and_does_not_sign() -> None:
    assert not hasattr(Authority, "sign")  # ``sign`` is the signer's verb (a builder in, a certificate out)
    assert callable(Authority.issue_for_token)
    assert callable(Authority.issue_for_order)


def test_a_parsed_csr_is_called_what_it_is() -> None:
    assert not hasattr(csr_module, "CSRRequest")
    assert typing.get_type_hints(csr_module.parse_csr)["return"] is csr_module.ParsedCSR


# -- lifetimes are timedelta past the edge ---------------------------------------------------


def test_issue_for_token_takes_a_timedelta_ttl() -> None:
    hints = typing.get_type_hints(Authority.issue_for_token)
    assert hints["ttl"] == timedelta | None
    assert inspect.signature(Authority.issue_for_token).parameters["ttl"].default is None


def test_text_ttl_passed_into_the_authority_is_a_type_error(authority: Authority) -> None:
    token = authority.mint_token("default", "orders.internal", [])
    _, csr = new_csr("orders.internal")
    with pytest.raises(TypeError, match="timedelta"):
        authority.issue_for_token(csr, token, "1h")  # type: ignore[arg-type]
    # refused before the token was looked at: it still works, with the lifetime as a timedelta
    issued = authority.issue_for_token(csr, token, timedelta(hours=1))
    assert issued.record.not_after - issued.record.not_before <= timedelta(hours=1, minutes=5)


def test_text_becomes_a_duration_in_one_place() -> None:
    assert authority_module.duration_field("ttl", "1h30m") == timedelta(hours=1, minutes=30)
    with pytest.raises(BadRequest) as info:
        authority_module.duration_field("ttl", "5 minutes")
    assert info.value.fields["field"] == "ttl" and info.value.code == "badTTL"


def test_mint_token_takes_timedelta_lifetimes(authority: Authority) -> None:
    hints = typing.get_type_hints(Authority.mint_token)
    assert hints["ttl"] is timedelta and hints["cert_ttl"] == timedelta | None
    with pytest.raises(TypeError, match="timedelta"):
        authority.mint_token("default", "orders.internal", [], "5m")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="timedelta"):
        authority.mint_token("default", "orders.internal", [], cert_ttl="1h")  # type: ignore[arg-type]
    token = authority.mint_token("default", "orders.internal", [], timedelta(minutes=5), timedelta(minutes=90))
    _, csr = new_csr("orders.internal")
    with pytest.raises(Exception, match="1h30m"):  # the cap travels in the token and comes back the same
        authority.issue_for_token(csr, token, timedelta(hours=2))
