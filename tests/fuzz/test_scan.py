"""What ``trustyard scan`` reads (PEM, DER, PKCS#7, PKCS#12, JKS, Kubernetes manifests).

A scan walks thousands of files nobody vetted: one hostile file becomes a ``ReadError`` in the
report, never an exception. The property covers the whole path of a file: ``read_file``, the
findings (``evaluate``, with anchors so chains are judged too) and the JSON report. Seeds are
real files of every format, with bytes flipped, cut and inserted.
"""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jks
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from hypothesis import example, given
from hypothesis import strategies as st

from trustyard.inventory import judge
from trustyard.inventory.findings import Rules, evaluate
from trustyard.inventory.ledger import Ledger
from trustyard.inventory.ledger_report import Streamed, write_json
from trustyard.inventory.model import Inventory
from trustyard.inventory.report import to_json
from trustyard.inventory.sources import ReadOptions, read_file
from trustyard.x509.keys import KeyType, generate_private_key, signature_hash

from .strategies import budget, json_values, mutated, pem_of

NOW = datetime.now(UTC)
ROOT_KEY = generate_private_key(KeyType.EC_P256)
LEAF_KEY = generate_private_key(KeyType.EC_P256)
RSA_KEY = generate_private_key(KeyType.RSA_2048)


def _cert(subject: str, key, issuer_key, issuer: str, ca: bool, sans: list[str] = ()) -> x509.Certificate:  # type: ignore[no-untyped-def,assignment]
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, issuer)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                              critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
    return builder.sign(issuer_key, signature_hash(issuer_key))


ROOT = _cert("fuzz root", ROOT_KEY, ROOT_KEY, "fuzz root", True)
LEAF = _cert("web.internal", LEAF_KEY, ROOT_KEY, "fuzz root", False, ["web.internal"])
SELF = _cert("self.internal", RSA_KEY, RSA_KEY, "self.internal", False, ["self.internal"])
PEM, DER = serialization.Encoding.PEM, serialization.Encoding.DER


def _key_pem(key, password: bytes | None = None) -> bytes:  # type: ignore[no-untyped-def]
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, encryption)


def _jks() -> bytes:
    pkcs8 = LEAF_KEY.private_bytes(DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    store = jks.KeyStore.new("jks", [jks.PrivateKeyEntry.new("app", [LEAF.public_bytes(DER), ROOT.public_bytes(DER)],
                                                             pkcs8),
                                     jks.TrustedCertEntry.new("root", ROOT.public_bytes(DER))])
    return store.saves("changeit")


def _manifest() -> bytes:
    b64 = lambda data: base64.b64encode(data).decode()
    docs = [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "web", "namespace": "prod"},
             "data": {"tls.crt": b64(LEAF.public_bytes(PEM)), "tls.key": b64(_key_pem(LEAF_KEY)),
                      "ca.crt": b64(ROOT.public_bytes(PEM))}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "trust"},
             "data": {"bundle.pem": ROOT.public_bytes(PEM).decode()},
             "binaryData": {"root.der": b64(ROOT.public_bytes(DER))}}]
    return yaml.safe_dump_all(docs).encode()


SEEDS: dict[str, bytes] = {
    "tls.crt": LEAF.public_bytes(PEM) + ROOT.public_bytes(PEM),
    "tls.key": _key_pem(LEAF_KEY),
    "locked.key": _key_pem(RSA_KEY, b"changeit"),
    "self.pem": SELF.public_bytes(PEM) + _key_pem(RSA_KEY),
    "root.der": ROOT.public_bytes(DER),
    "key.der": LEAF_KEY.private_bytes(DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    "chain.p7b": pkcs7.serialize_certificates([LEAF, ROOT], PEM),
    "chain.p7c": pkcs7.serialize_certificates([LEAF, ROOT], DER),
    "id.p12": pkcs12.serialize_key_and_certificates(b"web", LEAF_KEY, LEAF, [ROOT], serialization.NoEncryption()),
    "locked.p12": pkcs12.serialize_key_and_certificates(b"web", RSA_KEY, SELF, None,
                                                         serialization.BestAvailableEncryption(b"changeit")),
    "keystore.jks": _jks(),
    "secrets.yaml": _manifest(),
    "secrets.json": json.dumps({"kind": "List", "items": list(yaml.safe_load_all(_manifest()))}).encode(),
}


def _scan_one(tmp_path: Path, name: str, data: bytes) -> Inventory:
    path = tmp_path / name
    path.write_bytes(data)
    inv = read_file(path, ReadOptions(passwords=(b"", b"changeit")))  # must not raise
    rules = Rules(now=NOW, anchors=(ROOT,))
    inv.findings = evaluate(inv, rules)
    json.dumps(inv.to_json())
    with Ledger() as ledger:  # the streamed scan's path: the same findings and JSON from its ledger
        ledger.add(inv)
        streamed = Streamed(ledger, judge.evaluate(ledger, rules, inv.insecure), errors=inv.errors)
        out = io.StringIO()
        write_json(streamed, out)
        assert streamed.findings == inv.findings
        assert out.getvalue() == to_json(inv)
    return inv


def test_every_seed_reads_cleanly(tmp_path: Path) -> None:
    """The fuzzer starts from files the scanner fully understands."""
    for name, data in SEEDS.items():
        inv = _scan_one(tmp_path, name, data)
        assert not inv.errors and (inv.certificates or inv.keys), (name, inv.errors)


@budget(350)
@given(st.sampled_from(sorted(SEEDS)).flatmap(lambda n: st.tuples(st.just(n), mutated(SEEDS[n]))))
def test_mutated_files_become_read_errors_never_exceptions(tmp_path: Path, named: tuple[str, bytes]) -> None:
    _scan_one(tmp_path, *named)


@budget(100)
@given(st.sampled_from(sorted(SEEDS)), st.binary(max_size=300))
def test_random_bytes_under_any_name_never_raise(tmp_path: Path, name: str, data: bytes) -> None:
    _scan_one(tmp_path, name, data)


_OUR_BUGS = ("AttributeError", "TypeError", "KeyError", "IndexError", "UnboundLocalError", "NameError")
_MANIFEST_DOCS = list(yaml.safe_load_all(_manifest()))
_hostile = st.one_of(st.sampled_from([None, 5, "x", [], ["x"], [{"a": 1}], {"a": 5}, {"a": None}, {"a": "!!"},
                                      {"a": ["LS0tLS1CRUdJT"]}, {"namespace": ["x"]}, True,
                                      {7: base64.b64encode(ROOT.public_bytes(PEM)).decode()}]), json_values)


@st.composite
def hostile_docs(draw: st.DrawFn) -> object:
    doc = dict(draw(st.sampled_from(_MANIFEST_DOCS)))
    for key in draw(st.lists(st.sampled_from(["metadata", "data", "stringData", "binaryData", "items", "kind"]),
                             min_size=1, max_size=2, unique=True)):
        doc[key] = draw(_hostile)
    return doc


@budget(100)
@given(st.lists(hostile_docs(), min_size=1, max_size=3), st.booleans())
@example([{**_MANIFEST_DOCS[0], "metadata": ["x"]}], False)
@example([{**_MANIFEST_DOCS[0], "stringData": 5}], False)
@example([{**_MANIFEST_DOCS[1], "binaryData": {"a": "!!!"}}], False)
@example([{**_MANIFEST_DOCS[0], "items": "abc"}], True)
@example([{**_MANIFEST_DOCS[0], "data": {1: base64.b64encode(ROOT.public_bytes(PEM)).decode()}}], False)
def test_hostile_kubernetes_manifests_are_read_or_reported(tmp_path: Path, docs: list, as_json: bool) -> None:  # type: ignore[type-arg]
    """Well-formed YAML/JSON of the wrong shape (metadata a list, data a number, items a string)
    is the scanner's own parsing: it is skipped or reported by name, it does not die inside our code."""
    data = json.dumps({"kind": "List", "items": docs}).encode() if as_json else yaml.safe_dump_all(docs).encode()
    inv = _scan_one(tmp_path, "secrets.json" if as_json else "secrets.yaml", data)
    crashes = [e.detail for e in inv.errors if e.detail.startswith("cannot parse: ")
               and e.detail.split(":")[1].strip() in _OUR_BUGS]
    assert not crashes, crashes


# prime256v1's OID with its last arc changed: a certificate that parses but whose key cryptography cannot load
BAD_CURVE = ROOT.public_bytes(DER).replace(bytes.fromhex("2a8648ce3d030107"), bytes.fromhex("2a8648ce3d030108"))


def test_an_unreadable_certificate_is_reported_and_its_neighbours_kept(tmp_path: Path) -> None:
    inv = _scan_one(tmp_path, "bundle.pem", pem_of("CERTIFICATE", BAD_CURVE) + LEAF.public_bytes(PEM))
    assert [c.cert for c in inv.certificates] == [LEAF]
    assert len(inv.errors) == 1 and "UnsupportedAlgorithm" in inv.errors[0].detail


@budget(150)
@given(st.sampled_from(["tls.crt", "root.der", "self.pem", "chain.p7b"]).flatmap(
    lambda n: st.tuples(st.just(n), mutated(SEEDS[n]))), st.booleans())
@example(("root.der", BAD_CURVE), False)
@example(("root.der", BAD_CURVE), True)
def test_inspect_of_a_mutated_certificate_file_answers_or_says_why(tmp_path: Path, named: tuple[str, bytes],
                                                                   as_json: bool) -> None:
    """``trustyard inspect FILE``: a summary (exit 0) or one clear error line (exit 1), no traceback."""
    from trustyard.cli import main

    path = tmp_path / named[0]
    path.write_bytes(named[1])
    assert main(["inspect", str(path), *(["--json"] if as_json else [])]) in (0, 1)
