"""Finishing emergencies: a thread in the ``serve`` process, beside the CRL job.

Every tick (``INTERVAL``) it revokes the certificates of an emergency (``ca/emergency.py``)
whose grace ran out, and takes over revocations another replica claimed and never completed.
Each revocation is claimed by compare-and-set in the database, so several replicas on one
database run this side by side and revoke each certificate once. A replacement seen serving
is retired at check-in time instead, in the worker that received the check-in.
"""

from __future__ import annotations

import logging
import threading

from ..store import SqlStore
from .emergency import Emergencies

log = logging.getLogger("trustyard.emergency")

INTERVAL = 1.0


class EmergencyJob:
    def __init__(self, store: SqlStore, interval: float = INTERVAL) -> None:
        self.emergencies = Emergencies(store)
        self.interval = interval
        self.revoked = 0  # for tests and the log
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="trustyard-emergency", daemon=True)

    def tick(self) -> int:
        done = self.emergencies.sweep()
        if done:
            log.info("emergency: %d certificate(s) revoked as their grace ran out", done)
        self.revoked += done
        return done

    def start(self) -> EmergencyJob:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.tick()
            except Exception:
                log.exception("emergency sweep failed (next try in %.1fs)", self.interval)
