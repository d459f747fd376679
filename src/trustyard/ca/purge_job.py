"""Forgetting what no client can use any more: a thread in the ``serve`` process, beside the
CRL job (one per CA process, not one per worker).

Every ``[acme] purge_interval`` (and once at start) it deletes the expired ACME nonces, the
ACME orders past their expiry that never became valid with their authorizations and
challenges (``AcmeStore.purge``), the refusal counts past their retention, and the redeemed
bootstrap tokens and proofs that expired more than ``REPLAY_MARGIN`` ago. Without it these
tables grow with every request, whatever the number of certificates. Each delete is one
statement on rows nobody can still match, so replicas on one database may run it side by side.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from ..store import SqlStore, refusals
from ..store.acme_store import AcmeStore
from .periodic import Periodic

log = logging.getLogger("trustyard")

# ``tokens.verify`` and ``proofs.verify`` accept a credential up to 30 s (``tokens.LEEWAY``)
# after its ``exp``; its ``used_tokens`` row must outlive that, and the clock skew between
# replicas that share the database on top of it.
REPLAY_MARGIN = timedelta(minutes=5)


class PurgeJob(Periodic):
    name, what, log = "trustyard-purge", "purge of expired nonces, orders and tokens", log
    first_at_once = True

    def __init__(self, store: SqlStore, interval: float,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store, self.acme, self._interval, self.clock = store, AcmeStore(store), interval, clock
        self.deleted: dict[str, int] = {}  # rows deleted per table since start (for tests and the log)
        super().__init__()

    @property
    def interval(self) -> float:
        return self._interval

    def tick(self) -> dict[str, int]:
        now = self.clock()
        deleted = self.acme.purge(now)
        deleted["refusals"] = refusals.purge(self.store, now)
        deleted["used_tokens"] = self.store.purge_used_tokens(now - REPLAY_MARGIN)
        if any(deleted.values()):
            log.info("purged %s", ", ".join(f"{n} from {t}" for t, n in deleted.items() if n))
        for table, count in deleted.items():
            self.deleted[table] = self.deleted.get(table, 0) + count
        return deleted
