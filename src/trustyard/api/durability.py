"""Answer only after the disk has the writes, without blocking the event loop on fsync.

Requests of one worker share their flushes (group commit): a request whose write committed
while a flush of the same file was already running waits for the next one, which starts
as soon as the running one ends and covers every commit made before it started. On a
disk whose fsync takes milliseconds, sixteen concurrent requests then cost one or two
fsyncs (and one checkpoint write) instead of sixteen.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from ..store.engine import deferred_flush
from ..store.loopwait import run_suspendable

T = TypeVar("T")


class GroupFlush:
    """One flush (a WAL fsync, a checkpoint write) shared by every request of a loop that asks
    for it while it is not yet running. ``await group.wait()`` returns once a run of ``flush``
    that started after the call has finished (or raises what that run raised)."""

    def __init__(self, flush: Callable[[], None]) -> None:
        self.flush = flush
        self.runs = 0  # how many times flush ran (the tests count them)
        self._running: asyncio.Future[None] | None = None
        self._next: asyncio.Future[None] | None = None

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        if self._running is None:
            waiter = self._start(loop)
        else:  # the running flush may have started before our commit: the next one covers it
            if self._next is None:
                self._next = loop.create_future()
            waiter = self._next
        await asyncio.shield(waiter)  # one request's cancellation does not cancel the shared flush

    def _start(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        self.runs += 1
        running = self._running = loop.run_in_executor(None, self.flush)
        running.add_done_callback(self._finished)
        return running

    def _finished(self, done: asyncio.Future[None]) -> None:
        self._running = None
        if not done.cancelled():
            done.exception()  # retrieved here: the waiters have it too
        waiters, self._next = self._next, None
        if waiters is None:
            return
        following = self._start(done.get_loop())

        def settle(run: asyncio.Future[None]) -> None:
            if waiters.done():
                return
            if run.cancelled():
                waiters.cancel()
            elif run.exception() is not None:
                waiters.set_exception(run.exception())  # type: ignore[arg-type]
            else:
                waiters.set_result(None)

        following.add_done_callback(settle)


_GROUPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Callable[[], None], GroupFlush]] = \
    weakref.WeakKeyDictionary()


def group_for(flush: Callable[[], None]) -> GroupFlush:
    """This loop's shared runs of ``flush`` (bound methods of one object compare equal)."""
    groups = _GROUPS.setdefault(asyncio.get_running_loop(), {})
    group = groups.get(flush)
    if group is None:
        group = groups[flush] = GroupFlush(flush)
    return group


async def durably(operation: Callable[..., T], *args: Any) -> T:
    """Run a store-writing operation on the event loop, then wait for its writes to reach the
    disk in a thread, before the caller answers anyone.

    On the loop on purpose: from a thread pool, a thread holding the SQLite write lock waits
    for the GIL behind CPU-bound signing threads and every writer queues behind it. Only the
    fsync leaves the loop, so the worker serves the next request while the disk works; and
    an operation that finds the write lock taken by another worker lets the loop serve other
    requests until it is free (``store.loopwait``). (The
    loop's own executor: anyio's thread dispatch costs several times as much per call.)
    The flushes run in the order the store asked for them (the WAL before the checkpoint),
    each shared with the worker's other requests (``GroupFlush``).
    """
    with deferred_flush() as flushes:
        try:
            return await run_suspendable(operation, *args)
        finally:
            for flush in flushes:
                await group_for(flush).wait()
