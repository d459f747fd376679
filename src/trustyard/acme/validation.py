"""The validation authority: proves control of identifiers, outside the request that asked.

``ValidationAuthority.submit`` starts a probe as a task on the worker's event loop, at most
``workers`` at a time, and returns at once; the probe records its result in the database,
so any worker or replica answers the client's next poll. Probes only wait on the network
(asyncio DNS, TCP and TLS), so they need no threads: threads competing with the event loop
for the GIL cost a worker a fifth of its CPU. What a probe checks is :mod:`.probes`.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import functools
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from .probes import TIMEOUT_GRACE, Checker, Probe, problem
from .problems import AcmeCode
from .slots import AccountSlots, FairSlots

log = logging.getLogger("trustyard.acme.va")

MAX_QUEUED = 10_000
POLL_HOLD = 1.0  # seconds a poll of an authorization may wait for its probe's outcome


class ValidationLimited(Exception):
    """An account or order already has as many challenges in flight as it may."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.detail, self.retry_after = detail, retry_after


class ValidationAuthority:
    """Runs probes as tasks on the submitting event loop, at most ``workers`` at a time on each
    loop, and records each result there (the database write joins the loop's other short
    transactions on its kept connection).

    Fairness: one account runs at most ``account_slots`` probes at once (its others wait
    behind them, which is its own business), and the loop's ``workers`` slots go to the
    waiting accounts in turn. Only the wait for a loop slot counts against a probe's own
    timeout, so another account's slow targets cannot hold it up beyond that. ``admit``
    refuses a challenge when its account already has ``per_account`` challenges in flight
    (waiting or running) or its order ``per_order`` (0: no limit); the counts are this
    worker process's.

    Submitted from outside an event loop (a script, a test), a probe runs on the authority's
    own loop in a background thread instead, under the same bound."""

    def __init__(self, checker: Checker, record: Callable[[str, dict[str, Any] | None], None],
                 workers: int = 8, account_slots: int = 0, per_account: int = 0, per_order: int = 0) -> None:
        self.checker = checker
        self.record = record
        self.workers = workers
        self.account_slots = account_slots or max(1, workers // 2)
        self.per_account, self.per_order = per_account, per_order
        self._lock = threading.Lock()
        self._queued = 0
        self._in_flight: collections.Counter[tuple[str, str]] = collections.Counter()  # ("account"|"order", id)
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FairSlots] = \
            weakref.WeakKeyDictionary()
        self._account_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, AccountSlots]] = \
            weakref.WeakKeyDictionary()
        self._tasks: set[asyncio.Task[None]] = set()  # held until done: the loop keeps only weak references
        self._deciding: dict[str, asyncio.Task[None]] = {}  # authorization id -> its probe's task
        self._own: tuple[asyncio.AbstractEventLoop, threading.Thread] | None = None
        self._pending: set[concurrent.futures.Future[None]] = set()  # probes on the own loop

    def admit(self, account_id: str, order_id: str) -> None:
        """Raise ValidationLimited when a challenge of this account and order may not start now."""
        retry_after = max(1, math.ceil(self.checker.timeout))
        with self._lock:
            if self.per_account and self._in_flight["account", account_id] >= self.per_account:
                raise ValidationLimited(f"the account already has {self.per_account} challenges being validated; "
                                        "answer this one when they are done", retry_after)
            if self.per_order and self._in_flight["order", order_id] >= self.per_order:
                raise ValidationLimited(f"the order already has {self.per_order} challenges being validated; "
                                        "answer this one when they are done", retry_after)

    def submit(self, probe: Probe) -> bool:
        with self._lock:
            if self._queued >= MAX_QUEUED:
                return False
            self._queued += 1
            self._count(probe, 1)
        # A fresh context: the probe must not inherit the submitter's (a request's open
        # database unit, its pending flushes), which ends long before the probe does.
        fresh = contextvars.Context()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            future = fresh.run(asyncio.run_coroutine_threadsafe, self._run(probe), self._own_loop())
            self._pending.add(future)
            future.add_done_callback(self._pending.discard)
            future.add_done_callback(functools.partial(self._dequeue, probe))
            return True
        task = loop.create_task(self._run(probe), context=fresh)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(functools.partial(self._dequeue, probe))  # also when cancelled before it ran
        if probe.authz_id:
            self._deciding[probe.authz_id] = task
            task.add_done_callback(functools.partial(self._decided, probe.authz_id))
        return True

    def _decided(self, authz_id: str, task: asyncio.Task[None]) -> None:
        if self._deciding.get(authz_id) is task:  # not a later probe of the same authorization
            del self._deciding[authz_id]

    async def settled(self, authz_id: str, within: float) -> None:
        """Wait, at most ``within`` seconds, for the probe this loop runs on ``authz_id``'s behalf
        (none: return at once). A client polls an authorization right after answering its
        challenge; held until the probe has recorded its result, the poll gets the outcome
        instead of "pending", and the client is spared a sleep and another signed request."""
        task = self._deciding.get(authz_id)
        if task is not None and task.get_loop() is asyncio.get_running_loop():
            await asyncio.wait((task,), timeout=within)  # on timeout the probe runs on

    def _dequeue(self, probe: Probe, _done: Any) -> None:
        with self._lock:
            self._queued -= 1
            self._count(probe, -1)

    def _count(self, probe: Probe, step: int) -> None:
        for key in (("account", probe.account_id), ("order", probe.order_id)):
            if key[1]:
                self._in_flight[key] += step
                if self._in_flight[key] <= 0:
                    del self._in_flight[key]

    async def _run(self, probe: Probe) -> None:
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = FairSlots(self.workers)
        accounts = self._account_slots.setdefault(loop, {})
        mine = accounts.get(probe.account_id)
        if mine is None:
            # A probe of no account (a script's) is bound by the loop's slots alone.
            mine = accounts[probe.account_id] = AccountSlots(self.account_slots if probe.account_id else self.workers)
        mine.users += 1
        try:
            async with mine.semaphore:  # behind the account's own probes: not counted against its timeout
                deadline = time.monotonic() + self.checker.timeout
                await slots.acquire(probe.account_id)
                try:
                    error = await self._check_by(probe, deadline)
                finally:
                    slots.release()
        finally:
            mine.users -= 1
            if not mine.users:
                del accounts[probe.account_id]  # the map holds only accounts with probes
        try:
            self.record(probe.challenge_id, error)
        except Exception:
            log.exception("recording the validation of challenge %s failed", probe.challenge_id)

    async def _check_by(self, probe: Probe, deadline: float) -> dict[str, Any] | None:
        """The probe's outcome, by its deadline: the time it waited for a slot is spent."""
        left = deadline - time.monotonic()
        if left <= 0:
            return problem(AcmeCode.CONNECTION, "validation timed out waiting for a free validation slot", probe)
        try:
            async with asyncio.timeout(left + TIMEOUT_GRACE):
                return await self.checker.check(probe)
        except TimeoutError:
            return problem(AcmeCode.CONNECTION, "validation timed out", probe)

    def _own_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._own is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="acme-va", daemon=True)
                thread.start()
                self._own = (loop, thread)
            return self._own[0]

    def shutdown(self) -> None:
        """Wait for the probes on the authority's own loop, then stop it. (Probes on a server's
        loop end with that loop; one cut short is resumed when its authorization is polled.)"""
        with self._lock:
            own, self._own = self._own, None
        if own is None:
            return
        loop, thread = own
        concurrent.futures.wait(list(self._pending))
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
