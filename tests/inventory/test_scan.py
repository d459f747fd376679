"""scan: formats, tree walking, findings, blast radius, outputs, endpoints."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import socket
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12

from trustyard.cli import main
from trustyard.inventory import ScanOptions, run_scan, where
from trustyard.inventory.endpoints import Endpoint
from trustyard.inventory.findings import Rules
from trustyard.testing import TestCA, need, pem, self_signed
from trustyard.units import Threshold
from trustyard.x509.keys import private_key_pem

from ..diagnose.servers import DAY, NOW, Server


def scan(*paths: Path, **kw) -> object:  # type: ignore[no-untyped-def]
    return run_scan(ScanOptions(paths=tuple(str(p) for p in paths), **kw))


def codes(inv) -> dict[str, list[tuple[str, ...]]]:  # type: ignore[no-untyped-def]
    out: dict[str, list[tuple[str, ...]]] = {}
    for f in inv.findings:
        out.setdefault(f.code, []).append(f.locations)
    return out


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA("Inventory", intermediates=0)


# ------------------------------------------------------------------ formats

def test_reads_every_format(tmp_path: Path, ca: TestCA) -> None:
    inter = ca.child("Test Intermediate")
    leaf = inter.issue("svc.internal")
    der_leaf = inter.issue("der.internal")
    (tmp_path / "bundle.pem").write_bytes(pem(leaf.cert) + pem(inter.cert) + pem(ca.cert))
    (tmp_path / "one.der").write_bytes(der_leaf.cert.public_bytes(serialization.Encoding.DER))
    (tmp_path / "chain.p7b").write_bytes(pkcs7.serialize_certificates([leaf.cert, inter.cert], serialization.Encoding.PEM))
    (tmp_path / "chain.p7c").write_bytes(pkcs7.serialize_certificates([inter.cert], serialization.Encoding.DER))
    p12_leaf = inter.issue("p12.internal")
    (tmp_path / "id.p12").write_bytes(pkcs12.serialize_key_and_certificates(
        b"svc", p12_leaf.key, p12_leaf.cert, [inter.cert],  # type: ignore[arg-type]
        serialization.BestAvailableEncryption(b"s3cret")))
    (tmp_path / "random.bin").write_bytes(os.urandom(4096))
    (tmp_path / "README.txt").write_text("not a certificate")
    inv = scan(tmp_path, passwords=(b"s3cret",))
    sans = {tuple(c.to_json()["sans"]) for c in inv.certificates}
    assert {("svc.internal",), ("der.internal",), ("p12.internal",)} <= sans
    locations = {c.location for c in inv.certificates}
    assert any(loc.endswith("chain.p7b#1") for loc in locations)
    assert any(loc.endswith("chain.p7c") for loc in locations)
    assert any("id.p12#svc" in loc for loc in locations)
    assert any(k.location.endswith("id.p12#svc") for k in inv.keys)
    assert not inv.errors


def test_pkcs12_wrong_password_is_reported_not_fatal(tmp_path: Path, ca: TestCA) -> None:
    leaf = ca.issue("x.internal")
    (tmp_path / "locked.p12").write_bytes(pkcs12.serialize_key_and_certificates(
        b"x", leaf.key, leaf.cert, None, serialization.BestAvailableEncryption(b"right")))  # type: ignore[arg-type]
    (tmp_path / "ok.crt").write_bytes(pem(leaf.cert))
    inv = scan(tmp_path)
    assert [e.location for e in inv.errors] == [str(tmp_path / "locked.p12")]
    assert "password" in inv.errors[0].detail
    assert len(inv.certificates) == 1


@pytest.mark.slow
def test_java_keystores_made_by_keytool(tmp_path: Path, ca: TestCA) -> None:
    need("keytool")
    leaf = ca.child("Test Intermediate").issue("java.internal")
    p12 = tmp_path / "src.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(
        b"app", leaf.key, leaf.cert, leaf.chain, serialization.BestAvailableEncryption(b"changeit")))  # type: ignore[arg-type]
    stores = tmp_path / "stores"
    stores.mkdir()
    for kind in ("JKS", "PKCS12"):
        subprocess.run(["keytool", "-importkeystore", "-noprompt", "-srckeystore", str(p12), "-srcstoretype", "PKCS12",
                        "-srcstorepass", "changeit", "-destkeystore", str(stores / f"keystore.{kind.lower()}"),
                        "-deststoretype", kind, "-deststorepass", "storepass1"], check=True, capture_output=True)
    (tmp_path / "root.pem").write_bytes(ca.pem())
    subprocess.run(["keytool", "-importcert", "-noprompt", "-alias", "inventory-root", "-file", str(tmp_path / "root.pem"),
                    "-keystore", str(stores / "truststore.jks"), "-storetype", "JKS", "-storepass", "storepass1"],
                   check=True, capture_output=True)
    inv = scan(stores, passwords=(b"storepass1",))
    assert not inv.errors, inv.errors
    by_loc = {c.location: c for c in inv.certificates}
    assert any(loc.startswith(str(stores / "keystore.jks") + "#app") for loc in by_loc)
    assert any(loc.startswith(str(stores / "keystore.pkcs12") + "#app") for loc in by_loc)
    anchor = by_loc[str(stores / "truststore.jks") + "#inventory-root"]
    assert anchor.trust_store and anchor.is_ca
    assert {k.spki for k in inv.keys} == {by_loc[next(loc for loc in by_loc if "keystore.jks#app" in loc)].spki}
    # one key in two keystores
    assert any(f.code == "shared_key" for f in inv.findings)


def test_kubernetes_manifests_yaml_and_json(tmp_path: Path, ca: TestCA) -> None:
    leaf = ca.issue("web.prod.internal")
    b64 = lambda data: base64.b64encode(data).decode()
    docs = [
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
         "metadata": {"name": "web-tls", "namespace": "prod"},
         "data": {"tls.crt": b64(pem(leaf.cert)), "tls.key": b64(private_key_pem(leaf.key)),  # type: ignore[arg-type]
                  "ca.crt": b64(ca.pem())}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "trust", "namespace": "prod"},
         "data": {"bundle.pem": ca.pem().decode()}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}},
    ]
    (tmp_path / "secrets.yaml").write_text(yaml.safe_dump_all(docs))
    (tmp_path / "list.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs[:1]}))
    inv = scan(tmp_path)
    locs = sorted(c.location for c in inv.certificates)
    assert f"{tmp_path / 'secrets.yaml'}#Secret/prod/web-tls/tls.crt" in locs
    assert f"{tmp_path / 'secrets.yaml'}#ConfigMap/prod/trust/bundle.pem" in locs
    assert f"{tmp_path / 'list.json'}#Secret/prod/web-tls/tls.crt" in locs
    assert any(k.location.endswith("web-tls/tls.key") for k in inv.keys)
    assert all(c.trust_store for c in inv.certificates if c.is_ca)
    # the Secret's key and cert pair up: no key_mismatch; the copy in list.json is a shared key
    found = codes(inv)
    assert "key_mismatch" not in found and "shared_key" in found


def test_walk_survives_symlink_loops_and_bad_files(tmp_path: Path, ca: TestCA) -> None:
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "svc.crt").write_bytes(ca.issue("svc.internal").cert.public_bytes(serialization.Encoding.PEM))
    (tree / "a" / "b" / "loop").symlink_to(tree)
    (tree / "a" / "alias.crt").symlink_to(tree / "a" / "b" / "svc.crt")
    (tree / "dangling.pem").symlink_to(tree / "nowhere.pem")
    (tree / "broken.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    start = time.monotonic()
    inv = scan(tree)
    assert time.monotonic() - start < 5
    assert len(inv.certificates) == 1  # the symlinked copy and the loop are read once
    bad = {e.location for e in inv.errors}
    assert str(tree / "dangling.pem") in bad and str(tree / "broken.pem") in bad


# ------------------------------------------------------------------ findings

@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory, ca: TestCA) -> dict[str, Path]:
    """A directory tree with one instance of every finding."""
    base = tmp_path_factory.mktemp("estate")
    inter = ca.child("Estate Intermediate")
    p = {"base": base}
    p["ca"] = base / "ca-bundle.pem"
    p["ca"].write_bytes(ca.pem())
    # self-signed leaf, with an unprotected key
    ss = self_signed("legacy.internal", cn="legacy")
    crt, key = ss.write_pair(base / "legacy", "server")
    key.chmod(0o644)
    p["self_signed"], p["unprotected"] = crt, key
    # expired / not yet valid / expiring (by percentage)
    ca.issue("old.internal", not_before=NOW - 60 * DAY, not_after=NOW - DAY).write_pair(base / "old")
    ca.issue("future.internal", not_before=NOW + DAY, not_after=NOW + 40 * DAY).write_pair(base / "future")
    ca.issue("soon.internal", not_before=NOW - 20 * DAY, not_after=NOW + 5 * DAY).write_pair(base / "soon")
    # weak key, SHA-1 signature, CN-only, long validity
    ca.issue("weak.internal", key=rsa.generate_private_key(public_exponent=65537, key_size=1024)).write_pair(base / "weak")
    # cryptography refuses to sign with SHA-1; openssl still does
    (base / "sha1").mkdir()
    subprocess.run(["openssl", "req", "-x509", "-sha1", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=sha1", "-addext", "basicConstraints=critical,CA:FALSE",
                    "-keyout", str(base / "sha1" / "tls.key"), "-out", str(base / "sha1" / "tls.crt"), "-days", "30"],
                   check=True, capture_output=True)
    ca.issue(cn="cn-only.internal").write_pair(base / "cnonly")
    ca.issue("forever.internal", not_after=NOW + 825 * DAY).write_pair(base / "forever")
    # leaf copied into a trust store
    trust = inter.issue("pinned.internal")
    (base / "clients").mkdir()
    (base / "clients" / "truststore.pem").write_bytes(ca.pem() + pem(trust.cert))
    # key mismatch: tls.crt and tls.key side by side that do not belong together
    a, b = inter.issue("a.internal"), inter.issue("b.internal")
    a.write_pair(base / "mismatch")
    (base / "mismatch" / "tls.key").write_bytes(private_key_pem(b.key))  # type: ignore[arg-type]
    # missing intermediate (leaf alone) and untrusted chain (foreign CA)
    inter.issue("nochain.internal").write_pair(base / "nochain", chain=False)
    foreign = TestCA("Foreign", intermediates=0)
    foreign.issue("foreign.internal").write_agent_dir(base / "foreign")
    # one key copied to prod and staging, and into a second service
    shared = inter.issue("orders.internal")
    for env in ("prod", "staging"):
        shared.write_pair(base / "envs" / env / "orders")
    p["shared_cert"] = base / "envs" / "prod" / "orders" / "tls.crt"
    return p


def test_every_finding_code(estate: dict[str, Path]) -> None:
    base = estate["base"]
    inv = run_scan(ScanOptions(paths=(str(base),), ca_bundles=(str(estate["ca"]),),
                               environments=(("prod", str(base / "envs" / "prod")),
                                             ("staging", str(base / "envs" / "staging")))))
    found = codes(inv)
    expected = {"self_signed_leaf", "expired", "not_yet_valid", "expiring", "shared_key", "cross_environment",
                "shared_cert", "weak_key", "no_san", "long_validity", "leaf_in_trust_store", "key_unprotected",
                "key_mismatch", "untrusted_chain", "missing_intermediate"}
    assert expected <= set(found), expected - set(found)
    flat = {code: {loc for locs in found[code] for loc in locs} for code in found}
    assert str(estate["unprotected"]) in flat["key_unprotected"]
    assert str(estate["self_signed"]) in flat["self_signed_leaf"]
    assert any("old/tls.crt" in loc for loc in flat["expired"])
    assert any("future/tls.crt" in loc for loc in flat["not_yet_valid"])
    assert any("soon/tls.crt" in loc for loc in flat["expiring"])
    assert any("weak/tls.crt" in loc for loc in flat["weak_key"]) and any("sha1" in loc for loc in flat["weak_key"])
    assert any("cnonly" in loc for loc in flat["no_san"])
    assert any("forever" in loc for loc in flat["long_validity"])
    assert any("clients/truststore.pem" in loc for loc in flat["leaf_in_trust_store"])
    assert {str(base / "mismatch" / "tls.key")} <= flat["key_mismatch"]
    assert any("nochain" in loc for loc in flat["missing_intermediate"])
    assert any("foreign" in loc for loc in flat["untrusted_chain"])
    cross = next(f for f in inv.findings if f.code == "cross_environment")
    assert any("/prod/" in loc for loc in cross.locations) and any("/staging/" in loc for loc in cross.locations)
    for f in inv.findings:
        assert f.detail and f.locations
    # the healthy-looking service with its own key is not flagged as a mismatch
    assert not any("orders" in loc for loc in flat.get("key_mismatch", ()))


def test_expiring_as_percentage_of_lifetime(tmp_path: Path, ca: TestCA) -> None:
    ca.issue("p.internal", not_before=NOW - 20 * DAY, not_after=NOW + 10 * DAY).write_pair(tmp_path)
    absolute = scan(tmp_path, rules=Rules(now=NOW, warn=Threshold(absolute=timedelta(days=5))))
    percent = scan(tmp_path, rules=Rules(now=NOW, warn=Threshold.parse("40%")))
    assert "expiring" not in codes(absolute) and "expiring" in codes(percent)


def test_where_answers_blast_radius(estate: dict[str, Path]) -> None:
    inv = run_scan(ScanOptions(paths=(str(estate["base"]),)))
    target = next(c for c in inv.certificates if c.location.startswith(str(estate["shared_cert"])) and not c.is_ca)
    for query in (target.fingerprint, target.spki):
        answer = where(inv, query)
        assert len([loc for loc in answer["locations"] if "orders/tls.crt" in loc]) == 2
        assert len([k for k in answer["keys"] if k["location"].endswith("orders/tls.key")]) == 2
        assert str(estate["ca"]) in answer["trusted_by"]


# ------------------------------------------------------------------ outputs and exit status

def test_cli_json_csv_prometheus_and_exit(estate: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    base = str(estate["base"])
    assert main(["scan", base, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    keys = {"location", "subject", "issuer", "sans", "not_before", "not_after", "serial", "fingerprint_sha256",
            "spki_sha256", "self_signed", "is_ca", "environment"}
    assert keys <= set(doc["certificates"][0])
    assert {"code", "severity", "locations", "detail"} <= set(doc["findings"][0])
    severities = [f["severity"] for f in doc["findings"]]
    order = ["critical", "error", "warning", "info"]
    assert severities == sorted(severities, key=order.index), "most severe first"

    assert main(["scan", base, "--format", "csv"]) == 1
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == len(doc["certificates"]) and "fingerprint_sha256" in rows[0]

    assert main(["scan", base, "--format", "prometheus"]) == 1
    prom = capsys.readouterr().out
    assert 'trustyard_certificate_not_after_timestamp_seconds{location="' in prom
    assert 'trustyard_findings{code="expired",severity="error"} ' in prom
    from prometheus_client.parser import text_string_to_metric_families
    assert {f.name for f in text_string_to_metric_families(prom)} >= {
        "trustyard_certificate_not_after_timestamp_seconds", "trustyard_findings"}

    assert main(["scan", base]) == 1
    table = capsys.readouterr().out
    assert table.index("critical") < table.index("error ") < table.index("warning")
    assert main(["scan", str(estate["base"] / "envs"), "--fail-on", "critical"]) == 0
    capsys.readouterr()


def test_cli_where(estate: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    inv = run_scan(ScanOptions(paths=(str(estate["base"]),)))
    fp = next(c.fingerprint for c in inv.certificates if c.location.startswith(str(estate["shared_cert"])))
    assert main(["scan", str(estate["base"]), "--where", fp, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["locations"]) >= 2


# ------------------------------------------------------------------ endpoints

def test_endpoints_record_served_chain_with_sni_and_time_out(tmp_path: Path, ca: TestCA) -> None:
    inter = ca.child("Test Intermediate")
    crt, key = inter.issue("ep.internal").write_pair(tmp_path / "ep")
    servers = [Server(cert=crt, key=key) for _ in range(3)]
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts the TCP connection, never speaks TLS
    try:
        eps = tuple(Endpoint.parse(f"{s.address}/ep.internal") for s in servers)
        eps += (Endpoint.parse(f"127.0.0.1:{silent.getsockname()[1]}"),)
        start = time.monotonic()
        inv = run_scan(ScanOptions(endpoints=eps, timeout=1.0))
        assert time.monotonic() - start < 3, "endpoints are probed concurrently with a timeout"
    finally:
        for s in servers:
            s.close()
        silent.close()
    served = [c for c in inv.certificates if c.served]
    assert len(served) == 6  # leaf + intermediate from each of 3 servers
    assert {c.location for c in served if c.position == 0} == {f"tls://{e}" for e in eps[:3]}
    assert len(inv.errors) == 1 and "timed out" in inv.errors[0].detail
    assert any(f.code == "shared_cert" for f in inv.findings)


def test_endpoint_parse() -> None:
    assert Endpoint.parse("api:8443/api.internal") == Endpoint("api", 8443, "api.internal")
    assert Endpoint.parse("[::1]:443") == Endpoint("::1", 443, None)
    with pytest.raises(ValueError):
        Endpoint.parse("api:http")


def test_a_pem_file_that_spells_kind_is_not_taken_for_a_manifest(tmp_path: Path, ca: TestCA) -> None:
    """"-----BEGIN" starts with YAML's "---": a PEM bundle with "kind" in its first 4 KB (its base64
    spells it in about one file of 4,000; here a comment) was read as a manifest, and its
    certificates silently lost (seen in bench/scan's 300,000-certificate estate)."""
    leaf = ca.issue("kind.internal")
    (tmp_path / "certs.pem").write_bytes(pem(leaf.cert) + b"# the kind of bundle nginx wants\n")
    inv = scan(tmp_path)
    assert [c.location for c in inv.certificates] == [str(tmp_path / "certs.pem")]  # type: ignore[attr-defined]
