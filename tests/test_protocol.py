"""The CA server's transport proxy: the writes of one event loop iteration leave as one."""

from __future__ import annotations

import asyncio
from typing import Any

from trustyard.api.protocol import CoalescingTransport


class Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.extra = {"peername": ("127.0.0.1", 1)}

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)


def test_writes_of_one_iteration_merge_in_order_and_close_flushes_first() -> None:
    async def scenario() -> Recorder:
        real = Recorder()
        proxy = CoalescingTransport(real)  # type: ignore[arg-type]
        proxy.write(b"HTTP/1.1 200 OK\r\n\r\n")
        proxy.write(b"body")
        assert real.writes == [] and proxy.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\n\r\nbody")
        await asyncio.sleep(0)
        assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
        proxy.write(b"second")
        await asyncio.sleep(0)
        proxy.write(b"last")
        proxy.close()  # pending bytes go out before the close
        assert proxy.get_extra_info("peername") == ("127.0.0.1", 1)  # everything else passes through
        await asyncio.sleep(0)  # the scheduled flush finds nothing left and writes nothing more
        return real

    real = asyncio.run(scenario())
    assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"second", b"last"] and real.closed


def test_abort_drops_what_is_pending() -> None:
    async def scenario() -> Recorder:
        real = Recorder()
        proxy = CoalescingTransport(real)  # type: ignore[arg-type]
        proxy.write(b"never sent")
        proxy.abort()
        await asyncio.sleep(0)
        return real

    real = asyncio.run(scenario())
    assert real.writes == [] and real.closed
