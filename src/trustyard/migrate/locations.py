"""Client trust locations in their own formats: read the certificates they trust, add the CA
root next to what is there, remove the old self-signed copy. Bytes in, bytes out; every other
entry, alias, key and password is kept. A location that cannot be opened is a ``BadRequest``
naming it (wrong password, corrupt, not a Kubernetes object), before anything is written.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, Encoding, NoEncryption, pkcs12

from ..errors import BadRequest, Code
from ..x509.summary import fingerprint_sha256
from ..x509.truststore import alias as entry_alias
from .plan import Location

_PEM_CERT = re.compile(rb"-----BEGIN (TRUSTED |X509 )?CERTIFICATE-----\r?\n.*?"
                       rb"-----END (TRUSTED |X509 )?CERTIFICATE-----\r?\n?", re.S)
ALIAS_PREFIX = "trustyard-"


def _fail(loc: Location, why: str) -> BadRequest:
    return BadRequest(f"{loc.name}: {why}", code=Code.MIGRATE_LOCATION, location=loc.name)


def _fp(cert: x509.Certificate) -> str:
    return fingerprint_sha256(cert).replace(":", "").lower()


# -- PEM ------------------------------------------------------------------------------------------

def _pem_certs(data: bytes) -> list[x509.Certificate]:
    out = []
    for m in _PEM_CERT.finditer(data):
        block = re.sub(rb"(TRUSTED |X509 )CERTIFICATE", b"CERTIFICATE", m.group(0))
        out.append(x509.load_pem_x509_certificate(block))
    return out


def _pem_add(data: bytes, certs: Sequence[x509.Certificate]) -> bytes:
    have = {_fp(c) for c in _pem_certs(data)}
    extra = b"".join(c.public_bytes(Encoding.PEM) for c in certs if _fp(c) not in have)
    if not extra:
        return data
    return data + (b"" if not data or data.endswith(b"\n") else b"\n") + extra


def _pem_remove(data: bytes, fingerprint: str) -> bytes:
    def keep(m: re.Match[bytes]) -> bytes:
        block = re.sub(rb"(TRUSTED |X509 )CERTIFICATE", b"CERTIFICATE", m.group(0))
        return b"" if _fp(x509.load_pem_x509_certificate(block)) == fingerprint else m.group(0)

    return _PEM_CERT.sub(keep, data)


# -- JKS (pyjks) ---------------------------------------------------------------------------------

def _jks_open(loc: Location, data: bytes, password: str) -> Any:
    import jks

    try:
        return jks.KeyStore.loads(data, password, try_decrypt_keys=False)
    except jks.util.KeystoreSignatureException:
        raise _fail(loc, "wrong keystore password (give --password-file LOCATION=FILE)") from None
    except Exception as exc:
        raise _fail(loc, f"not a readable Java keystore: {type(exc).__name__}: {exc}") from None


def _jks_certs(store: Any) -> list[x509.Certificate]:
    return [x509.load_der_x509_certificate(e.cert) for e in store.certs.values()]


def _jks_add(loc: Location, data: bytes, certs: Sequence[x509.Certificate], password: str) -> bytes:
    import jks

    store = _jks_open(loc, data, password)
    have = {_fp(c) for c in _jks_certs(store)}
    for cert in certs:
        if _fp(cert) in have:
            continue
        name = ALIAS_PREFIX + entry_alias(cert)
        store.entries[name] = jks.TrustedCertEntry.new(name, cert.public_bytes(Encoding.DER))
    return bytes(store.saves(password))


def _jks_remove(loc: Location, data: bytes, fingerprint: str, password: str) -> bytes:
    store = _jks_open(loc, data, password)
    for name, entry in list(store.certs.items()):
        if _fp(x509.load_der_x509_certificate(entry.cert)) == fingerprint:
            del store.entries[name]
    return bytes(store.saves(password))


# -- PKCS#12 (cryptography) -----------------------------------------------------------------------

def _p12_open(loc: Location, data: bytes, password: str) -> pkcs12.PKCS12KeyAndCertificates:
    try:
        return pkcs12.load_pkcs12(data, password.encode() or None)
    except (ValueError, TypeError):
        raise _fail(loc, "wrong keystore password, or not a PKCS#12 file (give --password-file LOCATION=FILE)") \
            from None


def _p12_certs(p12: pkcs12.PKCS12KeyAndCertificates) -> list[x509.Certificate]:
    return [c.certificate for c in ([p12.cert] if p12.cert else []) + list(p12.additional_certs)]


def _p12_save(p12: pkcs12.PKCS12KeyAndCertificates, extra: list[pkcs12.PKCS12Certificate], drop: str | None,
              password: str) -> bytes:
    enc = BestAvailableEncryption(password.encode()) if password else NoEncryption()
    others = [c for c in p12.additional_certs if drop is None or _fp(c.certificate) != drop] + extra
    if p12.key is None:
        entries = ([p12.cert] if p12.cert and (drop is None or _fp(p12.cert.certificate) != drop) else []) + others
        if not entries:
            raise ValueError("a truststore must keep at least one certificate")
        return pkcs12.serialize_java_truststore(entries, enc)
    name = p12.cert.friendly_name if p12.cert else None
    return pkcs12.serialize_key_and_certificates(name, p12.key, p12.cert.certificate if p12.cert else None,  # type: ignore[arg-type]
                                                 others or None, enc)


def _p12_add(loc: Location, data: bytes, certs: Sequence[x509.Certificate], password: str) -> bytes:
    p12 = _p12_open(loc, data, password)
    have = {_fp(c) for c in _p12_certs(p12)}
    extra = [pkcs12.PKCS12Certificate(c, (ALIAS_PREFIX + entry_alias(c)).encode()) for c in certs if _fp(c) not in have]
    return _p12_save(p12, extra, None, password) if extra else data


def _p12_remove(loc: Location, data: bytes, fingerprint: str, password: str) -> bytes:
    p12 = _p12_open(loc, data, password)
    if fingerprint not in {_fp(c) for c in _p12_certs(p12)}:
        return data
    try:
        return _p12_save(p12, [], fingerprint, password)
    except ValueError as exc:
        raise _fail(loc, str(exc)) from None


# -- Kubernetes manifests ------------------------------------------------------------------------

def _manifest_docs(loc: Location, data: bytes) -> list[Any]:
    try:
        docs = list(yaml.safe_load_all(data))
    except yaml.YAMLError as exc:
        raise _fail(loc, f"not YAML: {exc}") from None
    return docs


def _objects(doc: Any) -> list[dict[str, Any]]:
    if not isinstance(doc, dict):
        return []
    if isinstance(doc.get("items"), list):
        return [o for item in doc["items"] for o in _objects(item)]
    return [doc]


def _member(loc: Location, docs: list[Any]) -> tuple[dict[str, Any], str, str]:
    """The mapping holding the member's value, its key, and how it is encoded (b64 or text)."""
    kind, _, rest = loc.member.partition("/")
    namespace, _, rest = rest.partition("/")
    name, _, key = rest.partition("/")
    for doc in docs:
        for obj in _objects(doc):
            found = obj.get("metadata")
            meta: dict[str, Any] = found if isinstance(found, dict) else {}
            if obj.get("kind") != kind or meta.get("namespace", "default") != namespace or meta.get("name") != name:
                continue
            if not obj.get("apiVersion"):
                raise _fail(loc, "not a Kubernetes object (no apiVersion)")
            for section, encoding in (("data", "b64" if kind == "Secret" else "text"), ("stringData", "text"),
                                      ("binaryData", "b64")):
                values = obj.get(section)
                if isinstance(values, dict) and key in values:
                    return values, str(key), encoding
    raise _fail(loc, f"the manifest no longer has {loc.member} (a Kubernetes {kind} with that key)")


def _manifest_edit(loc: Location, data: bytes, change: Callable[[bytes], bytes]) -> bytes:
    docs = _manifest_docs(loc, data)
    values, key, encoding = _member(loc, docs)
    raw = values[key]
    try:
        blob = base64.b64decode(raw, validate=False) if encoding == "b64" else str(raw).encode()
    except (binascii.Error, ValueError):
        raise _fail(loc, "the value is not base64") from None
    new = change(blob)
    if new == blob:
        return data
    values[key] = base64.b64encode(new).decode() if encoding == "b64" else new.decode()
    return yaml.dump_all(docs, Dumper=_BlockDumper, sort_keys=False, width=1 << 16).encode()


def _manifest_certs(loc: Location, data: bytes) -> list[x509.Certificate]:
    values, key, encoding = _member(loc, _manifest_docs(loc, data))
    raw = values[key]
    return _pem_certs(base64.b64decode(raw) if encoding == "b64" else str(raw).encode())


class _BlockDumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_BlockDumper.add_representer(str, _str)


# -- the three operations ------------------------------------------------------------------------

def _by_format(loc: Location, doing: str, ops: dict[str, Callable[[], Any]]) -> Any:
    """Run the operation for ``loc``'s format; any failure but our own is a ``BadRequest`` naming
    the location and what was being done (``read``, ``rewrite``)."""
    op = ops.get(loc.kind)
    if op is None:
        raise _fail(loc, f"unsupported location format {loc.kind!r}")
    try:
        return op()
    except BadRequest:
        raise
    except Exception as exc:
        raise _fail(loc, f"cannot {doing}: {type(exc).__name__}: {exc}") from None


def trusted_certs(loc: Location, data: bytes, password: str) -> list[x509.Certificate]:
    """What a client reading this location trusts."""
    return _by_format(loc, "read", {
        "pem": lambda: _pem_certs(data),
        "jks": lambda: _jks_certs(_jks_open(loc, data, password)),
        "p12": lambda: _p12_certs(_p12_open(loc, data, password)),
        "manifest": lambda: _manifest_certs(loc, data),
    })


def add_anchors(loc: Location, data: bytes, certs: Sequence[x509.Certificate], password: str) -> bytes:
    return _by_format(loc, "rewrite", {
        "pem": lambda: _pem_add(data, certs),
        "jks": lambda: _jks_add(loc, data, certs, password),
        "p12": lambda: _p12_add(loc, data, certs, password),
        "manifest": lambda: _manifest_edit(loc, data, lambda blob: _pem_add(blob, certs)),
    })


def remove_cert(loc: Location, data: bytes, fingerprint: str, password: str) -> bytes:
    fingerprint = fingerprint.replace(":", "").lower()
    return _by_format(loc, "rewrite", {
        "pem": lambda: _pem_remove(data, fingerprint),
        "jks": lambda: _jks_remove(loc, data, fingerprint, password),
        "p12": lambda: _p12_remove(loc, data, fingerprint, password),
        "manifest": lambda: _manifest_edit(loc, data, lambda blob: _pem_remove(blob, fingerprint)),
    })
