"""GET /v1/roots from a real `trustyard serve`: version and digest headers, 304, every format,
versions that grow only when the bundle changes and survive a restart, concurrent publishers."""

from __future__ import annotations

import hashlib
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from trustyard.ca import bundle
from trustyard.ca.config import load_config
from trustyard.ca.home import open_home_store
from trustyard.store import bundles as bundle_rows
from trustyard.testing import TestCA, need

from ..support import Server, start_server

PEM_CT = "application/pem-certificate-chain"


def served(server: Server, **params: str) -> tuple[int, dict[str, str], bytes]:
    with server.client() as c:
        r = c.get("/v1/roots", params=params)
    return r.status_code, dict(r.headers), r.content


def add_root(home: Path, cert: x509.Certificate) -> bundle.Bundle:
    config = load_config(home)
    store = open_home_store(config)
    try:
        return bundle.add_root(config, store, cert)
    finally:
        store.close()


def wait_version(server: Server, version: int) -> tuple[dict[str, str], bytes]:
    """The answer once ``version`` is served, and long enough after that every worker (each reads
    the newest version at most a second after the last read) serves it too."""
    deadline = time.monotonic() + 20
    while True:
        _, headers, body = served(server)
        if headers["trustyard-bundle-version"] == str(version) or time.monotonic() > deadline:
            time.sleep(1.2)
            return headers, body
        time.sleep(0.2)


def test_roots_carry_version_digest_and_etag_and_answer_304(server: Server) -> None:
    status, headers, body = served(server)
    assert status == 200 and headers["content-type"].startswith(PEM_CT)
    digest = hashlib.sha256(body).hexdigest()
    assert headers["trustyard-bundle-sha256"] == digest
    assert headers["etag"] == f'"{digest}"'
    assert headers["trustyard-bundle-version"] == "1"  # init published the first version
    assert x509.load_pem_x509_certificates(body)[0] == x509.load_pem_x509_certificate(server.root.read_bytes())
    with server.client() as c:
        again = c.get("/v1/roots", headers={"If-None-Match": headers["etag"]})
        other = c.get("/v1/roots", headers={"If-None-Match": '"0000"'})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["trustyard-bundle-version"] == "1" and again.headers["etag"] == headers["etag"]
    assert other.status_code == 200 and other.content == body
    for fmt in ("p12", "jks", "configmap"):
        status, fheaders, _ = served(server, format=fmt)
        assert status == 200, fmt
        assert fheaders["trustyard-bundle-version"] == "1" and fheaders["trustyard-bundle-sha256"] == digest
        assert fheaders["etag"] != headers["etag"]  # another representation, another tag


def test_configmap_is_yaml_whose_ca_crt_is_the_pem(server: Server) -> None:
    _, headers, pem = served(server)
    status, cm_headers, body = served(server, format="configmap", name="mesh-roots", namespace="istio-system")
    assert status == 200 and cm_headers["content-type"].startswith("application/yaml")
    doc = yaml.safe_load(body)
    assert doc["apiVersion"] == "v1" and doc["kind"] == "ConfigMap"
    assert doc["metadata"]["name"] == "mesh-roots" and doc["metadata"]["namespace"] == "istio-system"
    assert doc["data"]["ca.crt"] == pem.decode()
    annotations = doc["metadata"]["annotations"]
    assert annotations["trustyard.dev/bundle-version"] == "1"
    assert annotations["trustyard.dev/bundle-sha256"] == headers["trustyard-bundle-sha256"]
    assert yaml.safe_load(served(server, format="configmap")[2])["metadata"]["name"] == "trustyard-roots"


@pytest.mark.parametrize("params", [{"format": "der"}, {"format": "configmap", "name": "Not_A_Name"},
                                    {"format": "configmap", "namespace": "a.b"}], ids=["format", "name", "namespace"])
def test_bad_format_or_name_is_a_400_naming_it(server: Server, params: dict[str, str]) -> None:
    status, headers, body = served(server, **params)
    assert status == 400 and headers["content-type"] == "application/problem+json"
    assert b"badQuery" in body


def test_truststores_served_with_the_public_password_list_the_root(server: Server, tmp_path: Path) -> None:
    keytool, openssl = need("keytool", package="default-jdk-headless"), need("openssl")
    root = x509.load_pem_x509_certificate(server.root.read_bytes())
    fingerprint = root.fingerprint(hashes.SHA256()).hex(":").upper()
    for fmt, storetype in (("jks", "JKS"), ("p12", "PKCS12")):
        status, headers, body = served(server, format=fmt)
        assert status == 200 and "attachment" in headers["content-disposition"]
        path = tmp_path / f"truststore.{fmt}"
        path.write_bytes(body)
        listed = subprocess.run([keytool, "-list", "-keystore", str(path), "-storetype", storetype,
                                 "-storepass", "changeit"], capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0, listed.stderr
        assert "1 entry" in listed.stdout and "trustedCertEntry" in listed.stdout
        assert fingerprint in listed.stdout
    out = subprocess.run([openssl, "pkcs12", "-in", str(tmp_path / "truststore.p12"), "-nokeys", "-passin",
                          "pass:changeit"], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert x509.load_pem_x509_certificates(out.stdout) == [root]


def test_version_grows_when_a_root_is_added_and_survives_a_restart(server: Server, ca_home: Path) -> None:
    _, first, _ = served(server)
    new_root = TestCA("Next", intermediates=0).cert
    published = add_root(ca_home, new_root)
    assert published.version == 2
    headers, body = wait_version(server, 2)  # every replica reads the newest version within a second
    assert headers["trustyard-bundle-version"] == "2"
    assert headers["trustyard-bundle-sha256"] == hashlib.sha256(body).hexdigest() == published.sha256
    assert new_root in x509.load_pem_x509_certificates(body)
    with server.client() as c:  # the old tag no longer matches
        assert c.get("/v1/roots", headers={"If-None-Match": first["etag"]}).status_code == 200
    assert add_root(ca_home, new_root).version == 2  # the same content again: no new version
    server.stop()
    again = start_server(ca_home, workers=2)
    try:
        status, after, body_after = served(again)
        assert status == 200 and after["trustyard-bundle-version"] == "2" and body_after == body
        with again.client() as c:
            assert c.get("/v1/roots", headers={"If-None-Match": headers["etag"]}).status_code == 304
    finally:
        again.stop()


def test_concurrent_publishers_of_one_bundle_end_on_one_version(ca_home: Path) -> None:
    config = load_config(ca_home)
    roots = bundle.roots_of(config)
    extra = TestCA("Concurrent", intermediates=0).cert
    stores = [open_home_store(config) for _ in range(6)]
    barrier = threading.Barrier(len(stores))
    results: list[bundle.Bundle] = []
    failures: list[BaseException] = []

    def publish(store: object) -> None:
        try:
            barrier.wait(20)
            results.append(bundle.publish(store, [*roots, extra]))  # type: ignore[arg-type]
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=publish, args=(s,)) for s in stores]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not failures, failures
        assert {r.version for r in results} == {2} and len(results) == len(stores)
        newest = bundle_rows.latest(stores[0])
        assert newest is not None and newest.version == 2 and newest.sha256 == results[0].sha256
        # A different content then claims the next number, once.
        assert bundle.publish(stores[1], roots).version == 3
        assert bundle.publish(stores[2], roots).version == 3
    finally:
        for s in stores:
            s.close()
