"""One scan -> the boundaries to migrate, ordered by risk.

A boundary is one server identity, by SPKI: the endpoint that serves it and the files that
hold its certificate and key, plus every client location holding a copy of its certificate
(PEM bundles, JKS and PKCS#12 truststores, Kubernetes Secret/ConfigMap manifests) and the
``verification_disabled`` findings whose host is one of its names. Only self-signed service
certificates make boundaries: those are what the migration replaces.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..errors import BadRequest, Code
from ..inventory.model import CertItem, Finding, Inventory
from ..inventory.roles import hostname_cn, stem, unit
from ..x509.names import name_text

INSECURE_CODE = "verification_disabled"
ID_DIGITS = 10
_JKS_MAGIC = (b"\xfe\xed\xfe\xed", b"\xce\xce\xce\xce")
_MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
_PROD = re.compile(r"^(prod|production|prd|live)([-_.].*)?$", re.I)


@dataclass
class Location:
    """A client trust location: a file, and in a manifest the object's key (``Secret/ns/name/key``)."""

    path: str
    kind: str  # pem | jks | p12 | manifest
    member: str = ""
    environment: str | None = None

    @property
    def name(self) -> str:
        return f"{self.path}#{self.member}" if self.member else self.path


@dataclass
class Insecure:
    """A place where a client switched verification off for one of the boundary's hosts."""

    file: str
    host: str
    line: int | None = None
    construct: str = ""
    language: str = ""

    @property
    def name(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass
class Boundary:
    id: str
    spki: str
    fingerprint: str  # the self-signed certificate's SHA-256
    names: list[str]
    endpoint: str | None
    environment: str | None
    cert_files: list[str]
    key_files: list[str]
    clients: list[Location]
    insecure: list[Insecure] = field(default_factory=list)
    checksums: dict[str, str] = field(default_factory=dict)  # every file the steps touch, at plan time
    old_cert_pem: str = ""
    password_files: dict[str, str] = field(default_factory=dict)  # keystore -> the file holding its password
    old_fingerprints: list[str] = field(default_factory=list)  # every self-signed certificate of this key
    roots: list[str] = field(default_factory=list)  # the scanned paths (absolute) the locations were found under

    @property
    def production(self) -> bool:
        return bool(self.environment and _PROD.match(self.environment))

    def risk(self) -> tuple[int, int, int, str]:
        """Fewest client locations first, non-production before production, no disabled
        verification before some."""
        return (len(self.clients), int(self.production), int(bool(self.insecure)), self.id)

    def new_files(self) -> tuple[str, str]:
        """Where ``issued`` writes the CA certificate and key: beside the old ones."""
        cert = Path(self.cert_files[0])
        key = Path(self.key_files[0]) if self.key_files else cert
        return str(cert.with_name(f"trustyard-{cert.name}")), str(key.with_name(f"trustyard-{key.name}"))

    def to_json(self) -> dict[str, Any]:
        """``asdict`` by hand: its deep copy was a fifth of a large plan's time."""
        doc = {k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
               for k, v in vars(self).items()}
        doc["clients"] = [dict(vars(c)) for c in self.clients]
        doc["insecure"] = [dict(vars(i)) for i in self.insecure]
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Boundary:
        doc = dict(doc)
        doc["clients"] = [Location(**c) for c in doc.get("clients", [])]
        doc["insecure"] = [Insecure(**i) for i in doc.get("insecure", [])]
        return cls(**doc)

    def touches(self) -> dict[str, list[str]]:
        """Per step, exactly which files and endpoints it touches."""
        new_cert, new_key = self.new_files()
        ep = [f"endpoint {self.endpoint}"] if self.endpoint else ["endpoint: none found (re-plan with --endpoint)"]
        return {
            "issued": [f"write {new_cert}", f"write {new_key}"],
            "trusted": [f"add the CA root to {c.name}" for c in self.clients],
            "switched": [f"replace {p}" for p in dict.fromkeys(self.cert_files + self.key_files)]
                        + [f"probe {e}" for e in ep],
            "verified": [f"handshake with {c.name}'s trust only" for c in self.clients] + ep
                        + [f"needs fixing: {i.name} (verification off for {i.host})" for i in self.insecure],
            "retired": [f"remove the self-signed copy from {c.name}" for c in self.clients],
            "done": [],
        }


def file_of(location: str) -> str:
    return os.path.abspath(location.split("#", 1)[0])


def sha256_file(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def kind_of(path: str, data: bytes | None = None) -> str:
    data = Path(path).read_bytes() if data is None else data
    if data[:4] in _JKS_MAGIC:
        return "jks"
    if path.lower().endswith(_MANIFEST_SUFFIXES) or data.lstrip()[:10].startswith((b"apiVersion", b"kind")):
        return "manifest"
    if b"-----BEGIN" in data:
        return "pem"
    return "p12" if data[:1] == b"\x30" else "unknown"


def names_of(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    out = [name_text(n) for n in san if isinstance(n, x509.DNSName | x509.IPAddress)] if san else []
    if not out:
        cn = hostname_cn(cert)
        out = [cn] if cn else []
    return [n.removeprefix("DNS:").removeprefix("IP:") for n in out]


def host_matches(host: str, names: Sequence[str]) -> bool:
    """``host`` (perhaps a URL or host:port) is one of ``names`` (wildcards cover one label)."""
    text = re.sub(r"^[a-z][a-z0-9+.-]*://", "", host.strip().lower()).split("/", 1)[0]
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    text = text.rstrip(".")
    for name in names:
        n = name.lower().rstrip(".")
        if n == text:
            return True
        if n.startswith("*.") and "." in text and text.split(".", 1)[1] == n[2:]:
            return True
    return False


def insecure_findings(findings: Iterable[Finding | dict[str, Any]]) -> list[Insecure]:
    """The ``verification_disabled`` findings of a scan, by their code and ``host`` (or ``target``) field;
    one naming no host cannot be tied to a boundary and is left out."""
    out = []
    for f in findings:
        doc = f if isinstance(f, dict) else {**f.to_json(), **{k: getattr(f, k) for k in
                                                              ("host", "file", "line", "construct", "language")
                                                              if hasattr(f, k)}}
        host = doc.get("host") or doc.get("target")  # the scan's finder calls it target: a host or URL
        if doc.get("code") != INSECURE_CODE or not host:
            continue
        where = str((doc.get("locations") or [""])[0])
        at = re.fullmatch(r"(.*?):(\d+)(?::\d+)?", where)  # file:line[:column]
        file = doc.get("file") or (at.group(1) if at else where)
        line = doc.get("line") or (int(at.group(2)) if at else None)
        out.append(Insecure(file=str(file), host=str(host), line=line,
                            construct=str(doc.get("construct") or ""), language=str(doc.get("language") or "")))
    return out


def build(inv: Inventory, extra_findings: Iterable[Finding | dict[str, Any]] = ()) -> list[Boundary]:
    """The boundaries of one scan, in risk order."""
    insecure = insecure_findings([*inv.findings, *extra_findings])
    keyed: dict[str, list[str]] = {}  # SPKI -> key locations
    for k in inv.keys:
        if k.spki:
            keyed.setdefault(k.spki, []).append(k.location)
    read: dict[str, bytes | None] = {}  # each file once: its kind and its checksum come from the same bytes

    def content(path: str) -> bytes | None:
        if path not in read:
            try:
                read[path] = Path(path).read_bytes()
            except FileNotFoundError:
                read[path] = None
        return read[path]

    by_spki: dict[str, list[CertItem]] = {}
    per_file: dict[str, int] = {}
    for c in inv.certificates:
        by_spki.setdefault(c.spki, []).append(c)
        if not c.served:
            per_file[file_of(c.location)] = per_file.get(file_of(c.location), 0) + 1
    out = []
    for spki, items in by_spki.items():
        servers = [c for c in items if c.leaf_self_signed and (c.served or spki in keyed)]
        if not servers:
            continue
        cert = servers[0].cert
        key_units = {unit(file_of(k)) for k in keyed.get(spki, []) if "#" not in k}
        key_files = sorted({file_of(k) for k in keyed.get(spki, [])})
        endpoint = next((c.location.removeprefix("tls://").split("#")[0] for c in items if c.served
                         and c.position == 0), None)
        olds = sorted({c.fingerprint for c in items if c.self_signed})  # a re-made self-signed cert, same key
        cert_files, clients = [], []
        for c in items:
            if c.served or c.fingerprint not in olds:
                continue
            path = file_of(c.location)
            if unit(path) in key_units or c.group in keyed.get(spki, []):
                cert_files.append(path)
                continue
            data = content(path)
            kind = kind_of(path, data) if data is not None else kind_of(path)
            member = c.location.split("#", 1)[1] if kind == "manifest" and "#" in c.location else ""
            if kind == "manifest":
                member = re.sub(r"#\d+$", "", member)
            clients.append(Location(path, kind, member, c.environment))
        if not cert_files:  # certs/NAME.pem beside private/NAME.key: the key's name, one certificate alone
            key_names = {stem(file_of(k))[1] for k in keyed.get(spki, []) if "#" not in k}
            for loc in list(clients):
                if loc.kind == "pem" and stem(loc.path)[1] in key_names and per_file.get(loc.path) == 1:
                    clients.remove(loc)
                    cert_files.append(loc.path)
        clients = list({c.name: c for c in clients}.values())
        if not cert_files and not endpoint:
            continue
        names = names_of(cert)
        env = next((c.environment for c in items if c.environment), None)
        b = Boundary(
            id=spki[:ID_DIGITS], spki=spki, fingerprint=servers[0].fingerprint, old_fingerprints=olds,
            names=names, endpoint=endpoint,
            environment=env, cert_files=sorted(set(cert_files)), key_files=key_files, clients=clients,
            insecure=[i for i in insecure if host_matches(i.host, names)],
            old_cert_pem=cert.public_bytes(Encoding.PEM).decode(),
        )
        for path in dict.fromkeys(b.cert_files + b.key_files + [c.path for c in clients]):
            data = content(path)
            if data is not None:
                b.checksums[path] = hashlib.sha256(data).hexdigest()
                read.pop(path)  # most files belong to one boundary: free them (another reads it again)
        out.append(b)
    return sorted(out, key=Boundary.risk)


def excluded(path: str, globs: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(path, g) or fnmatch.fnmatch(path, os.path.abspath(g)) for g in globs)


def exclude(inv: Inventory, globs: Sequence[str]) -> None:
    """Leave out every certificate, key and read error in files matching one of ``globs``
    (``fnmatch`` on the absolute path): what the operator said is not part of the migration."""
    if not globs:
        return

    def kept(location: str) -> bool:
        return location.startswith("tls://") or not excluded(file_of(location), globs)

    inv.certificates = [c for c in inv.certificates if kept(c.location)]
    inv.keys = [k for k in inv.keys if kept(k.location)]
    inv.errors = [e for e in inv.errors if kept(e.location)]


def refuse_unreadable(inv: Inventory, paths: Sequence[str], globs: Sequence[str] = ()) -> None:
    """Locations the plan cannot stand on: keystores no password opens, corrupt files, and
    manifests holding PEM that are not Kubernetes objects. Nothing is saved while any remains."""
    problems = [f"{e.location}: {e.detail}" for e in inv.errors]
    seen = {file_of(c.location) for c in inv.certificates}
    for root in paths:
        base = Path(root)
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for p in files:
            if p.suffix.lower() not in _MANIFEST_SUFFIXES or os.path.abspath(p) in seen:
                continue
            if excluded(os.path.abspath(p), globs):
                continue
            try:
                data = p.read_bytes()
            except OSError:
                continue
            if b"-----BEGIN CERTIFICATE" in data or b"LS0tLS1CRUdJTiBDRVJUSUZJQ0FU" in data:
                problems.append(f"{p}: holds a certificate but is not a Kubernetes Secret or ConfigMap "
                                "(apiVersion, kind, metadata, data)")
    if problems:
        raise BadRequest("cannot plan over unreadable locations (fix them, give --password-file LOCATION=FILE, "
                         "or leave them out with --exclude GLOB):\n  " + "\n  ".join(problems),
                         code=Code.MIGRATE_LOCATION, locations=problems)


def render(boundaries: Sequence[Boundary]) -> str:
    if not boundaries:
        return "no self-signed server identity found: nothing to migrate"
    lines = []
    for n, b in enumerate(boundaries, 1):
        flags = [f"{len(b.clients)} client locations", b.environment or "no environment"]
        if b.insecure:
            flags.append(f"{len(b.insecure)} with verification off")
        lines.append(f"{n}. boundary {b.id}  {', '.join(b.names) or '(no names)'}  [{'; '.join(flags)}]")
        lines.append(f"   endpoint: {b.endpoint or 'none'}   certificate: {', '.join(b.cert_files) or 'none'}"
                     f"   key: {', '.join(b.key_files) or 'none'}")
        for step, touched in b.touches().items():
            if touched:
                lines.append(f"   {step}:")
                lines += [f"     - {t}" for t in touched]
    return "\n".join(lines)
