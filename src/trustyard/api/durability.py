"""Answer only after the disk has the writes, without blocking the event loop on fsync."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from ..store.engine import deferred_flush

T = TypeVar("T")


async def durably(operation: Callable[..., T], *args: Any) -> T:
    """Run a store-writing operation on the event loop, then wait for its writes to reach the
    disk in a thread, before the caller answers anyone.

    On the loop on purpose: from a thread pool, a thread holding the SQLite write lock waits
    for the GIL behind CPU-bound signing threads and every writer queues behind it. Only the
    fsync leaves the loop, so the worker serves the next request while the disk works. (The
    loop's own executor: anyio's thread dispatch costs several times as much per call.)
    """
    with deferred_flush() as flushes:
        try:
            return operation(*args)
        finally:
            if flushes:
                loop = asyncio.get_running_loop()
                for flush in flushes:
                    await loop.run_in_executor(None, flush)
