"""Store code run from the event loop waits for the SQLite write lock without blocking the loop.

The API runs each store-writing operation on its worker's event loop (``api.durability``),
as plain synchronous code. With several workers, one of them often finds the write lock
held by another, and a blocking ``flock`` would stop its whole loop (every other request
of that worker) until the other process commits. Here the operation runs in a greenlet
(``run_suspendable``): when the lock is taken, ``Database`` hands the loop back with
``suspend(awaitable)``, the loop serves other requests, and the operation resumes where
it was once the lock looks free, then tries again.

Nothing is held while suspended: a waiter only learns that the lock was free a moment
ago (``until_free``: a helper thread takes and drops the ``flock`` through its own open
file description), so code that still blocks on the lock on the loop's thread (anything
not run through ``run_suspendable``) cannot deadlock with a suspended waiter.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from greenlet import getcurrent, greenlet  # type: ignore[import-untyped]  # no type hints shipped

T = TypeVar("T")


class _Suspendable(greenlet):
    """An operation started by ``run_suspendable``: it may ``suspend``."""

    suspended = 0.0  # seconds spent suspended so far (the loop ran other work meanwhile)


async def run_suspendable(operation: Callable[..., T], *args: Any) -> T:
    """Run ``operation(*args)`` on this loop; whenever it calls ``suspend(awaitable)`` the
    awaitable is awaited here (the loop runs other tasks meanwhile) and its result (or
    exception) is handed back to the operation. Context variables are the caller's own."""
    current = getcurrent()
    child = _Suspendable(operation, current)
    child.gr_context = current.gr_context
    asked = child.switch(*args)
    while not child.dead:
        try:
            value = await asked
        except BaseException as exc:  # a cancellation too: the operation unwinds and sees it
            asked = child.throw(exc)
        else:
            asked = child.switch(value)
    return asked


def can_suspend() -> bool:
    """Whether this code runs inside ``run_suspendable`` (on the loop's thread)."""
    return isinstance(getcurrent(), _Suspendable)


def suspend(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` on the loop that runs this operation; only where ``can_suspend()``."""
    current = getcurrent()
    if not isinstance(current, _Suspendable):
        raise RuntimeError("suspend() outside run_suspendable()")
    started = time.perf_counter()
    try:
        return current.parent.switch(awaitable)
    finally:
        current.suspended += time.perf_counter() - started


def suspended_seconds() -> float:
    """How long the running operation has been suspended so far (0 outside ``run_suspendable``):
    what to subtract from its wall time to get the time it held the loop."""
    current = getcurrent()
    return current.suspended if isinstance(current, _Suspendable) else 0.0


class Waiters:
    """The operations of one event loop waiting for one lock: the first asks a helper thread
    when the lock looks free (``probe``), the others queue behind it on the loop, and each
    release by one of them wakes the next. Without the queue every waiter probed by itself,
    and two busy workers spent a third of their CPU waking waiters that lost the race again.

    Only the loop's own thread touches it (one per thread, so two loops never share one)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _state(self) -> Any:
        state = self._local
        if not hasattr(state, "queue"):
            state.queue, state.probing = deque(), False
        return state

    def wait(self, probe: Callable[[], Awaitable[None]]) -> None:
        """Suspend until it is worth trying the lock again."""
        state = self._state()
        if not state.probing:
            state.probing = True
            try:
                suspend(probe())
            except BaseException:
                self._wake(state)  # no prober left: the next in the queue takes over
                raise
            finally:
                state.probing = False
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        state.queue.append(waiter)
        try:
            suspend(waiter)
        except BaseException:
            if waiter in state.queue:
                state.queue.remove(waiter)
            elif waiter.done() and not waiter.cancelled():
                self._wake(state)  # woken, then cancelled before it could try: pass the turn on
            raise

    def released(self) -> None:
        """The lock was released by one of this loop's operations: the next waiter tries."""
        self._wake(self._state())

    @staticmethod
    def _wake(state: Any) -> None:
        while state.queue:
            waiter = state.queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


# -- waiting for a lock to look free, in a helper thread -----------------------------------------

_probes: dict[str, int] = {}
_pool: tuple[int, ThreadPoolExecutor] | None = None
_probes_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """One helper thread per process: waiters queue for it, and the loop's own executor stays
    free for the WAL flushes (a forked worker makes its own)."""
    global _pool
    with _probes_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="trustyard-lockwait"))
        return _pool[1]


def _probe_fd(path: str) -> int:
    """This process's own open file description of the lock file, apart from the writers' one:
    a ``flock`` through it waits for every holder, this process's included."""
    key = f"{os.getpid()}:{path}"
    with _probes_lock:
        fd = _probes.get(key)
        if fd is None:
            fd = _probes[key] = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        return fd


def _take_and_drop(path: str) -> None:
    fd = _probe_fd(path)
    fcntl.flock(fd, fcntl.LOCK_EX)
    fcntl.flock(fd, fcntl.LOCK_UN)


def _acquire_and_release(lock: threading.Lock) -> None:
    with lock:
        pass


def until_free(lock_path: str) -> Awaitable[None]:
    """Completes once nobody held the ``flock`` on ``lock_path`` for a moment."""
    return asyncio.get_running_loop().run_in_executor(_executor(), _take_and_drop, lock_path)


def until_released(lock: threading.Lock) -> Awaitable[None]:
    """Completes once another thread of this process has released ``lock``."""
    return asyncio.get_running_loop().run_in_executor(_executor(), _acquire_and_release, lock)
