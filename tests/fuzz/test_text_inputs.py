"""Small parsers of text and bytes from outside: ``trustyard explain`` (pasted error
messages), endpoint targets of ``scan``/``doctor``/``inspect`` (``HOST:PORT[/SNI]``), and the
certificate a validation target answers an ACME tls-alpn-01 challenge with."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import example, given
from hypothesis import strategies as st

from trustyard.acme.challenges import ACME_IDENTIFIER_OID, tls_alpn01_extension_value
from trustyard.acme.probes import Probe, ValidationFailed, _check_alpn_certificate
from trustyard.diagnose.explain import LAYERS, explain
from trustyard.inventory.endpoints import Endpoint
from trustyard.x509.keys import KeyType, generate_private_key, signature_hash

from .strategies import budget, mutated


@budget(150)
@given(st.one_of(st.text(max_size=200), st.sampled_from([
    "curl: (60) SSL certificate problem: unable to get local issuer certificate",
    "x509: certificate signed by unknown authority", "(" * 5000, "\x00" * 10,
    "ssl.SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed "
    "certificate in certificate chain (_ssl.c:1006)"]).flatmap(lambda t: st.just(t) | mutated(t.encode()).map(
        lambda b: b.decode("utf-8", "replace")))))
def test_explain_always_answers_with_a_layer(text: str) -> None:
    result = explain(text)
    assert result.layer in LAYERS or result.layer == "unknown"


@budget(200)
@given(st.one_of(st.text(max_size=40), st.builds(
    lambda host, port, sni: f"{host}:{port}{sni}",
    st.sampled_from(["web.internal", "[::1]", "::1", "127.0.0.1", "", "[", "é.internal", "[::1"]),
    st.sampled_from(["443", "0", "65536", "-1", "+443", "١٢", "4_43", " 443", "", "99999999999999999999"]),
    st.sampled_from(["", "/", "/web.internal", "/a/b", "/\x00", "/é"]))))
@example("web.internal:١٢")
@example("web.internal:4_43")
@example(":]")
@example("[::1]x:443")
@example("::1")
def test_endpoint_parse_returns_an_endpoint_or_raises_value_error(text: str) -> None:
    try:
        endpoint = Endpoint.parse(text)
    except ValueError as exc:
        assert str(exc)
        return
    assert endpoint.host and 0 < endpoint.port < 65536
    assert Endpoint.parse(str(endpoint)) == endpoint  # what we print, we read back
    assert str(endpoint.port) in text or endpoint.port == 443  # the port written (ASCII digits), or the default


KEY = generate_private_key(KeyType.EC_P256)
PROBE = Probe("c1", "tls-alpn-01", "dns", "web.internal", "token.thumb", "a1")
NOW = datetime.now(UTC)
_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "web.internal")])
ALPN_CERT = (x509.CertificateBuilder().subject_name(_name).issuer_name(_name).public_key(KEY.public_key())
             .serial_number(3).not_valid_before(NOW - timedelta(hours=1)).not_valid_after(NOW + timedelta(hours=1))
             .add_extension(x509.SubjectAlternativeName([x509.DNSName("web.internal")]), critical=False)
             .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(ACME_IDENTIFIER_OID),
                                                       tls_alpn01_extension_value(PROBE.key_authorization)),
                            critical=True)
             .sign(KEY, signature_hash(KEY))).public_bytes(Encoding.DER)


def test_the_alpn_seed_is_accepted() -> None:
    _check_alpn_certificate(ALPN_CERT, PROBE, False)


@budget(250)
@given(st.one_of(mutated(ALPN_CERT), st.binary(max_size=100), st.none()), st.booleans())
def test_tls_alpn_challenge_certificate_passes_or_fails_validation(der: bytes | None, ip: bool) -> None:
    """The validation target is whoever the identifier resolves to: its certificate is hostile input."""
    probe = Probe("c1", "tls-alpn-01", "ip", "10.0.0.1", "token.thumb", "a1") if ip else PROBE
    try:
        _check_alpn_certificate(der, probe, ip)
    except ValidationFailed as exc:
        assert exc.kind in ("tls", "incorrectResponse"), exc.kind
