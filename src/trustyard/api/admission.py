"""Admission control for signing requests, per worker: refuse early (503, Retry-After) rather
than queue without bound.

Every signing request (REST sign and renew, ACME finalize) asks :meth:`Admission.admit` once
its body (capped in size) is in, so a client that sends its body slowly holds no slot. The worker counts the requests it admitted and has not finished, and keeps a
moving average of the time one of them holds the event loop (signing runs on the loop,
``api.durability``), which is what serialises them. A new request would wait about
``pending * average``; past ``[server] latency_target``, or with ``[server] max_pending``
requests already admitted, it is refused with ``errors.Overloaded`` and a Retry-After of that
expected wait (whole seconds, at least 1). A request refused here did nothing: sending it again
is safe (its token or proof was not spent).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from ..errors import Overloaded
from ..store.loopwait import suspended_seconds
from . import metrics

T = TypeVar("T")

SMOOTHING = 0.2  # weight of the newest sample in the moving average


class Admission:
    def __init__(self, latency_target: float = 1.0, max_pending: int = 64,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.latency_target, self.max_pending, self.clock = latency_target, max_pending, clock
        self.pending = 0
        self.peak = 0  # the most requests ever admitted at once (metrics: never above max_pending)
        self.average: float | None = None  # seconds one request holds the loop; None before the first

    def expected_wait(self) -> float:
        return self.pending * (self.average or 0.0)

    @contextmanager
    def admit(self, route: str) -> Iterator[None]:
        """Hold a place in the queue for the ``with`` body, or raise ``Overloaded``."""
        wait = self.expected_wait()
        if self.pending >= self.max_pending or wait > self.latency_target:
            metrics.SHED.labels(route).inc()
            raise Overloaded(f"the CA is busy: {self.pending} signing request(s) ahead (about {wait:.2f}s of "
                             f"work, the target is {self.latency_target:g}s); send it again after Retry-After",
                             retry_after=max(1, math.ceil(wait)))
        self.pending += 1
        if self.pending > self.peak:
            self.peak = self.pending
            metrics.PENDING_PEAK.set(self.peak)
        try:
            yield
        finally:
            self.pending -= 1

    def timed(self, operation: Callable[..., T]) -> Callable[..., T]:
        """``operation`` recording how long each call takes into the moving average."""
        def run(*args: Any) -> T:
            # Time suspended waiting for the write lock (``store.loopwait``) is not time this
            # request held the loop: other requests ran then, and counting it twice would shed
            # load the worker could take.
            started, waited = self.clock(), suspended_seconds()
            try:
                return operation(*args)
            finally:
                self.observe(max(0.0, self.clock() - started - (suspended_seconds() - waited)))
        return run

    def observe(self, seconds: float) -> None:
        self.average = seconds if self.average is None else (1 - SMOOTHING) * self.average + SMOOTHING * seconds
