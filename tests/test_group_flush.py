"""Requests of one worker share their WAL flushes, and none is answered before a flush that
started after its commit has finished."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from trustyard.api.durability import GroupFlush, durably
from trustyard.store import AuditEvent, open_store


def test_waiters_during_a_flush_share_the_next_one() -> None:
    starts: list[float] = []
    ends: list[float] = []

    def slow_flush() -> None:
        starts.append(time.monotonic())
        time.sleep(0.05)
        ends.append(time.monotonic())

    group = GroupFlush(slow_flush)

    async def one(delay: float) -> tuple[float, float]:
        await asyncio.sleep(delay)
        asked = time.monotonic()
        await group.wait()
        return asked, time.monotonic()

    async def main() -> list[tuple[float, float]]:
        return await asyncio.gather(*(one(0.01 * (i % 4)) for i in range(16)))

    answered = asyncio.run(main())
    assert group.runs == 2, starts  # the first caller's flush, then one for everyone who came meanwhile
    for asked, returned in answered:
        # some flush that started after this caller committed had finished before it returned
        assert any(asked <= start and end <= returned for start, end in zip(starts, ends, strict=True))


def test_a_failed_flush_fails_its_waiters_and_the_next_one_runs() -> None:
    calls: list[int] = []
    gate = threading.Event()

    def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            gate.wait(5)
            raise OSError("disk gone")

    group = GroupFlush(flaky)

    async def main() -> list[object]:
        first = asyncio.ensure_future(group.wait())
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(group.wait())  # joins the next run
        await asyncio.sleep(0.01)
        gate.set()
        return await asyncio.gather(first, second, return_exceptions=True)

    first, second = asyncio.run(main())
    assert isinstance(first, OSError) and second is None and len(calls) == 2


def test_a_cancelled_request_does_not_cancel_the_flush_it_shares() -> None:
    """Two requests wait for the same next flush; the client of one goes away (its task is
    cancelled): the other still gets its flush, not a CancelledError."""
    done: list[int] = []

    def flush() -> None:
        time.sleep(0.05)
        done.append(1)

    group = GroupFlush(flush)

    async def main() -> None:
        first = asyncio.ensure_future(group.wait())  # starts a run
        await asyncio.sleep(0.01)
        second, third = asyncio.ensure_future(group.wait()), asyncio.ensure_future(group.wait())  # the next run
        await asyncio.sleep(0.01)
        second.cancel()
        await first
        await third

    asyncio.run(main())
    assert done == [1, 1] and group.runs == 2


def test_durably_flushes_the_wal_once_for_concurrent_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the store: concurrent durable audit appends on one loop commit each, and share
    fsyncs; every one is answered only after a flush that began after its commit."""
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    commits: list[float] = []
    flushes: list[tuple[float, float]] = []
    real = store._flush_wal

    def timed_flush() -> None:
        start = time.monotonic()
        real()
        time.sleep(0.02)
        flushes.append((start, time.monotonic()))

    monkeypatch.setattr(store, "_flush_wal", timed_flush)

    def append(i: int) -> float:
        store.audit(AuditEvent(actor="t", action="token.mint", target=f"t{i}", detail={}))
        commits.append(time.monotonic())
        return commits[-1]

    async def one(i: int) -> tuple[float, float]:
        await asyncio.sleep(0.003 * i)
        committed = await durably(append, i)
        return committed, time.monotonic()

    async def main() -> list[tuple[float, float]]:
        return await asyncio.gather(*(one(i) for i in range(12)))

    try:
        answered = asyncio.run(main())
        assert store.verify_audit().ok and len(commits) == 12
    finally:
        store.close()
    assert len(flushes) < 12
    for committed, returned in answered:
        assert any(committed <= start and end <= returned for start, end in flushes)
