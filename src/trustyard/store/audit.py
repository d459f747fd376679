"""The audit log's hash chain: each entry commits to the one before it.

Editing an entry breaks its own hash; deleting one breaks the next entry's
``prev_hash`` (and ``seq`` continuity); deleting from the tail disagrees with the
head row that every append updates in the same transaction.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

from .records import AuditEntry

GENESIS = "0" * 64


def entry_hash(prev_hash: str, seq: int, at: datetime, actor: str, action: str, target: str,
               outcome: str, detail: dict[str, Any]) -> str:
    canonical = json.dumps(
        [seq, at.astimezone(timezone.utc).isoformat(), actor, action, target, outcome, detail],
        sort_keys=True, separators=(",", ":"), ensure_ascii=True,
    )
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    entries: int
    problems: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "problems": list(self.problems)}


def verify_chain(entries: Iterable[AuditEntry], head: tuple[int, str] | None) -> ChainReport:
    problems: list[str] = []
    prev_hash, expected_seq, count = GENESIS, 1, 0
    for entry in entries:
        count += 1
        if entry.seq != expected_seq:
            problems.append(f"entry {expected_seq} is missing (next present is {entry.seq})")
        if entry.prev_hash != prev_hash:
            problems.append(f"entry {entry.seq} does not follow the entry before it (deleted or reordered)")
        recomputed = entry_hash(entry.prev_hash, entry.seq, entry.at, entry.actor, entry.action,
                                entry.target, entry.outcome, entry.detail)
        if recomputed != entry.hash:
            problems.append(f"entry {entry.seq} was edited (its hash does not match its content)")
        prev_hash, expected_seq = entry.hash, entry.seq + 1
    head_seq, head_hash = head or (0, GENESIS)
    if head_seq != expected_seq - 1 or head_hash != prev_hash:
        problems.append(f"the log ends at entry {expected_seq - 1} but the head records entry {head_seq}: "
                        "entries were deleted from the end")
    return ChainReport(ok=not problems, entries=count, problems=tuple(problems))
