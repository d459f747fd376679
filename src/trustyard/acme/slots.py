"""Validation slots of one event loop, shared fairly between ACME accounts.

A probe first takes one of its account's ``AccountSlots`` (an account waits behind its own
probes), then one of the loop's ``FairSlots``, which go to the waiting accounts in turn.
"""

from __future__ import annotations

import asyncio
import collections


class FairSlots:
    """``size`` slots of one event loop, handed out in turn to the accounts that wait for one
    (round robin), not in arrival order: an account with many probes waiting cannot push
    another account's probe to the back of the line."""

    def __init__(self, size: int) -> None:
        self.free = size
        self.waiting: dict[str, collections.deque[asyncio.Future[None]]] = {}  # in turn order

    async def acquire(self, key: str) -> None:
        if self.free > 0 and not self.waiting:
            self.free -= 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(key, collections.deque()).append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release()  # granted just as it was cancelled: the slot goes on to the next
            else:
                queue = self.waiting.get(key)
                if queue is not None and granted in queue:
                    queue.remove(granted)
                    if not queue:
                        del self.waiting[key]
            raise

    def release(self) -> None:
        while self.waiting:
            key = next(iter(self.waiting))
            queue = self.waiting.pop(key)
            granted = queue.popleft()
            if queue:
                self.waiting[key] = queue  # its next probe waits for the account's next turn
            if not granted.done():
                granted.set_result(None)
                return
        self.free += 1


class AccountSlots:
    """The probes one account may run at once on a loop (its others wait here, behind its own)."""

    def __init__(self, size: int) -> None:
        self.semaphore = asyncio.Semaphore(size)
        self.users = 0  # probes that hold or wait for one of the slots
