"""The service-to-service side (``tls.policy``, ``tls.asgi``, ``tls.identity``).

The identity policy file is TOML an operator writes: it loads or raises ``ConfigError``. The
client certificate chain in the ASGI scope comes from the peer: the middleware decides with
a ``PeerIdentity`` or refuses with a 401/403 problem, never an exception that becomes a 500.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import example, given
from hypothesis import strategies as st

from trustyard.errors import ConfigError, TrustyardError
from trustyard.tls.asgi import IdentityMiddleware
from trustyard.tls.policy import IdentityPolicy
from trustyard.x509.keys import KeyType, generate_private_key, signature_hash

from .strategies import budget, json_values, mutated
from .test_config import edited

POLICY_TEMPLATE: dict[str, Any] = {"allow": [
    {"identities": ["spiffe://prod.internal/orders", "spiffe://prod.internal/billing/*"], "paths": ["/api/orders"],
     "methods": ["GET", "POST"]},
    {"identities": ["*.ops.internal", "10.0.0.0/8"]},
]}


@budget(150)
@given(edited(POLICY_TEMPLATE))
@example("allow = 5\n")
@example('allow = "abc"\n')
@example("[[allow]]\nidentities = [1]\n")
@example('[[allow]]\nidentities = ["*"]\npaths = ["relative"]\n')
def test_identity_policy_loads_or_raises_config_error(text: str) -> None:
    try:
        IdentityPolicy.from_toml(text, "policy.toml")
    except ConfigError as exc:
        assert str(exc)


KEY = generate_private_key(KeyType.EC_P256)
NOW = datetime.now(UTC)
_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "orders")])
CLIENT = (x509.CertificateBuilder().subject_name(_name).issuer_name(_name).public_key(KEY.public_key())
          .serial_number(9).not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=1))
          .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://prod.internal/orders"),
                                                      x509.DNSName("orders.ops.internal")]), critical=False)
          .sign(KEY, signature_hash(KEY)))
CLIENT_PEM = CLIENT.public_bytes(Encoding.PEM)
CLIENT_DER = CLIENT.public_bytes(Encoding.DER)
MIDDLEWARE = IdentityMiddleware(lambda *a: None, IdentityPolicy.from_dict(POLICY_TEMPLATE))  # type: ignore[arg-type,return-value]

_pem_items = st.one_of(
    mutated(CLIENT_PEM).map(lambda b: b.decode("latin-1")),
    mutated(CLIENT_DER).map(lambda d: "-----BEGIN CERTIFICATE-----\n" + __import__("base64").encodebytes(d).decode()
                            + "-----END CERTIFICATE-----\n"),
    st.just(CLIENT_PEM.decode()), st.just(CLIENT_PEM), st.text(max_size=40), json_values)


@budget(200)
@given(st.one_of(st.lists(_pem_items, max_size=2), json_values),
       st.sampled_from(["GET", "POST", "DELETE", "get", ""]),
       st.sampled_from(["/api/orders", "/api/orders/1", "/admin", "/", "", "//api/orders", "/api/../admin"])
       | st.text(max_size=20))
def test_middleware_decides_on_any_client_chain_without_crashing(chain: Any, method: str, path: str) -> None:
    """The handshake verified the chain, but the scope is still outside input to the
    middleware (another server, a proxy, a test harness fills it): decide or refuse."""
    scope = {"type": "http", "method": method, "path": path, "extensions": {"tls": {"client_cert_chain": chain}}}
    try:
        MIDDLEWARE.decide(scope, method, path)
    except TrustyardError as exc:
        assert exc.status in (400, 401, 403), exc
