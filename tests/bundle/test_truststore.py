"""The pure renderers: one entry per root, names that stay apart, manifests with valid names."""

from __future__ import annotations

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12

from trustyard.ca.bundle import compose, digest
from trustyard.testing import TestCA
from trustyard.x509 import truststore


def test_two_roots_with_one_name_are_two_entries() -> None:
    a, b = TestCA("Same", intermediates=0).cert, TestCA("Same", intermediates=0).cert
    assert truststore.alias(a) != truststore.alias(b)
    loaded = pkcs12.load_pkcs12(truststore.render_p12([a, b], "pw"), b"pw")
    assert [c.certificate for c in loaded.additional_certs] == [a, b]
    assert {c.friendly_name for c in loaded.additional_certs} == {truststore.alias(a).encode(),
                                                                  truststore.alias(b).encode()}
    with pytest.raises(ValueError, match="password"):
        pkcs12.load_pkcs12(truststore.render_p12([a], "pw"), b"other")


def test_jks_entries_are_the_roots() -> None:
    import jks

    roots = [TestCA("J1", intermediates=0).cert, TestCA("J2", intermediates=0).cert]
    store = jks.KeyStore.loads(truststore.render_jks(roots, "storepass"), "storepass")
    got = {alias: x509.load_der_x509_certificate(entry.cert) for alias, entry in store.certs.items()}
    assert got == {truststore.alias(c): c for c in roots}


def test_an_empty_truststore_and_unknown_formats_are_refused() -> None:
    with pytest.raises(ValueError):
        truststore.render_p12([], "pw")
    with pytest.raises(ValueError):
        truststore.render_jks([], "pw")
    root = TestCA("F", intermediates=0).cert
    with pytest.raises(ValueError, match="unknown trust bundle format"):
        truststore.render("pkcs7", [root], pem="", version=1, sha256="")


def test_configmap_round_trips_and_checks_names() -> None:
    roots = [TestCA("C1", intermediates=0).cert, TestCA("C2", intermediates=0).cert]
    pem = compose([*roots, roots[0]])  # each root once
    assert x509.load_pem_x509_certificates(pem.encode()) == roots
    doc = yaml.safe_load(truststore.render_configmap(pem, 7, digest(pem)))
    assert doc["data"]["ca.crt"] == pem and "namespace" not in doc["metadata"]
    assert doc["metadata"]["annotations"]["trustyard.dev/bundle-version"] == "7"
    for bad in ("UPPER", "-dash", "a" * 254, "under_score"):
        with pytest.raises(ValueError, match="ConfigMap name"):
            truststore.render_configmap(pem, 1, "", name=bad)
    with pytest.raises(ValueError, match="namespace"):
        truststore.render_configmap(pem, 1, "", namespace="a.b")


def test_an_issued_certificate_comes_with_the_current_bundle_and_its_version(client, authority, ca_home) -> None:  # type: ignore[no-untyped-def]
    from trustyard.ca import bundle
    from trustyard.ca.config import load_config

    from ..support import new_csr

    added = bundle.add_root(load_config(ca_home), authority.store, TestCA("Issued", intermediates=0).cert)
    client.app.state.api.bundle.ttl = 0  # read the newest version at once
    _, csr = new_csr("orders.internal")
    token = authority.mint_token("default", "orders.internal", ["orders.internal"])
    doc = client.post("/v1/sign", json={"csr": csr.decode(), "token": token}).json()
    assert doc["bundle_version"] == added.version == 2
    assert doc["bundle_sha256"] == added.sha256 == digest(doc["roots"])


def test_a_worker_that_loaded_older_roots_serves_the_newer_published_bundle(authority, ca_home) -> None:  # type: ignore[no-untyped-def]
    """A server started from the home before a root was published must not publish its older
    roots over the newer bundle: it serves the newest version."""
    from starlette.testclient import TestClient

    from trustyard.api.app import create_app
    from trustyard.ca import bundle
    from trustyard.ca.config import load_config

    config = load_config(ca_home)
    added = bundle.add_root(config, authority.store, TestCA("Later", intermediates=0).cert)
    assert len(authority.roots) == 1  # loaded before the root was added
    with TestClient(create_app(authority, config)) as http:
        response = http.get("/v1/roots")
    assert response.headers["trustyard-bundle-version"] == str(added.version) == "2"
    assert response.text == added.pem
    assert bundle.latest(authority.store) == added
