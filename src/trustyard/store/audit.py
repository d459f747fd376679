"""The audit log's hash chain: each entry commits to the one before it.

Editing an entry breaks its own hash; deleting one breaks the next entry's
``prev_hash`` (and ``seq`` continuity); deleting from the tail disagrees with the
head row that every append updates in the same transaction.

A plain SHA-256 chain stops only accidents: whoever can write the database can
recompute every hash after an edit, or delete the last entries and move the head
row. So entries are keyed: their hash is an HMAC-SHA256 under a secret kept outside
the database (``ca/audit.key`` in the home, see ``seal.py``), and a checkpoint file
signed with the same key records the newest (seq, hash) outside the database, so a
deleted tail is caught even when the head row is moved with it. Entries written
before the key existed (a home older than the key) stay plain hashes, and a report
says how many; the first keyed entry commits to the last plain one, so they cannot
be rewritten either without the key.

The hash covers exactly what is stored: actor and target are cut to their column
length before hashing, and the detail is hashed as it reads back from its JSON text.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .records import AuditEntry, AuditEvent

GENESIS = "0" * 64
TEXT_MAX = 255  # the actor and target columns (schema.audit_log)
_ENTRY_DOMAIN = b"trustyard-audit-entry\x00"
_CHECKPOINT_DOMAIN = b"trustyard-audit-checkpoint\x00"


@dataclass(frozen=True)
class Stored:
    """An event as the audit_log row holds it: what the hash must cover."""

    actor: str
    action: str
    target: str
    outcome: str
    detail_text: str
    detail: dict[str, Any]


def stored(actor: str, action: str, target: str, outcome: str, detail: dict[str, Any]) -> Stored:
    text = json.dumps(detail, sort_keys=True)
    return Stored(actor[:TEXT_MAX], action, target[:TEXT_MAX], outcome, text, json.loads(text))


def entry_hash(prev_hash: str, seq: int, at: datetime, actor: str, action: str, target: str,
               outcome: str, detail: dict[str, Any], key: bytes | None = None) -> str:
    """SHA-256 over the previous hash and the entry (``key=None``: entries from before the
    audit key), or HMAC-SHA256 under ``key``."""
    canonical = json.dumps(
        [seq, at.astimezone(UTC).isoformat(), actor, action, target, outcome, detail],
        sort_keys=True, separators=(",", ":"), ensure_ascii=True,
    )
    message = (prev_hash + canonical).encode()
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return hmac.new(key, _ENTRY_DOMAIN + message, hashlib.sha256).hexdigest()


def next_entry(head_seq: int, head_hash: str, event_: AuditEvent, at: datetime,
               key: bytes | None = None) -> dict[str, Any]:
    """The ``audit_log`` row that follows the head ``(head_seq, head_hash)``, column by column:
    what every writer of the log inserts (``SqlStore`` and the quick ``LiteStore`` alike)."""
    row = stored(event_.actor, event_.action, event_.target, event_.outcome, event_.detail)
    seq = head_seq + 1
    digest = entry_hash(head_hash, seq, at, row.actor, row.action, row.target, row.outcome, row.detail, key)
    return {"seq": seq, "at": at, "actor": row.actor, "action": row.action, "target": row.target,
            "outcome": row.outcome, "detail": row.detail_text, "prev_hash": head_hash, "hash": digest}


def checkpoint_mac(key: bytes, seq: int, hash_: str) -> str:
    return hmac.new(key, _CHECKPOINT_DOMAIN + f"{seq}:{hash_}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    """The newest (seq, hash) some writer saw committed, signed with the audit key."""

    seq: int
    hash: str
    mac: str

    def valid(self, key: bytes) -> bool:
        return hmac.compare_digest(self.mac, checkpoint_mac(key, self.seq, self.hash))


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    entries: int
    problems: tuple[str, ...]
    keyed: bool = False  # verified with the audit key
    plain_entries: int = 0  # entries from before the key: plain SHA-256
    checkpoint_seq: int | None = None
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "problems": list(self.problems), "keyed": self.keyed,
                "plain_entries": self.plain_entries, "checkpoint_seq": self.checkpoint_seq,
                "notes": list(self.notes)}


def verify_chain(entries: Iterable[AuditEntry], head: tuple[int, str] | None, key: bytes | None = None,
                 keyed_from: int = 1, checkpoint: Checkpoint | None = None,
                 checkpoint_problem: str | None = None) -> ChainReport:
    """Check linkage, every hash, the head row and (with a key) the signed checkpoint.

    Entries with ``seq >= keyed_from`` must carry an HMAC under ``key``; earlier ones (or all,
    without a key) a plain hash. ``checkpoint_problem`` is why the checkpoint could not be read.
    """
    problems: list[str] = []
    notes: list[str] = []
    prev_hash, expected_seq, count, plain = GENESIS, 1, 0, 0
    at_checkpoint = GENESIS if checkpoint is not None and checkpoint.seq == 0 else None
    for entry in entries:
        count += 1
        if entry.seq != expected_seq:
            problems.append(f"entry {expected_seq} is missing (next present is {entry.seq})")
        if entry.prev_hash != prev_hash:
            problems.append(f"entry {entry.seq} does not follow the entry before it (deleted or reordered)")
        keyed = key is not None and entry.seq >= keyed_from
        plain += not keyed
        recomputed = entry_hash(entry.prev_hash, entry.seq, entry.at, entry.actor, entry.action,
                                entry.target, entry.outcome, entry.detail, key if keyed else None)
        if not hmac.compare_digest(recomputed, entry.hash):
            if keyed:
                problems.append(f"entry {entry.seq} was edited (its keyed hash does not match its content: "
                                "changed or rehashed without the audit key)")
            elif TEXT_MAX in (len(entry.actor), len(entry.target)):
                # Versions before the audit key hashed the full text but stored it cut short.
                notes.append(f"entry {entry.seq} predates the audit key and its actor or target was cut to "
                             f"{TEXT_MAX} characters when stored: only its place in the chain is checked")
            else:
                problems.append(f"entry {entry.seq} was edited (its hash does not match its content)")
        if checkpoint is not None and entry.seq == checkpoint.seq:
            at_checkpoint = entry.hash
        prev_hash, expected_seq = entry.hash, entry.seq + 1
    last = expected_seq - 1
    head_seq, head_hash = head or (0, GENESIS)
    if head_seq != last or head_hash != prev_hash:
        problems.append(f"the log ends at entry {last} but the head records entry {head_seq}: "
                        "entries were deleted from the end")
    if checkpoint_problem:
        problems.append(checkpoint_problem)
    elif checkpoint is not None:
        if checkpoint.seq > last:
            problems.append(f"the log ends at entry {last} but the signed checkpoint records entry "
                            f"{checkpoint.seq}: entries were deleted from the end")
        elif at_checkpoint != checkpoint.hash:
            problems.append(f"entry {checkpoint.seq} is not the one the signed checkpoint records "
                            "(replaced or rewritten)")
    if key is None and count:
        notes.append("verified without the audit key: plain hashes, which anyone who can write the "
                     "database can recompute")
    elif plain:
        notes.append(f"entries 1-{plain} were written before the audit key existed: plain hashes, "
                     f"anchored by entry {plain + 1}'s keyed hash" if plain < count else
                     f"all {plain} entries were written before the audit key existed: plain hashes")
    return ChainReport(ok=not problems, entries=count, problems=tuple(problems), keyed=key is not None,
                       plain_entries=plain, checkpoint_seq=checkpoint.seq if checkpoint else None,
                       notes=tuple(notes))
