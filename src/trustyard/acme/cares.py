"""DNS queries through c-ares (pycares), driven by the running asyncio event loop.

c-ares does the protocol, in C: it builds and parses the messages, sends a UDP query again
when no answer comes, and asks over TCP when an answer is truncated. This module only
connects a c-ares channel to the loop that runs the lookup: its sockets become the loop's
readers and writers, and a timer lets c-ares act on its timeouts. There is one channel per
loop and no thread (pycares's own event thread would compete with the loop for the GIL).

The channel asks ``server`` (``host:port``) or, without one, the servers of the system's
``resolv.conf``. A query is for the exact name, never completed with search domains.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

import pycares

QUERY_TYPES = {"A": pycares.QUERY_TYPE_A, "AAAA": pycares.QUERY_TYPE_AAAA, "TXT": pycares.QUERY_TYPE_TXT}
_NO_FD = pycares.ARES_SOCKET_BAD


class DnsError(Exception):
    """A lookup that failed; ``nxdomain`` when the name does not exist."""

    def __init__(self, code: int) -> None:
        super().__init__(pycares.errno.strerror(code))
        self.code = code

    @property
    def nxdomain(self) -> bool:
        return self.code == pycares.errno.ARES_ENOTFOUND


class Lookups:
    """Queries to one DNS server (or the system's), from whichever loop asks."""

    def __init__(self, server: str = "", attempt: float = 2.0, tries: int = 3) -> None:
        self.server, self.attempt, self.tries = server, attempt, tries
        self._channels: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopChannel] = \
            weakref.WeakKeyDictionary()

    async def query(self, name: str, qtype: str) -> list[Any]:
        """The data of the answer's ``qtype`` records (CNAMEs followed by the server); an
        empty list when the name exists without such records. Raises :class:`DnsError`."""
        loop = asyncio.get_running_loop()
        channel = self._channels.get(loop)
        if channel is None:
            channel = self._channels[loop] = _LoopChannel(loop, self.server, self.attempt, self.tries)
        wanted = QUERY_TYPES[qtype]
        try:
            result = await channel.query(name, wanted)
        except DnsError as exc:
            if exc.code == pycares.errno.ARES_ENODATA:  # the name exists, without such records
                return []
            raise
        return [record.data for record in result.answer if record.type == wanted]


class _LoopChannel:
    """A c-ares channel whose sockets and timeouts are served by one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, server: str, attempt: float, tries: int) -> None:
        self._loop = weakref.ref(loop)  # the loop holds this object (readers, timer), not the reverse
        self._thread = threading.get_ident()
        self._readers: set[int] = set()
        self._writers: set[int] = set()
        self._pending = 0
        self._timer: asyncio.TimerHandle | None = None
        options: dict[str, Any] = {"servers": [server]} if server else {}
        self._channel = pycares.Channel(sock_state_cb=self._socket_state, timeout=attempt, tries=tries,
                                        domains=[], **options)

    def query(self, name: str, qtype: int) -> asyncio.Future[Any]:
        loop = self._loop()
        assert loop is not None
        future: asyncio.Future[Any] = loop.create_future()

        def done(result: Any, error: int | None) -> None:
            if threading.get_ident() != self._thread:  # cancelled by the channel's destruction
                return
            self._pending -= 1
            if future.done():  # the caller stopped waiting (its deadline)
                return
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(DnsError(error))

        self._pending += 1
        self._channel.query(name, qtype, callback=done)
        self._arm_timer()
        return future

    def _socket_state(self, fd: int, readable: bool, writable: bool) -> None:
        """c-ares opened, changed or closed a socket: follow it in the loop. (Called with
        the channel's destruction from pycares's clean-up thread: nothing to do then.)"""
        loop = self._loop()
        if loop is None or loop.is_closed() or threading.get_ident() != self._thread:
            return
        for wanted, fds, add, remove in ((readable, self._readers, loop.add_reader, loop.remove_reader),
                                         (writable, self._writers, loop.add_writer, loop.remove_writer)):
            if wanted and fd not in fds:
                fds.add(fd)
                add(fd, self._process, fd if fds is self._readers else _NO_FD,
                    fd if fds is self._writers else _NO_FD)
            elif not wanted and fd in fds:
                fds.discard(fd)
                remove(fd)

    def _process(self, read_fd: int, write_fd: int) -> None:
        self._channel.process_fd(read_fd, write_fd)
        self._arm_timer()

    def _arm_timer(self) -> None:
        """While queries are out, wake up when c-ares's next timeout is due."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = self._loop()
        if self._pending and loop is not None:
            self._timer = loop.call_later(max(self._channel.timeout(1.0), 0.001), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._process(_NO_FD, _NO_FD)
