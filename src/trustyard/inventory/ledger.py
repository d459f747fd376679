"""The correlation state of a streamed scan: what the findings and the reports need of every
certificate and key, without the parsed certificates.

A scan of a million certificates cannot keep a million ``x509.Certificate`` objects (about
11 KB each with what the rules derive from them). The ledger keeps, per *distinct*
certificate (by SHA-256 fingerprint), one row of facts (names, dates, SPKI, the DER for the
few rules that verify signatures), and per *occurrence* (a certificate at a location) or key
a small row. The rows live in an SQLite database in memory until ``spill_at`` rows, then the
database is copied to a temporary file (deleted on ``close``) and the scan goes on there, so
the memory of a scan is bounded whatever its size. The rules (``judge``) and the reports
(``stream``) read the state back in the order the old in-memory lists had: distinct
certificates by first appearance, occurrences and keys as read.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections import OrderedDict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring_ascii
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from ..x509.chain import weakness
from ..x509.names import name_text
from .fixes import service_name
from .model import CertItem, Inventory, KeyItem
from .roles import ca_only_key_usage, names_a_host, unit

DEFAULT_SPILL_AT = 50_000  # rows (distinct certificates + occurrences + keys) held in memory
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BATCH = 2_000
_LOOKUP = 250  # certificates held for one lookup and insert (parsed, each holds ~5 KB; SQLite's old limit is 999 parameters)
_RECENT = 4_096  # fingerprints remembered without a query: roots and intermediates repeat in every bundle

_SCHEMA = """
CREATE TABLE certs (first INTEGER PRIMARY KEY, fp TEXT UNIQUE, spki TEXT, subject TEXT, issuer TEXT, label TEXT,
                    sans TEXT, nb INTEGER, na INTEGER, serial TEXT, is_ca INTEGER, self_signed INTEGER,
                    host_san INTEGER, named INTEGER, service_name TEXT, weak TEXT, ca_only INTEGER,
                    usage TEXT, service INTEGER, root INTEGER, der BLOB);
CREATE TABLE occ (seq INTEGER PRIMARY KEY, fp TEXT, location TEXT, grp TEXT, env TEXT, trust INTEGER,
                  served INTEGER, position INTEGER, unit TEXT);
CREATE TABLE keys (seq INTEGER PRIMARY KEY, location TEXT, grp TEXT, spki TEXT, encrypted INTEGER,
                   mode INTEGER, env TEXT, description TEXT, unit TEXT);
"""
_INDEXES = """
CREATE INDEX IF NOT EXISTS certs_issuer ON certs (issuer, self_signed);
CREATE INDEX IF NOT EXISTS certs_spki ON certs (spki);
CREATE INDEX IF NOT EXISTS occ_fp ON occ (fp, seq);
CREATE INDEX IF NOT EXISTS occ_grp ON occ (grp, position, seq);
CREATE INDEX IF NOT EXISTS occ_unit ON occ (unit, seq);
CREATE INDEX IF NOT EXISTS keys_grp ON keys (grp, spki);
CREATE INDEX IF NOT EXISTS keys_unit ON keys (unit, seq);
CREATE INDEX IF NOT EXISTS keys_spki ON keys (spki, seq);
"""

FACT_COLUMNS = ("fp, first, spki, subject, issuer, label, sans, nb, na, serial, is_ca, self_signed, host_san, named, "
                "service_name, weak, ca_only, usage, service, root")

# Rows are appended in the order read (``first`` is the row id): inserting by a random
# fingerprint would touch a random page of the whole table for every new certificate.
_INSERT_CERT = f"INSERT INTO certs ({FACT_COLUMNS}, der) VALUES ({', '.join('?' * 21)})"


class Facts(NamedTuple):
    """One distinct certificate: what findings and reports say about it."""

    fp: str
    first: int
    spki: str
    subject: str
    issuer: str
    label: str
    sans: str  # JSON list of name_text
    nb: int  # notBefore, microseconds since the epoch
    na: int
    serial: str
    is_ca: int
    self_signed: int
    host_san: int  # a DNS or IP SAN
    named: int  # names a host (SAN or hostname-like CN): roles.names_a_host
    service_name: str  # what fixes tell to issue
    weak: str  # weakness reasons, ", "-joined
    ca_only: int  # keyUsage allows signing certificates only
    usage: str  # "server" | "client"
    service: int
    root: int

    @property
    def not_before(self) -> datetime:
        return _EPOCH + timedelta(microseconds=self.nb)

    @property
    def not_after(self) -> datetime:
        return _EPOCH + timedelta(microseconds=self.na)

    @property
    def roles(self) -> list[str]:
        out = (["service"] if self.service else []) + (["root"] if self.root else [])
        return out or ["intermediate"]


class Occ(NamedTuple):
    """One certificate at one location."""

    seq: int
    fp: str
    location: str
    group: str
    environment: str | None
    trust_store: int
    served: int
    position: int
    unit: str


OCC_COLUMNS = "o.seq, o.fp, o.location, o.grp, o.env, o.trust, o.served, o.position, o.unit"


def unit_key(location_group: str, served: bool = False) -> str:
    kind, value = unit(location_group, served)
    return f"{kind}\0{value}"


def _micros(when: datetime) -> int:
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _usage(item: CertItem) -> str:
    """A certificate whose EKU allows clientAuth but not serverAuth is judged as a client's."""
    eku = item.extension(x509.ExtendedKeyUsage)
    if eku is not None and ExtendedKeyUsageOID.CLIENT_AUTH in eku and ExtendedKeyUsageOID.SERVER_AUTH not in eku:
        return "client"
    return "server"


def json_strings(texts: list[str]) -> str:
    """``json.dumps`` of a list of strings, without its general machinery."""
    return "[" + ", ".join(map(encode_basestring_ascii, texts)) + "]"


def facts_of(item: CertItem, first: int) -> tuple[Any, ...]:
    """The certs row of a CertItem (its columns in FACT_COLUMNS order, then the DER)."""
    c = item.cert
    sans = item.sans
    return (item.fingerprint, first, item.spki, item.subject_text, item.issuer_text, item.label,
            json_strings([name_text(n) for n in sans]), _micros(c.not_valid_before_utc),
            _micros(c.not_valid_after_utc), format(c.serial_number, "x"), int(item.is_ca), int(item.self_signed),
            int(any(isinstance(n, (x509.DNSName, x509.IPAddress)) for n in sans)), int(names_a_host(item)),
            service_name(item), ", ".join(weakness(c, item.public_key)), int(ca_only_key_usage(item)), _usage(item),
            int(not item.is_ca), int(item.is_ca and item.self_signed), item.der)


class Ledger:
    """Certificates, occurrences and keys of one scan; see the module docstring."""

    def __init__(self, spill_at: int = DEFAULT_SPILL_AT, directory: str | None = None) -> None:
        self.spill_at = spill_at
        self.directory = directory
        self.db = sqlite3.connect(":memory:")
        self.db.executescript(_SCHEMA)
        self.path: str | None = None  # the spill file, once spilled
        self.rows = 0
        self.seq = 0
        self._certs: list[tuple[CertItem, int]] = []  # first occurrences not yet known to be in the table
        self._occ: list[tuple[Any, ...]] = []
        self._keys: list[tuple[Any, ...]] = []
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._indexed = False

    # ------------------------------------------------------------------ writing

    def add(self, part: Inventory) -> None:
        """The certificates and keys of one file (or endpoint); its errors are the caller's."""
        units: dict[tuple[str, bool], str] = {}  # a file's items share a few groups: one unit each
        for item in part.certificates:
            u = units.get((item.group, item.served))
            if u is None:
                u = units[(item.group, item.served)] = unit_key(item.group, item.served)
            self.add_cert(item, u)
        for key in part.keys:
            u = units.get((key.group, False))
            if u is None:
                u = units[(key.group, False)] = unit_key(key.group)
            self.add_key(key, u)

    def add_cert(self, item: CertItem, unit: str | None = None) -> None:
        self.seq += 1
        fp = item.fingerprint
        if fp in self._recent:
            self._recent.move_to_end(fp)
        else:  # a new certificate, or one seen too long ago to be remembered: the flush looks it up
            self._certs.append((item, self.seq))
            if len(self._certs) >= _LOOKUP:
                self._insert_certs(self._certs)
                self._certs = []
            self._recent[fp] = None
            if len(self._recent) > _RECENT:
                self._recent.popitem(last=False)
        self._occ.append((self.seq, fp, item.location, item.group, item.environment, int(item.trust_store),
                          int(item.served), item.position,
                          unit if unit is not None else unit_key(item.group, item.served)))
        if len(self._occ) >= _BATCH:
            self._flush()

    def add_key(self, key: KeyItem, unit: str | None = None) -> None:
        self.seq += 1
        self._keys.append((self.seq, key.location, key.group, key.spki, int(key.encrypted), key.mode,
                           key.environment, key.description, unit if unit is not None else unit_key(key.group)))
        if len(self._keys) >= _BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._certs:
            self._insert_certs(self._certs)
            self._certs = []
        if self._occ:
            self.db.executemany("INSERT INTO occ VALUES (?,?,?,?,?,?,?,?,?)", self._occ)
            self.rows += len(self._occ)
            self._occ = []
        if self._keys:
            self.db.executemany("INSERT INTO keys VALUES (?,?,?,?,?,?,?,?,?)", self._keys)
            self.rows += len(self._keys)
            self._keys = []
        if self.path is None and self.rows > self.spill_at:
            self._spill()

    def _insert_certs(self, pending: list[tuple[CertItem, int]]) -> None:
        """The facts of the pending certificates not in the table yet, in one statement each way
        (the facts are worked out only for those: a certificate's rules cost more than a lookup).
        A fingerprint may be pending twice (certificates seen again can push a pending one out of
        ``_recent``): its first sighting counts."""
        fps = [item.fingerprint for item, _ in pending]
        known = {r[0] for r in self.db.execute(f"SELECT fp FROM certs WHERE fp IN ({','.join('?' * len(fps))})", fps)}
        rows = []
        for item, first in pending:
            if item.fingerprint not in known:
                known.add(item.fingerprint)
                rows.append(facts_of(item, first))
        self.db.executemany(_INSERT_CERT, rows)
        self.rows += len(rows)

    def _spill(self) -> None:
        """Copy the in-memory database to a temporary file and go on there."""
        fd, path = tempfile.mkstemp(prefix="trustyard-scan-", suffix=".sqlite", dir=self.directory)
        os.close(fd)
        disk = sqlite3.connect(path)
        self.db.commit()  # a backup waits for the source's open write transaction: forever, here
        self.db.backup(disk)
        self.db.close()
        disk.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-16000; "
                           "PRAGMA temp_store=FILE;")
        self.db, self.path = disk, path

    def finish(self) -> None:
        """After the last add: write what is buffered and index for the rules' queries."""
        self._flush()
        if not self._indexed:
            self.db.executescript(_INDEXES)
            self._indexed = True

    def close(self) -> None:
        self.db.close()
        if self.path:
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_roles(self, changes: list[tuple[int, int, str]]) -> None:
        """(service, root, fingerprint) as ``roles.classify`` judged them."""
        self.db.executemany("UPDATE certs SET service = ?, root = ? WHERE fp = ?", changes)

    # ------------------------------------------------------------------ reading

    @property
    def spilled(self) -> bool:
        return self.path is not None

    def count(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        return int(self.db.execute(sql, args).fetchone()[0])

    def distinct(self, where: str = "", args: tuple[Any, ...] = (), order: str = "c.first"
                 ) -> Iterator[tuple[Facts, list[Occ]]]:
        """Each distinct certificate with its occurrences in the order they were read; the
        certificates in ``order`` (first appearance unless told)."""
        sql = (f"SELECT {', '.join('c.' + n.strip() for n in FACT_COLUMNS.split(','))}, {OCC_COLUMNS} "
               f"FROM certs c JOIN occ o ON o.fp = c.fp {where} ORDER BY {order}, o.seq")
        current: Facts | None = None
        occs: list[Occ] = []
        n = len(Facts._fields)
        for row in self.db.execute(sql, args):
            if current is None or row[0] != current.fp:
                if current is not None:
                    yield current, occs
                current, occs = Facts(*row[:n]), []
            occs.append(Occ(*row[n:]))
        if current is not None:
            yield current, occs

    def facts(self, fp: str) -> Facts | None:
        row = self.db.execute(f"SELECT {FACT_COLUMNS} FROM certs WHERE fp = ?", (fp,)).fetchone()
        return Facts(*row) if row else None

    def occurrences(self) -> Iterator[tuple[Occ, Facts]]:
        """Every certificate at every location, in the order read."""
        n = len(Occ._fields)
        sql = (f"SELECT {OCC_COLUMNS}, {', '.join('c.' + n.strip() for n in FACT_COLUMNS.split(','))} "
               "FROM occ o JOIN certs c ON c.fp = o.fp ORDER BY o.seq")
        for row in self.db.execute(sql):
            yield Occ(*row[:n]), Facts(*row[n:])

    def locations_of(self, fp: str) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT location FROM occ WHERE fp = ? ORDER BY seq", (fp,))]

    def iter_keys(self, where: str = "", args: tuple[Any, ...] = (), order: str = "seq") -> Iterator[tuple[KeyItem, str]]:
        """Every key (with its unit key) in ``order``."""
        sql = f"SELECT location, grp, spki, encrypted, mode, env, description, unit FROM keys {where} ORDER BY {order}"
        for loc, grp, spki, enc, mode, env, desc, u in self.db.execute(sql, args):
            yield KeyItem(loc, grp, spki, bool(enc), mode=mode, environment=env, description=desc), u

    def der(self, fp: str) -> bytes:
        return bytes(self.db.execute("SELECT der FROM certs WHERE fp = ?", (fp,)).fetchone()[0])

    def children(self, issuer: str) -> Iterator[tuple[str, bytes]]:
        """Distinct certificates, not self-signed, whose issuer name is this one."""
        for fp, der in self.db.execute("SELECT fp, der FROM certs WHERE issuer = ? AND self_signed = 0", (issuer,)):
            yield fp, bytes(der)

    def ca_ders(self) -> Iterator[bytes]:
        for (der,) in self.db.execute("SELECT der FROM certs WHERE is_ca = 1 ORDER BY first"):
            yield bytes(der)


__all__ = ["DEFAULT_SPILL_AT", "Facts", "Ledger", "Occ", "facts_of", "unit_key"]
