"""A store write on the event loop that finds the SQLite write lock taken (by another worker
process) lets the loop serve other requests until the lock is free, instead of blocking it."""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trustyard.api.durability import durably
from trustyard.store import AuditEvent, SqlStore, open_store
from trustyard.store.loopwait import can_suspend, run_suspendable, suspend


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    s = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield s
    s.close()


def _hold_lock(path: str, seconds: float) -> threading.Thread:
    """Another worker's write: the ``flock`` through an open file description of its own (as a
    second process has), held for ``seconds`` from a thread."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)

    def release() -> None:
        time.sleep(seconds)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    thread = threading.Thread(target=release)
    thread.start()
    return thread


def _append(store: SqlStore, target: str) -> float:
    store.audit(AuditEvent(actor="test", action="token.mint", target=target, detail={}))
    return time.monotonic()


async def _ticks_while(coro: object, until: list[float]) -> tuple[object, list[float]]:
    ticks: list[float] = []

    async def ticker() -> None:
        while not until:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    tick_task = asyncio.ensure_future(ticker())
    result = await coro  # type: ignore[misc]
    until.append(time.monotonic())
    await tick_task
    return result, ticks


def test_the_loop_runs_while_a_write_waits_for_another_process(store: SqlStore) -> None:
    assert store._lock_path is not None
    holder = _hold_lock(store._lock_path, 0.4)
    held_from = time.monotonic()
    done: list[float] = []
    committed, ticks = asyncio.run(_ticks_while(durably(_append, store, "waited.internal"), done))
    holder.join()
    assert isinstance(committed, float) and committed >= held_from + 0.35  # it did wait for the lock
    assert len([t for t in ticks if t < committed]) >= 10, ticks  # and the loop ran meanwhile
    assert store.lock_waits >= 1
    assert store.verify_audit().ok and store.verify_audit().entries == 1


def test_a_write_waits_for_another_thread_of_the_same_process(store: SqlStore) -> None:
    """A CRL or emergency job writes from its own thread: the loop waits for it without blocking."""
    store._thread_lock.acquire()

    def release() -> None:
        time.sleep(0.3)
        store._thread_lock.release()

    thread = threading.Thread(target=release)
    thread.start()
    done: list[float] = []
    committed, ticks = asyncio.run(_ticks_while(durably(_append, store, "thread.internal"), done))
    thread.join()
    assert len([t for t in ticks if t < committed]) >= 10, ticks
    assert store.verify_audit().entries == 1


def test_a_cancelled_waiter_holds_nothing(store: SqlStore) -> None:
    """A request cancelled while its write waits leaves no lock behind: the next write goes through."""
    assert store._lock_path is not None
    holder = _hold_lock(store._lock_path, 0.3)

    async def main() -> None:
        waiting = asyncio.ensure_future(durably(_append, store, "cancelled.internal"))
        await asyncio.sleep(0.1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.wait_for(durably(_append, store, "after.internal"), timeout=10)

    asyncio.run(main())
    holder.join()
    assert [e.target for e in store.audit_entries()] == ["after.internal"]


def test_concurrent_writes_on_one_loop_against_another_writer(store: SqlStore) -> None:
    """Many requests of one worker, another worker holding the lock on and off: every write lands
    once, in a chain that verifies."""
    assert store._lock_path is not None

    async def main() -> None:
        holders = []
        for _ in range(5):
            holders.append(_hold_lock(store._lock_path, 0.02))  # type: ignore[arg-type]
            await asyncio.gather(*(durably(_append, store, f"n{i}.internal") for i in range(8)))
        for holder in holders:
            holder.join()

    asyncio.run(main())
    report = store.verify_audit()
    assert report.ok and report.entries == 40


def test_suspend_needs_run_suspendable() -> None:
    assert not can_suspend()
    never = asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        suspend(never)
    never.close()

    async def main() -> int:
        def operation(x: int) -> int:
            assert can_suspend()
            return x + suspend(asyncio.sleep(0.01, result=1))

        return await run_suspendable(operation, 41)

    assert asyncio.run(main()) == 42


def test_waiters_queue_behind_one_probe_and_a_cancelled_one_passes_its_turn_on(store: SqlStore) -> None:
    """Eight writes of one loop wait for another worker's lock: one of them asks a helper thread
    when it is free, the others queue; cancelling the asker and one queued write leaves the
    rest to finish, each once."""
    assert store._lock_path is not None
    holder = _hold_lock(store._lock_path, 0.3)

    async def main() -> None:
        tasks = [asyncio.ensure_future(durably(_append, store, f"q{i}.internal")) for i in range(8)]
        await asyncio.sleep(0.1)
        tasks[0].cancel()  # the first to find the lock taken: the one probing
        tasks[3].cancel()  # one in the queue
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=20)
        assert [isinstance(r, asyncio.CancelledError) for r in results] == [i in (0, 3) for i in range(8)]

    asyncio.run(main())
    holder.join()
    assert sorted(e.target for e in store.audit_entries()) == sorted(f"q{i}.internal" for i in range(8) if i not in (0, 3))
    assert store.verify_audit().ok
    assert store.lock_waits <= 16  # each waited about once, not once per wake-up of every waiter


def test_admission_counts_the_time_an_operation_held_the_loop_not_its_wait() -> None:
    """The load shedder's estimate of work per signing request leaves out the time the request
    waited, suspended, for the write lock: the loop served other requests then."""
    from trustyard.api.admission import Admission

    admission = Admission()

    def operation() -> None:
        suspend(asyncio.sleep(0.2))  # as a wait for another worker's lock
        time.sleep(0.01)  # its own work

    async def main() -> None:
        await run_suspendable(admission.timed(operation))

    asyncio.run(main())
    assert admission.average is not None and 0.005 < admission.average < 0.1


def test_a_write_cancelled_after_its_turn_came_passes_the_turn_on(store: SqlStore) -> None:
    """The write whose turn it was finds the lock still held by another thread of this process
    (a CRL job's write) and is cancelled while it waits: the writes queued behind it on the loop
    must go on, not wait for a release the cancelled one never makes."""
    assert store._lock_path is not None
    holder = _hold_lock(store._lock_path, 0.3)

    def job_write() -> None:  # takes the thread lock while the other worker still holds the flock
        time.sleep(0.15)
        with store._thread_lock:
            time.sleep(0.6)

    job = threading.Thread(target=job_write)
    job.start()

    async def main() -> None:
        tasks = [asyncio.ensure_future(durably(_append, store, f"t{i}.internal")) for i in range(4)]
        await asyncio.sleep(0.5)  # the flock is free again; the first waits for the thread lock
        tasks[0].cancel()
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=10)
        assert [isinstance(r, asyncio.CancelledError) for r in results] == [True, False, False, False]

    asyncio.run(main())
    holder.join()
    job.join()
    assert sorted(e.target for e in store.audit_entries()) == ["t1.internal", "t2.internal", "t3.internal"]
