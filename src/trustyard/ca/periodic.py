"""The background jobs of the ``serve`` process (the CRL job, the emergency sweep, the
autopilot): one daemon thread each that runs ``tick`` every ``interval`` seconds until
``stop``, logging a failed round and going on with the next.

A job with seconds of CPU per round (the CRL job at a million revoked certificates) sets
``nice``: its thread alone runs at that lower priority (Linux schedules threads, and
``setpriority`` on a thread id changes that thread only), so the API's workers keep the
cores and the job takes what they leave.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Self


class Periodic:
    """Subclasses set ``name`` and ``what`` (for the log), define ``tick`` and ``interval``,
    and say whether the first round runs at once (``first_at_once``) or after an interval."""

    name = "trustyard-job"
    what = "background job"
    first_at_once = False
    nice = 0  # added to the thread's nice value (0: the process's priority)
    log = logging.getLogger("trustyard")

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    @property
    def interval(self) -> float:
        raise NotImplementedError

    def tick(self) -> object:
        raise NotImplementedError

    def start(self) -> Self:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()

    def _run(self) -> None:
        if self.nice and hasattr(os, "setpriority"):
            with contextlib.suppress(OSError):  # where threads share one priority, the job runs at it
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                               os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) + self.nice)
        if not self.first_at_once and self.stopped.wait(self.interval):
            return
        while True:
            try:
                self.tick()
            except Exception:
                self.log.exception("%s failed (next try in %.1fs)", self.what, self.interval)
            if self.stopped.wait(self.interval):
                return
