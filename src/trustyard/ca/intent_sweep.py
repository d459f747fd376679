"""Releasing intents a crash left ``pending``: a thread in the ``serve`` process, beside the CRL job.

A replica killed between recording an intent and storing its certificate leaves the row
``pending`` (and the certificate it renews claimed). A client that retries releases it itself
(``store.redemptions``); this sweep releases the ones nobody retries, at start and then every
``PENDING_INTENT_BOUND``, so no row stays ``pending`` longer than about twice that. Each release
is a compare-and-set from ``pending``, so replicas sweep side by side, and a live signer never
loses its row: an intent that old is not being signed. ACME orders a crash left ``processing``
become ``invalid`` the same way (``AcmeStore.release_cut_finalizations``): the client orders again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from ..store import SqlStore
from ..store.acme_store import AcmeStore
from .periodic import Periodic
from .retries import PENDING_INTENT_BOUND

log = logging.getLogger("trustyard.intents")


class IntentSweep(Periodic):
    name, what, log = "trustyard-intents", "pending-intent sweep", log
    first_at_once = True

    def __init__(self, store: SqlStore, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store, self.clock = store, clock
        self.acme = AcmeStore(store)
        self.released = 0  # for tests and the log
        self.orders_released = 0
        super().__init__()

    @property
    def interval(self) -> float:
        return PENDING_INTENT_BOUND.total_seconds()

    def tick(self) -> list[str]:
        before = self.clock() - PENDING_INTENT_BOUND
        released = self.store.release_pending(before)
        if released:
            log.warning("released %d intent(s) left pending by a crash: %s", len(released), ", ".join(released))
        self.released += len(released)
        orders = self.acme.release_cut_finalizations(before)
        if orders:
            log.warning("%d ACME order(s) left processing by a crash are now invalid", orders)
        self.orders_released += orders
        return released
