"""DNS queries through c-ares (pycares), driven by the running asyncio event loop.

c-ares does the protocol, in C: it builds and parses the messages, sends a UDP query again
when no answer comes, and asks over TCP when an answer is truncated. This module only
connects a c-ares channel to the loop that runs the lookup: its sockets become the loop's
readers and writers, and a timer lets c-ares act on its timeouts. No thread waits on the
network (pycares's own event thread would compete with the loop for the GIL).

Each lookup has a channel of its own, closed when the lookup ends, however it ends. A
longer-lived channel would answer from c-ares's query cache, which pycares cannot turn
off: a TXT record changed for the next dns-01 validation, or a name published after a
failed attempt, would go unseen until the cached answer expired. A closed channel also
takes its unanswered queries and sockets with it.

The channel asks ``server`` (``IP:port``, ``[IPv6]:port``) or, without one, the servers of
the system's ``resolv.conf``; a query is for the exact name, never completed with search
domains.
"""

from __future__ import annotations

import asyncio
import threading
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
    """Queries to one DNS server (or the system's), from whichever event loop asks.

    ``server`` is in the form ``ca.config.dns_server`` gives; ``attempt`` is how long c-ares
    first waits for an answer before it asks again (it waits longer each time after)."""

    def __init__(self, server: str = "", attempt: float = 2.0, tries: int = 3) -> None:
        self._options: dict[str, Any] = {"timeout": attempt, "tries": tries}
        if server:
            self._options["servers"] = [server]

    async def query(self, name: str, qtype: str) -> list[Any]:
        """The data of ``name``'s ``qtype`` records, following CNAMEs within the answer; an
        empty list when the name exists without such records. Raises :class:`DnsError`."""
        wanted = QUERY_TYPES[qtype]
        try:  # IDNA 2003, as dnspython did; a name DNS cannot carry ("a..b", a 64-byte label) fails here
            name = name.rstrip(".").encode("idna").decode("ascii") if not name.isascii() else name
        except UnicodeError:
            raise DnsError(pycares.errno.ARES_EBADNAME) from None
        try:
            lookup = _Lookup(asyncio.get_running_loop(), self._options)
        except pycares.AresError as exc:  # c-ares could not set up (resolv.conf, the server)
            code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else pycares.errno.ARES_ENOTINITIALIZED
            raise DnsError(code) from None
        try:
            result = await lookup.run(name, wanted)
        except DnsError as exc:
            if exc.code == pycares.errno.ARES_ENODATA:  # the name exists, without such records
                return []
            raise
        finally:
            lookup.close()
        return _records(result.answer, name, wanted)


def _records(answer: list[Any], name: str, wanted: int) -> list[Any]:
    """The ``wanted`` records at ``name`` or at the end of its CNAME chain, not whatever
    else the server put in the answer section."""
    names, grown = {_key(name)}, True
    cnames = [(_key(r.name), _key(r.data.cname)) for r in answer if r.type == pycares.QUERY_TYPE_CNAME]
    while grown:  # in whatever order the server put the chain (a loop only stops growing)
        before = len(names)
        names.update(target for owner, target in cnames if owner in names)
        grown = len(names) > before
    return [r.data for r in answer if r.type == wanted and _key(r.name) in names]


def _key(name: str) -> str:
    """A DNS name as it compares: case-insensitive, the root's dot optional."""
    return name.lower().rstrip(".")


class _Lookup:
    """One query on a channel of its own, whose sockets and timeouts this loop serves."""

    def __init__(self, loop: asyncio.AbstractEventLoop, options: dict[str, Any]) -> None:
        self._loop = loop
        self._thread = threading.get_ident()
        self._readers: set[int] = set()
        self._writers: set[int] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._future: asyncio.Future[Any] = loop.create_future()
        self._channel = pycares.Channel(sock_state_cb=self._socket_state, **options)

    async def run(self, name: str, qtype: int) -> Any:
        try:
            self._channel.query(name, qtype, callback=self._done)
        except (pycares.AresError, UnicodeError, ValueError, RuntimeError):  # c-ares refused the name
            if self._future.done():  # c-ares also answered the callback: that says why
                raise self._future.exception() or DnsError(pycares.errno.ARES_EBADNAME) from None
            raise DnsError(pycares.errno.ARES_EBADNAME) from None
        self._arm_timer()
        return await self._future

    def close(self) -> None:
        """Stop serving the channel's sockets, then let pycares destroy it (in its clean-up
        thread, which cancels what is still out and closes the sockets)."""
        self._stop_timer()
        if not self._loop.is_closed():
            for fd in self._readers:
                self._loop.remove_reader(fd)
            for fd in self._writers:
                self._loop.remove_writer(fd)
        self._readers.clear()
        self._writers.clear()
        self._channel.close()

    def _done(self, result: Any, error: int | None) -> None:
        # From pycares's clean-up thread (the cancellation on close): nobody waits any more.
        if threading.get_ident() != self._thread or self._future.done():
            return
        if error is None:
            self._future.set_result(result)
        else:
            self._future.set_exception(DnsError(error))

    def _socket_state(self, fd: int, readable: bool, writable: bool) -> None:
        """c-ares opened, changed or closed a socket: follow it in the loop."""
        if threading.get_ident() != self._thread or self._loop.is_closed():
            return  # the channel's destruction, after close() stopped serving it
        loop = self._loop
        _follow(fd, readable, self._readers, loop.add_reader, loop.remove_reader, self._process, fd, _NO_FD)
        _follow(fd, writable, self._writers, loop.add_writer, loop.remove_writer, self._process, _NO_FD, fd)

    def _process(self, read_fd: int, write_fd: int) -> None:
        self._channel.process_fd(read_fd, write_fd)
        self._arm_timer()

    def _arm_timer(self) -> None:
        """Until the answer is in, wake up when c-ares's next timeout is due (at most 1 s)."""
        self._stop_timer()
        if not self._future.done():
            self._timer = self._loop.call_later(max(self._channel.timeout(1.0), 0.001), self._on_timer)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        self._process(_NO_FD, _NO_FD)


def _follow(fd: int, wanted: bool, watched: set[int], add: Any, remove: Any, *callback: Any) -> None:
    """Watch ``fd`` (reading or writing) exactly while c-ares wants it."""
    if wanted and fd not in watched:
        watched.add(fd)
        add(fd, *callback)
    elif not wanted and fd in watched:
        watched.discard(fd)
        remove(fd)
