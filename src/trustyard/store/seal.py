"""The audit log's secret, kept outside the database, and the checkpoint signed with it.

    ca/audit.key         {"key": 64 hex, "keyed_from": N}   mode 0600, beside the CA keys
    ca/audit.checkpoint  two slots of SLOT_BYTES, each {"seq": N, "hash": H, "mac": M} padded
                         with spaces to a newline; the valid slot with the highest seq counts

The key is made by ``trustyard init``; a home made before it gets one at its next audit
append (inside the write transaction, so no entry is written between reading the head
and recording ``keyed_from``). Entries before ``keyed_from`` stay plain hashes.

The checkpoint is written after each append commits (after the WAL flush, so it never
names an entry a power cut could take back): under a lock file, never moved backwards,
not fsync'd. It may lag the log (a crash between commit and write, or a power cut that
brings back an older checkpoint), never lead it.

Why two slots written in place: a write replaces the older slot with one ``pwrite`` into
blocks the file already has, so the other slot always holds a whole, signed checkpoint,
and no reader sees a half-written one (readers take the lock file shared). The atomic
rename this replaced cost more than the rest of an issuance's storage on ext4, which
starts writing a file back when it is renamed over another (``auto_da_alloc``). A file
in the older one-document form is read as one slot and rewritten in two once.
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
SLOT_BYTES = 256  # a slot: one JSON document, space-padded, newline-terminated; two per file


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
        """(the newest checkpoint, None), or (None, why it is missing or not to be believed)."""
        loaded = self.load()
        if loaded is None:
            return None, None
        try:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:  # a reader that may not write the home: an unlocked read
            return self._read(loaded[0])[:2]
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # not halfway through a writer's pwrite
            return self._read(loaded[0])[:2]
        finally:
            os.close(fd)

    def _read(self, key: bytes) -> tuple[Checkpoint | None, str | None, list[Checkpoint | None]]:
        """(newest valid checkpoint, problem, the two slots: None for a blank one; an empty list
        unless the file is in the two-slot form)."""
        try:
            raw = self.checkpoint_path.read_bytes()
        except FileNotFoundError:
            return None, f"the signed checkpoint {self.checkpoint_path} is missing", []
        except OSError:
            return None, f"the signed checkpoint {self.checkpoint_path} is unreadable or malformed", []
        malformed = f"the signed checkpoint {self.checkpoint_path} is unreadable or malformed"
        found: list[Checkpoint | None] = []
        try:
            for line in raw.decode().split("\n")[:-1] if raw.endswith(b"\n") else raw.decode().split("\n"):
                if line.strip():
                    doc = json.loads(line)
                    found.append(Checkpoint(seq=int(doc["seq"]), hash=str(doc["hash"]), mac=str(doc["mac"])))
                else:
                    found.append(None)  # a slot never written yet
        except (UnicodeDecodeError, ValueError, KeyError, TypeError):
            return None, malformed, []
        slots = found if len(raw) == 2 * SLOT_BYTES and len(found) == 2 else []
        written = [slot for slot in found if slot is not None]
        if not written:
            return None, malformed, slots
        # Every written slot must be signed: one that is not was put there by someone without the key.
        if not all(slot.valid(key) for slot in written):
            return None, f"the checkpoint {self.checkpoint_path} is not signed with the audit key (forged)", slots
        return max(written, key=lambda slot: slot.seq), None, slots

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
        key = loaded[0]
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # other processes of this home append too
            current, problem, slots = self._read(key)
            if current is None or seq > current.seq:
                new = Checkpoint(seq=seq, hash=hash_, mac=checkpoint_mac(key, seq, hash_))
                if problem is None and slots:
                    # Over the older slot (a blank one first); the newer one stays whole meanwhile.
                    seqs = [-1 if slot is None else slot.seq for slot in slots]
                    self._overwrite(seqs.index(min(seqs)), _slot(new))
                else:  # missing, in the one-document form, or damaged: both slots anew, by rename
                    keep = _slot(current) if current is not None else " " * (SLOT_BYTES - 1) + "\n"
                    write_atomic(self.checkpoint_path, _slot(new) + keep, mode=0o600, durable=False)
            self._written = max(self._written, seq)
        finally:
            os.close(fd)  # releases the flock

    def _overwrite(self, index: int, text: str) -> None:
        # Not fsync'd: it is written after the log's own flush, so whatever of it reaches the disk
        # never leads the durable log; a power cut may bring back an older slot (it lags, which
        # verify accepts). One sector-aligned write inside the file's first block.
        fd = os.open(self.checkpoint_path, os.O_WRONLY)
        try:
            os.pwrite(fd, text.encode(), index * SLOT_BYTES)
        finally:
            os.close(fd)


def _slot(checkpoint: Checkpoint) -> str:
    text = json.dumps({"seq": checkpoint.seq, "hash": checkpoint.hash, "mac": checkpoint.mac})
    if len(text) >= SLOT_BYTES:
        raise ValueError(f"a checkpoint of {len(text)} characters does not fit a slot")
    return text.ljust(SLOT_BYTES - 1) + "\n"


def create_key(directory: str | os.PathLike[str]) -> AuditSeal:
    """``trustyard init``: a fresh home keys its log from the first entry."""
    seal = AuditSeal(directory)
    seal.ensure(0, GENESIS)
    return seal
