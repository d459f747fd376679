"""Item 10: property-based fuzzing of CSR and token parsing, directly and through the API.

No input may produce anything but a typed 4xx error: never a 500, never an uncaught exception.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from trustyard.api.app import create_app
from trustyard.ca import proofs, tokens
from trustyard.ca.config import load_config
from trustyard.ca.home import load_authority
from trustyard.errors import TrustyardError
from trustyard.x509.csr import CSRError, parse_csr
from trustyard.x509.keys import KeyType, generate_private_key

from .support import PASSWORD, csr_pem

KEY = generate_private_key(KeyType.EC_P256)
VALID_CSR_DER = x509.load_pem_x509_csr(csr_pem(KEY, [x509.DNSName("a.internal")])).public_bytes(Encoding.DER)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def mutated_der(draw: st.DrawFn) -> bytes:
    data = bytearray(VALID_CSR_DER)
    for _ in range(draw(st.integers(1, 8))):
        choice = draw(st.sampled_from(["flip", "cut", "insert", "length"]))
        position = draw(st.integers(0, len(data) - 1)) if data else 0
        if choice == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif choice == "cut":
            data = data[:position]
        elif choice == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif data:
            data[position] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0x81, 0x82, 0x84, 0xFF]))
    return bytes(data)


def csr_inputs() -> st.SearchStrategy[bytes]:
    pem = mutated_der().map(lambda d: b"-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(d)
                            + b"-----END CERTIFICATE REQUEST-----\n")
    return st.one_of(st.binary(max_size=2048), mutated_der(), pem)


@FUZZ
@given(csr_inputs())
def test_csr_parsing_only_raises_csr_error(data: bytes) -> None:
    try:
        parse_csr(data)
    except CSRError:
        pass


def _b64(obj: object) -> str:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                     max_size=4), max_leaves=12)


def token_inputs() -> st.SearchStrategy[str]:
    headers = st.one_of(json_values, st.fixed_dictionaries(
        {"alg": st.sampled_from(["ES256", "none", "HS256", "RS256", "EdDSA", "x"]),
         "kid": st.one_of(st.just("default"), json_values),
         "x5c": st.one_of(st.lists(st.text(max_size=40), max_size=3), json_values)}))
    structured = st.builds(lambda h, p, s: f"{_b64(h)}.{_b64(p)}.{s}", headers, json_values,
                           st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC-_0123456789", max_size=90))
    return st.one_of(st.text(max_size=300), structured)


@FUZZ
@given(token_inputs())
def test_token_and_proof_parsing_only_raise_401(token: str) -> None:
    for check in (lambda: tokens.verify(token, {"default": KEY.public_key()}),
                  lambda: proofs.verify(token, proofs.RENEW)):
        try:
            check()
        except TrustyardError as exc:
            assert exc.status == 401


@pytest.fixture
def client(sqlite_home: Path) -> Iterator[TestClient]:
    authority = load_authority(sqlite_home, PASSWORD, minting=True)
    with TestClient(create_app(authority, load_config(sqlite_home)), raise_server_exceptions=True) as c:
        c.authority = authority  # type: ignore[attr-defined]
        yield c
    authority.store.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(csr=csr_inputs(), token=token_inputs(), path=st.sampled_from(["/v1/sign", "/v1/renew", "/v1/revoke"]))
def test_api_never_answers_500(client: TestClient, csr: bytes, token: str, path: str) -> None:
    body = {"/v1/sign": {"csr": csr.decode("latin-1"), "token": token},
            "/v1/renew": {"csr": csr.decode("latin-1"), "proof": token},
            "/v1/revoke": {"serial": token[:40], "proof": token}}[path]
    response = client.post(path, json=body)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/problem+json"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(csr=csr_inputs())
def test_api_with_a_valid_token_and_hostile_csr(client: TestClient, csr: bytes) -> None:
    token = client.authority.mint_token("default", "a.internal", [])  # type: ignore[attr-defined]
    response = client.post("/v1/sign", json={"csr": csr.decode("latin-1"), "token": token})
    assert response.status_code in (201, 400, 401, 403), response.text
