"""The audit log's secret, kept outside the database, and the checkpoint signed with it.

    ca/audit.key         {"key": 64 hex, "keyed_from": N}   mode 0600, beside the CA keys
    ca/audit.checkpoint  {"seq": N, "hash": H, "mac": M}    the newest committed entry

The key is made by ``trustyard init``; a home made before it gets one at its next audit
append (inside the write transaction, so no entry is written between reading the head
and recording ``keyed_from``). Entries before ``keyed_from`` stay plain hashes.

The checkpoint is written after each append commits (after the WAL flush, so it never
names an entry a power cut could take back): under a lock file, never moved backwards,
by atomic rename, not fsync'd. It may lag the log (a crash between commit and write, or a
power cut that brings back an older checkpoint), never lead it.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import threading
from pathlib import Path

from ..errors import ConfigError
from ..files import write_atomic, write_private
from .audit import GENESIS, Checkpoint, checkpoint_mac

KEY_NAME = "audit.key"
CHECKPOINT_NAME = "audit.checkpoint"


class AuditSeal:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.key_path = self.directory / KEY_NAME
        self.checkpoint_path = self.directory / CHECKPOINT_NAME
        self._lock_path = self.directory / f".{CHECKPOINT_NAME}.lock"
        self._loaded: tuple[bytes, int] | None = None
        self._mutex = threading.Lock()
        self._pending: tuple[int, str] | None = None
        self._written = -1

    # -- the key ------------------------------------------------------------------------------

    def load(self) -> tuple[bytes, int] | None:
        """(key, keyed_from), or None when the home has no key yet."""
        if self._loaded is None:
            try:
                raw = self.key_path.read_text()
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise ConfigError(f"cannot read the audit key {self.key_path}: {exc.strerror}") from None
            try:
                doc = json.loads(raw)
                key, keyed_from = bytes.fromhex(doc["key"]), int(doc["keyed_from"])
                if len(key) < 32 or keyed_from < 1:
                    raise ValueError
            except (ValueError, KeyError, TypeError):
                raise ConfigError(f"the audit key {self.key_path} is malformed") from None
            self._loaded = (key, keyed_from)
        return self._loaded

    def ensure(self, head_seq: int, head_hash: str) -> tuple[bytes, int]:
        """The key; made now when missing, keying entries after ``head_seq``. Call it with the
        audit head locked, so that nothing is appended meanwhile."""
        loaded = self.load()
        if loaded is not None:
            return loaded
        self.directory.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        tmp = self.directory / f".{KEY_NAME}.{os.getpid()}.{secrets.token_hex(4)}"
        write_private(tmp, json.dumps({"key": key.hex(), "keyed_from": head_seq + 1}) + "\n")
        try:
            os.link(tmp, self.key_path)  # exclusive: one process makes it, the others read it
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        loaded = self.load()
        assert loaded is not None
        if loaded[0] == key:
            self._write(head_seq, head_hash)
        return loaded

    # -- the checkpoint -----------------------------------------------------------------------

    def read_checkpoint(self) -> tuple[Checkpoint | None, str | None]:
        """(checkpoint, None), or (None, why it is missing or not to be believed)."""
        loaded = self.load()
        if loaded is None:
            return None, None
        try:
            doc = json.loads(self.checkpoint_path.read_text())
            checkpoint = Checkpoint(seq=int(doc["seq"]), hash=str(doc["hash"]), mac=str(doc["mac"]))
        except FileNotFoundError:
            return None, f"the signed checkpoint {self.checkpoint_path} is missing"
        except (OSError, ValueError, KeyError, TypeError):
            return None, f"the signed checkpoint {self.checkpoint_path} is unreadable or malformed"
        if not checkpoint.valid(loaded[0]):
            return None, f"the checkpoint {self.checkpoint_path} is not signed with the audit key (forged)"
        return checkpoint, None

    def note(self, seq: int, hash_: str) -> None:
        """Remember the newest committed entry; ``publish`` writes it."""
        with self._mutex:
            if self._pending is None or seq > self._pending[0]:
                self._pending = (seq, hash_)

    def publish(self) -> None:
        """Write the newest noted entry to the checkpoint (several appends, one write)."""
        with self._mutex:
            pending, self._pending = self._pending, None
            if pending is None or pending[0] <= self._written:
                return
            self._write(*pending)

    def _write(self, seq: int, hash_: str) -> None:
        loaded = self.load()
        if loaded is None:
            return
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # other processes of this home append too
            current, _ = self.read_checkpoint()
            if current is None or seq > current.seq:
                # Not fsync'd: it is written after the log's own flush, so whatever of it reaches the
                # disk never leads the durable log; a power cut may bring back an older checkpoint
                # (it lags, which verify accepts). Two fsyncs per commit cost about 17% of issuance.
                write_atomic(self.checkpoint_path, json.dumps(
                    {"seq": seq, "hash": hash_, "mac": checkpoint_mac(loaded[0], seq, hash_)}) + "\n", mode=0o600,
                    durable=False)
            self._written = max(self._written, seq)
        finally:
            os.close(fd)  # releases the flock


def create_key(directory: str | os.PathLike[str]) -> AuditSeal:
    """``trustyard init``: a fresh home keys its log from the first entry."""
    seal = AuditSeal(directory)
    seal.ensure(0, GENESIS)
    return seal
