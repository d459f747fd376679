"""The certificate a proof names (``proofs.certificate_of``) is read from its JOSE header as
PyJWT reads it: the same certificate from a real proof, and the same refusals (401, badProof)
for a header that is not base64url, not JSON, not an object, or a token that is no JWS."""

from __future__ import annotations

import base64
import json

import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from trustyard.ca import proofs
from trustyard.errors import Code, Unauthorized
from trustyard.testing import TestCA
from trustyard.x509.names import parse_name


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_the_certificate_of_a_real_proof_is_the_one_pyjwt_reads() -> None:
    leaf = TestCA().issue(parse_name("p.internal"))
    token = proofs.make(leaf.key, [leaf.cert], proofs.CHECKIN, report={"instance": "x"})
    assert proofs.certificate_of(token) == leaf.cert
    x5c = jwt.get_unverified_header(token)["x5c"]
    assert base64.b64decode(x5c[0]) == proofs.certificate_of(token).public_bytes(Encoding.DER)


@pytest.mark.parametrize("header", [
    "!!!!", "eyJ4NWMiOltdfQ!", _b64(b"not json"), _b64(b"[1, 2]"), _b64(json.dumps({"alg": "ES256"}).encode()),
    _b64(json.dumps({"x5c": ["%%%"]}).encode()), "a", "",
], ids=["junk", "junk-tail", "not-json", "not-object", "no-x5c", "x5c-not-base64", "one-char", "empty"])
def test_a_header_without_a_readable_certificate_is_a_bad_proof(header: str) -> None:
    token = f"{header}.{_b64(b'{}')}.{_b64(b'sig')}"
    with pytest.raises(Unauthorized) as caught:
        proofs.certificate_of(token)
    assert caught.value.code == Code.BAD_PROOF


def test_a_token_without_dots_is_refused() -> None:
    with pytest.raises(Unauthorized) as caught:
        proofs.certificate_of(_b64(b'{"x5c": []}'))
    assert caught.value.code == Code.BAD_PROOF
