"""Files and directories -> certificates and keys.

Formats are recognised by content, not by name: PEM (certificates, bundles, keys,
PKCS#7), DER certificates, PKCS#7 and PKCS#12 in DER, Java keystores (JKS/JCEKS via
pyjks; PKCS#12 keystores made by keytool via cryptography), and Kubernetes
Secret/ConfigMap manifests in YAML or JSON. Anything else is skipped after a look at
its first bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import stat
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from cryptography.utils import CryptographyDeprecationWarning

from ..x509.keys import spki_der
from ..x509.summary import spki_sha256
from .model import CertItem, Inventory, KeyItem, ReadError

MAX_FILE_BYTES = 8 * 1024 * 1024
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.S)
_JKS_MAGIC = (b"\xfe\xed\xfe\xed", b"\xce\xce\xce\xce")
_MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
# File names where clients look for trust anchors rather than their own identity.
_TRUST_NAMES = re.compile(r"(^|[-_.])(ca|cacert|cacerts|bundle|trust|truststore|roots?|anchors?)([-_.]|$)", re.I)
DEFAULT_PASSWORDS: tuple[bytes, ...] = (b"", b"changeit")


@dataclass(frozen=True)
class ReadOptions:
    passwords: tuple[bytes, ...] = DEFAULT_PASSWORDS
    environment: str | None = None
    trust_store: bool = False  # force: every cert read is an anchor (the --ca bundles)


def spki_of_key(key: Any) -> str:
    return hashlib.sha256(spki_der(key.public_key())).hexdigest()


def iter_files(roots: Iterable[str | os.PathLike[str]], on_error: Callable[[str, str], None],
               seen_files: set[tuple[int, int]] | None = None) -> Iterator[Path]:
    """Every regular file under the roots, following directory symlinks once (by inode).

    ``seen_files`` (device, inode) pairs are skipped and added to, so a file reached
    twice (a symlink, a path given twice, a tree under --env and PATH) is read once."""
    seen_dirs: set[tuple[int, int]] = set()
    seen_files = set() if seen_files is None else seen_files
    for root in roots:
        path = Path(root)
        try:
            st = path.stat()
        except OSError as exc:
            on_error(str(path), exc.strerror or str(exc))
            continue
        if stat.S_ISREG(st.st_mode):
            if (st.st_dev, st.st_ino) not in seen_files:
                seen_files.add((st.st_dev, st.st_ino))
                yield path
            continue
        stack = [path]
        while stack:
            directory = stack.pop()
            try:
                dst = directory.stat()
            except OSError as exc:
                on_error(str(directory), exc.strerror or str(exc))
                continue
            if (dst.st_dev, dst.st_ino) in seen_dirs:
                continue  # a symlink loop, or a second way into a tree already walked
            seen_dirs.add((dst.st_dev, dst.st_ino))
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except OSError as exc:
                on_error(str(directory), exc.strerror or str(exc))
                continue
            subdirs = []
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=True):
                        subdirs.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=True):
                        fst = entry.stat(follow_symlinks=True)
                        if (fst.st_dev, fst.st_ino) not in seen_files:
                            seen_files.add((fst.st_dev, fst.st_ino))
                            yield Path(entry.path)
                    elif entry.is_symlink():
                        on_error(entry.path, "dangling symbolic link")
                except OSError as exc:  # dangling symlink, permission
                    on_error(entry.path, exc.strerror or str(exc))
            stack.extend(reversed(subdirs))


def read_file(path: Path, options: ReadOptions) -> Inventory:
    """Everything in one file; problems become ReadErrors, never exceptions."""
    inv = Inventory()
    location = str(path)
    try:
        st = path.stat()
        if st.st_size > MAX_FILE_BYTES:
            return inv
        data = path.read_bytes()
    except OSError as exc:
        inv.errors.append(ReadError(location, exc.strerror or str(exc)))
        return inv
    trust = options.trust_store or bool(_TRUST_NAMES.search(path.name))
    try:
        with warnings.catch_warnings():  # old certificates in the wild break RFC 5280 rules; still inventory them
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            parse_blob(data, location, location, options, inv, trust=trust, mode=stat.S_IMODE(st.st_mode),
                       manifest=path.suffix.lower() in _MANIFEST_SUFFIXES)
    except Exception as exc:  # one hostile file must not stop a scan of thousands
        inv.errors.append(ReadError(location, f"cannot parse: {type(exc).__name__}: {exc}"))
    return inv


def parse_blob(
    data: bytes, location: str, group: str, options: ReadOptions, inv: Inventory, *,
    trust: bool = False, mode: int | None = None, manifest: bool = False,
) -> None:
    head = data[:64].lstrip()
    if data[:4] in _JKS_MAGIC:
        _read_jks(data, location, options, inv)
    elif manifest or (head.startswith((b"apiVersion", b"kind", b"---", b"{")) and not head.startswith(b"-----BEGIN")
                      and b"kind" in data[:4096]):  # base64 spells "kind" in about one PEM file of 4,000
        if b"-----BEGIN" in data or b"LS0tLS1CRUdJT" in data:  # PEM, plain or base64
            _read_manifest(data, location, options, inv)
    elif b"-----BEGIN" in data:
        _read_pem(data, location, group, options, inv, trust=trust, mode=mode)
    elif data[:1] == b"\x30":
        _read_der(data, location, group, options, inv, trust=trust, mode=mode)


def _add_certs(certs: list[x509.Certificate], location: str, group: str, options: ReadOptions, inv: Inventory,
               trust: bool) -> None:
    for i, cert in enumerate(certs):
        where = location if len(certs) == 1 else f"{location}#{i}"
        try:
            item = CertItem(cert, where, group, environment=options.environment,
                            trust_store=trust or options.trust_store, position=i)
        except Exception as exc:  # e.g. a key on an unsupported curve: report it, keep the file's others
            inv.errors.append(ReadError(where, f"unreadable certificate: {type(exc).__name__}: {exc}"))
            continue
        inv.certificates.append(item)


def _read_pem(data: bytes, location: str, group: str, options: ReadOptions, inv: Inventory, *,
              trust: bool, mode: int | None) -> None:
    certs: list[x509.Certificate] = []
    keys_before = len(inv.keys)
    for match in _PEM_BLOCK.finditer(data):
        label, block = match.group(1), match.group(0)
        if label in (b"CERTIFICATE", b"TRUSTED CERTIFICATE", b"X509 CERTIFICATE"):
            try:
                certs.append(x509.load_pem_x509_certificate(block.replace(b"TRUSTED CERTIFICATE", b"CERTIFICATE")))
            except ValueError as exc:
                inv.errors.append(ReadError(location, f"bad certificate block: {exc}"))
        elif label == b"PKCS7":
            certs.extend(pkcs7.load_pem_pkcs7_certificates(block))
        elif label.endswith(b"PRIVATE KEY"):
            _add_key(block, location, group, options, inv, mode=mode, pem=True)
    # A file holding a private key is an identity, not a trust store, whatever its name.
    has_key = len(inv.keys) > keys_before
    _add_certs(certs, location, group, options, inv, trust and not has_key)


def _add_key(blob: bytes, location: str, group: str, options: ReadOptions, inv: Inventory, *,
             mode: int | None, pem: bool) -> None:
    load = serialization.load_pem_private_key if pem else serialization.load_der_private_key
    encrypted = pem and (b"ENCRYPTED" in blob[:64] or b"Proc-Type: 4,ENCRYPTED" in blob[:200])
    key = None
    if not encrypted:
        try:
            key = load(blob, password=None)
        except TypeError:
            encrypted = True
        except (ValueError, Exception) as exc:  # unsupported or corrupt key
            inv.errors.append(ReadError(location, f"bad private key: {exc}"))
            return
    if encrypted:
        for password in options.passwords:
            if not password:
                continue
            try:
                key = load(blob, password=password)
                break
            except (TypeError, ValueError):
                continue
    spki = spki_of_key(key) if key is not None else None
    from ..x509.keys import describe_key  # here, not at the top: keeps this change apart from others'

    inv.keys.append(KeyItem(location, group, spki, encrypted, mode=mode, environment=options.environment,
                            description=describe_key(key) if key is not None else ""))


def _read_der(data: bytes, location: str, group: str, options: ReadOptions, inv: Inventory, *,
              trust: bool, mode: int | None) -> None:
    try:
        _add_certs([x509.load_der_x509_certificate(data)], location, group, options, inv, trust)
        return
    except ValueError:
        pass
    try:
        _add_certs(pkcs7.load_der_pkcs7_certificates(data), location, group, options, inv, trust)
        return
    except ValueError:
        pass
    try:
        serialization.load_der_private_key(data, password=None)
        _add_key(data, location, group, options, inv, mode=mode, pem=False)
        return
    except (TypeError, ValueError, Exception):
        pass
    _read_pkcs12(data, location, options, inv)


_P12_OPENED_BY: list[bytes | None] = []  # the password that opened the last PKCS#12 file: tried first


def _read_pkcs12(data: bytes, location: str, options: ReadOptions, inv: Inventory) -> None:
    last: Exception | None = None
    candidates = (None, *options.passwords)
    if _P12_OPENED_BY and _P12_OPENED_BY[0] in candidates:  # an estate's stores share a password: each try costs
        candidates = (_P12_OPENED_BY[0], *(p for p in candidates if p != _P12_OPENED_BY[0]))  # a key derivation
    for password in candidates:
        try:
            p12 = pkcs12.load_pkcs12(data, password)
        except (ValueError, TypeError) as exc:
            last = exc
            continue
        _P12_OPENED_BY[:] = [password]
        _add_pkcs12(p12, location, options, inv)
        return
    if last is not None and b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07" in data[:64]:
        inv.errors.append(ReadError(location, "PKCS#12 store: no given password opens it (use --password)"))


def _add_pkcs12(p12: pkcs12.PKCS12KeyAndCertificates, location: str, options: ReadOptions, inv: Inventory) -> None:
    entries: list[tuple[str, x509.Certificate, bool]] = []
    if p12.cert is not None:
        entries.append((_alias(p12.cert, "key"), p12.cert.certificate, False))
    for extra in p12.additional_certs:
        entries.append((_alias(extra, "cert"), extra.certificate, p12.key is None))
    group = location
    if p12.key is not None:
        spki = spki_of_key(p12.key)
        inv.keys.append(KeyItem(f"{location}#{_alias(p12.cert, 'key') if p12.cert else 'key'}", group, spki,
                                encrypted=True, environment=options.environment))
    for i, (alias, cert, trusted) in enumerate(entries):
        inv.certificates.append(CertItem(cert, f"{location}#{alias}#{i}" if len(entries) > 1 else f"{location}#{alias}",
                                         group, environment=options.environment,
                                         trust_store=trusted or options.trust_store, position=i))


def _alias(entry: Any, default: str) -> str:
    name = getattr(entry, "friendly_name", None)
    return name.decode(errors="replace") if name else default


def _read_jks(data: bytes, location: str, options: ReadOptions, inv: Inventory) -> None:
    import jks  # pyjks: imported here so a scan without keystores does not pay for it

    store = None
    for password in options.passwords:
        try:
            store = jks.KeyStore.loads(data, password.decode(errors="replace"), try_decrypt_keys=True)
            break
        except (jks.util.KeystoreSignatureException, jks.util.DecryptionFailureException,
                jks.util.KeystoreException):
            continue
    if store is None:
        inv.errors.append(ReadError(location, "Java keystore: no given password opens it (use --password)"))
        return
    for alias, entry in store.private_keys.items():
        group = f"{location}#{alias}"
        certs = [x509.load_der_x509_certificate(der) for _, der in entry.cert_chain]
        if entry.is_decrypted():
            key = serialization.load_der_private_key(entry.pkey_pkcs8, password=None)
            spki: str | None = spki_of_key(key)
        else:  # a key password we do not know: the entry still holds the key of its certificate
            spki = spki_sha256(certs[0]) if certs else None
        inv.keys.append(KeyItem(group, group, spki, encrypted=True, environment=options.environment))
        for i, cert in enumerate(certs):
            where = group if len(certs) == 1 else f"{group}#{i}"
            inv.certificates.append(CertItem(cert, where, group, environment=options.environment, position=i,
                                             trust_store=options.trust_store))
    for alias, trusted in store.certs.items():
        where = f"{location}#{alias}"
        inv.certificates.append(CertItem(x509.load_der_x509_certificate(trusted.cert), where, where,
                                         environment=options.environment, trust_store=True))


def _read_manifest(data: bytes, location: str, options: ReadOptions, inv: Inventory) -> None:
    import yaml  # JSON is YAML, so one loader reads both

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when there: ten times faster
    for n, doc in enumerate(yaml.load_all(data, Loader=loader)):
        for obj in _k8s_objects(doc):
            kind = obj.get("kind")
            if kind not in ("Secret", "ConfigMap"):
                continue
            meta = _mapping(obj, "metadata")
            name = f"{meta.get('namespace', 'default')}/{meta.get('name', f'doc{n}')}"
            group = f"{location}#{kind}/{name}"
            values: dict[str, bytes] = {}
            for key, value in _mapping(obj, "data").items():
                if not isinstance(value, str):
                    continue
                if kind == "Secret":
                    try:
                        values[key] = base64.b64decode(value, validate=False)
                    except (binascii.Error, ValueError):
                        inv.errors.append(ReadError(f"{group}/{key}", "data is not base64"))
                else:
                    values[key] = value.encode()
            for key, value in _mapping(obj, "stringData").items():
                if isinstance(value, str):
                    values[key] = value.encode()
            for key, value in _mapping(obj, "binaryData").items():
                if isinstance(value, str):
                    try:
                        values[key] = base64.b64decode(value)
                    except (binascii.Error, ValueError):
                        inv.errors.append(ReadError(f"{group}/{key}", "binaryData is not base64"))
            for key, blob in values.items():
                trust = kind == "ConfigMap" or bool(_TRUST_NAMES.search(str(key)))  # YAML keys may be numbers
                parse_blob(blob, f"{group}/{key}", group, options, inv, trust=trust)


def _mapping(obj: dict[str, Any], key: str) -> dict[Any, Any]:
    """A manifest member that should be a mapping; anything else (a hostile or broken
    manifest) counts as empty."""
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def _k8s_objects(doc: Any) -> Iterator[dict[str, Any]]:
    if not isinstance(doc, dict):
        return
    if doc.get("kind") == "List" or isinstance(doc.get("items"), list):
        for item in doc.get("items") or []:
            yield from _k8s_objects(item)
    else:
        yield doc
