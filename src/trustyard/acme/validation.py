"""The validation authority: proves control of identifiers, outside the request that asked.

``ValidationAuthority.submit`` starts a probe as a task on the worker's event loop, at most
``workers`` at a time, and returns at once; the probe records its result in the database,
so any worker or replica answers the client's next poll. Probes only wait on the network
(asyncio DNS, TCP and TLS), so they need no threads: threads competing with the event loop
for the GIL cost a worker a fifth of its CPU. Each probe has one deadline for everything it
does (DNS, connect, TLS, redirects, reading). Problems name what failed, never what a
target sent back.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import contextvars
import functools
import ipaddress
import logging
import math
import socket
import ssl
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable
from urllib.parse import urljoin, urlsplit

import httptools
from cryptography import x509

from ..ca.config import dns_server
from .cares import DnsError, Lookups
from .challenges import (ACME_IDENTIFIER_OID, ACME_TLS_ALPN, DNS_01, HTTP_01, TLS_ALPN_01, dns01_txt,
                         tls_alpn01_extension_value)
from .guard import IPAddress, TargetGuard, TargetRefused
from .problems import AcmeCode, subproblem
from .slots import AccountSlots, FairSlots

log = logging.getLogger("trustyard.acme.va")

MAX_REDIRECTS = 10
MAX_BODY_BYTES = 8 * 1024
MAX_HEADER_BYTES = 16 * 1024  # of a response's head: beyond it, a target is refused, not read on
MAX_QUEUED = 10_000
POLL_HOLD = 1.0  # seconds a poll of an authorization may wait for its probe's outcome
TIMEOUT_GRACE = 0.5  # seconds past a probe's deadline before it is cut off whatever it is doing
# System resolver lookups (getaddrinfo blocks): threads of their own, shared by every probe.
_system_lookups = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="acme-va-dns")


class ValidationFailed(Exception):
    """A challenge not met; ``kind`` is an ACME error type (``AcmeCode``: any other is a ``ValueError``)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind, self.detail = AcmeCode(kind), detail


@dataclass(frozen=True)
class Probe:
    challenge_id: str
    type: str
    identifier_type: str  # dns | ip
    value: str            # without "*." for wildcards
    key_authorization: str
    authz_id: str = ""    # the authorization it decides: a poll of it waits for the outcome
    account_id: str = ""  # whose it is: limits and fair shares are per account and per order
    order_id: str = ""


class Resolver:
    """A/AAAA/TXT lookups, from a configured DNS server (``host:port``) or the system's.

    Queries go through c-ares on the probe's own event loop (:mod:`.cares`): a lookup costs
    about 60% of the CPU that dnspython's asyncio resolver took (350 against 570 µs on the
    bench machine), and a worker does one or two per validation. Without a server,
    addresses come from the system's ``getaddrinfo`` (``/etc/hosts`` included), TXT records
    from the servers of ``resolv.conf``."""

    ATTEMPT = 2.0  # seconds c-ares first waits for an answer before asking again (then longer)

    def __init__(self, server: str = "") -> None:
        self.server = dns_server(server) if server else ""
        self._lookups = Lookups(self.server, attempt=self.ATTEMPT, tries=3)

    async def _query(self, name: str, rdtype: str, deadline: float) -> list[Any]:
        """The data of ``name``'s ``rdtype`` records, by the deadline (raises DnsError or
        TimeoutError; ValidationFailed when the deadline has already passed)."""
        async with asyncio.timeout(_left(deadline)):
            return await self._lookups.query(name, rdtype)

    async def _records(self, name: str, rdtype: str, deadline: float, nxdomain: str) -> list[Any]:
        """``_query``, its failures said as validation problems (``nxdomain`` for that one)."""
        try:
            return await self._query(name, rdtype, deadline)
        except DnsError as exc:
            if exc.nxdomain:
                raise ValidationFailed("dns", nxdomain) from None
            raise ValidationFailed("dns", f"DNS lookup of {rdtype} {name} failed") from None
        except TimeoutError:
            raise ValidationFailed("dns", f"DNS lookup of {rdtype} {name} failed") from None

    async def addresses(self, name: str, deadline: float) -> AsyncIterator[IPAddress]:
        """The A addresses, then the AAAA ones; the AAAA lookup happens only if the caller
        asks for more than the A addresses (a validation that succeeds on IPv4 skips it)."""
        if not self.server:
            try:
                async with asyncio.timeout(_left(deadline)):
                    # Not the loop's default executor: a lookup that hangs would hold up the
                    # WAL flushes every ACME POST waits for there.
                    infos = await asyncio.get_running_loop().run_in_executor(
                        _system_lookups, functools.partial(socket.getaddrinfo, name, None, type=socket.SOCK_STREAM))
            except (OSError, TimeoutError, UnicodeError, ValueError):  # UnicodeError: "a..b" and the like
                raise ValidationFailed("dns", f"no address found for {name}") from None
            for address in dict.fromkeys(ipaddress.ip_address(i[4][0].split("%")[0]) for i in infos):
                yield address
            return
        found = False
        for rdtype in ("A", "AAAA"):
            for record in await self._records(name, rdtype, deadline, f"{name} does not exist (NXDOMAIN)"):
                found = True
                yield ipaddress.ip_address(record.addr)
        if not found:
            raise ValidationFailed("dns", f"no A or AAAA record for {name}")

    async def txt(self, name: str, deadline: float) -> list[str]:
        records = await self._records(name, "TXT", deadline, f"no TXT record at {name} (NXDOMAIN)")
        return [record.data.decode("ascii", "replace") for record in records]


async def _keeping_failures(targets: AsyncIterator[IPAddress], failures: list[str],
                            cannot: str) -> AsyncIterator[IPAddress]:
    """``targets``, except that when looking up more addresses fails (the AAAA lookup, or the
    deadline) after some have already failed to connect, the error names those failures."""
    try:
        async with contextlib.aclosing(targets):  # type: ignore[type-var]
            async for address in targets:
                yield address
    except ValidationFailed as exc:
        if not failures:
            raise
        raise ValidationFailed("connection", f"{cannot} ({'; '.join(failures[:3])}; then {exc.detail})") from None


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise ValidationFailed("connection", "validation timed out")
    return left


class Checker:
    """The three probes, as coroutines; everything they contact passes the guard first."""

    def __init__(self, guard: TargetGuard, resolver: Resolver, http_port: int, tls_port: int,
                 timeout: float) -> None:
        self.guard, self.resolver = guard, resolver
        self.http_port, self.tls_port, self.timeout = http_port, tls_port, timeout

    async def check(self, probe: Probe) -> dict[str, Any] | None:
        """None when the challenge is met, else the problem document to store."""
        deadline = time.monotonic() + self.timeout
        try:
            # The bound on everything, whatever a step does; a little after the deadline, so that
            # a step that runs out of time (a lookup, a connection) says which one it was.
            async with asyncio.timeout(self.timeout + TIMEOUT_GRACE):
                if probe.type == HTTP_01:
                    await self.http01(probe, deadline)
                elif probe.type == DNS_01:
                    await self.dns01(probe, deadline)
                elif probe.type == TLS_ALPN_01:
                    await self.tls_alpn01(probe, deadline)
                else:
                    raise ValidationFailed("malformed", f"unknown challenge type {probe.type}")
        except ValidationFailed as exc:
            return _problem(exc.kind, exc.detail, probe)
        except TimeoutError:
            return _problem("connection", "validation timed out", probe)
        except Exception:  # a probe must never take its worker down; say little, log the rest
            log.exception("validation of %s for %s failed unexpectedly", probe.type, probe.value)
            return _problem("serverInternal", "validation failed unexpectedly", probe)
        return None

    # -- targets --------------------------------------------------------------------------------

    async def _targets(self, host: str, port: int, deadline: float) -> AsyncIterator[IPAddress]:
        """The addresses of ``host`` the guard allows, lazily: a caller that succeeds on the
        first one never looks up the rest."""
        try:
            addresses: AsyncIterator[IPAddress] = _one(ipaddress.ip_address(host.strip("[]")))
        except ValueError:
            addresses = self.resolver.addresses(host, deadline)
        allowed, refusals = False, []
        async with contextlib.aclosing(addresses):  # type: ignore[type-var]
            async for address in addresses:
                try:
                    self.guard.check(address, port, host)
                except TargetRefused as exc:
                    refusals.append(str(exc))
                    continue
                allowed = True
                yield address
        if not allowed:
            raise ValidationFailed("connection", f"{host}: " + "; ".join(refusals[:3]))

    # -- http-01 --------------------------------------------------------------------------------

    async def http01(self, probe: Probe, deadline: float) -> None:
        host = f"[{probe.value}]" if ":" in probe.value else probe.value
        url = f"http://{host}:{self.http_port}/.well-known/acme-challenge/{probe.key_authorization.split('.')[0]}"
        for _hop in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValidationFailed("connection", "redirect to an unsupported URL scheme")
            port = parts.port or (self.http_port if parts.scheme == "http" else self.tls_port)
            if port not in (self.http_port, self.tls_port):
                raise ValidationFailed("connection", f"redirect to port {port}: only {self.http_port} and "
                                                     f"{self.tls_port} are validation ports")
            status, location, body = await self._fetch(parts.scheme, parts.hostname, port,
                                                       parts.path + (f"?{parts.query}" if parts.query else ""),
                                                       deadline)
            if status in (301, 302, 303, 307, 308):
                if not location:
                    raise ValidationFailed("connection", f"HTTP {status} without a Location")
                url = urljoin(url, location)
                continue
            if status != 200:
                raise ValidationFailed("incorrectResponse", f"HTTP status {status} from {parts.hostname}")
            if body.strip() != probe.key_authorization.encode():
                raise ValidationFailed("incorrectResponse", "the response body is not the key authorization")
            return
        raise ValidationFailed("connection", f"more than {MAX_REDIRECTS} redirects")

    async def _fetch(self, scheme: str, host: str, port: int, path: str, deadline: float) -> tuple[int, str, bytes]:
        failures: list[str] = []
        cannot = f"cannot fetch from {host}:{port}"
        targets = _keeping_failures(self._targets(host, port, deadline), failures, cannot)
        async with contextlib.aclosing(targets):  # type: ignore[type-var]
            async for address in targets:
                try:
                    async with asyncio.timeout(_left(deadline)):
                        return await _http_get(str(address), port, host, path or "/", tls=scheme == "https")
                except ValidationFailed:
                    raise
                except (OSError, ssl.SSLError, httptools.HttpParserError) as exc:
                    failures.append(f"{address}: {_net_error(exc)}")
        raise ValidationFailed("connection", f"{cannot} ({'; '.join(failures[:3])})")

    # -- dns-01 ---------------------------------------------------------------------------------

    async def dns01(self, probe: Probe, deadline: float) -> None:
        if probe.identifier_type != "dns":  # RFC 8738 section 7: whoever runs DNS does not hold the address
            raise ValidationFailed("malformed", "dns-01 cannot prove an IP address")
        name = f"_acme-challenge.{probe.value}"
        expected = dns01_txt(probe.key_authorization)
        records = await self.resolver.txt(name, deadline)
        if expected not in records:
            raise ValidationFailed("incorrectResponse", f"none of the {len(records)} TXT record(s) at {name} "
                                                        "is the expected digest")

    # -- tls-alpn-01 ----------------------------------------------------------------------------

    async def tls_alpn01(self, probe: Probe, deadline: float) -> None:
        ip_identifier = probe.identifier_type == "ip"
        sni = ipaddress.ip_address(probe.value).reverse_pointer if ip_identifier else probe.value
        failures: list[str] = []
        targets = _keeping_failures(self._targets(probe.value, self.tls_port, deadline), failures,
                                    f"cannot connect to {probe.value}:{self.tls_port}")
        async with contextlib.aclosing(targets):  # type: ignore[type-var]
            async for address in targets:
                context = _unverified_context()  # the self-signed challenge certificate is the point
                context.set_alpn_protocols([ACME_TLS_ALPN])
                try:
                    async with asyncio.timeout(_left(deadline)):
                        _reader, writer = await asyncio.open_connection(str(address), self.tls_port, ssl=context,
                                                                        server_hostname=sni)
                except (OSError, ssl.SSLError) as exc:
                    failures.append(f"{address}: {_net_error(exc)}")
                    continue
                try:
                    tls = writer.get_extra_info("ssl_object")
                    alpn = tls.selected_alpn_protocol()
                    der = tls.getpeercert(binary_form=True)
                finally:
                    writer.transport.abort()  # no close_notify exchange with a target that may not answer
                if alpn != ACME_TLS_ALPN:
                    raise ValidationFailed("tls", f"the server did not negotiate ALPN {ACME_TLS_ALPN}")
                _check_alpn_certificate(der, probe, ip_identifier)
                return
        raise ValidationFailed("connection" if not failures or "TLS" not in failures[0] else "tls",
                               f"cannot connect to {probe.value}:{self.tls_port} ({'; '.join(failures[:3])})")


async def _one(address: IPAddress) -> AsyncIterator[IPAddress]:
    yield address


def _unverified_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class _Response:
    """httptools callbacks: the status, the first Location, the body (capped), and what it
    takes to tell a complete response from one cut short."""

    def __init__(self) -> None:
        self.location = ""
        self.body = bytearray()
        self.framed = False  # Content-Length or chunked: the body has an end before EOF
        self.head_done = False
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if not self.location and name == b"location":
            self.location = value.decode("latin-1")
        elif name in (b"content-length", b"transfer-encoding"):
            self.framed = True

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, chunk: bytes) -> None:
        self.body += chunk
        if len(self.body) > MAX_BODY_BYTES:
            raise ValidationFailed("incorrectResponse", f"response body larger than {MAX_BODY_BYTES} bytes")

    def on_message_complete(self) -> None:
        self.complete = True


class ResponseCutShort(OSError):
    """The connection ended before the response did (a failure to reach the target)."""


async def _http_get(address: str, port: int, host: str, path: str, tls: bool) -> tuple[int, str, bytes]:
    """GET ``path`` from ``address`` (the address the guard checked, never a new lookup), with
    ``host`` as the Host header and, over TLS, as the SNI (the certificate is not checked,
    as in http-01)."""
    reader, writer = await asyncio.open_connection(address, port, ssl=_unverified_context() if tls else None,
                                                   server_hostname=host if tls else None)
    try:
        host_header = f"[{host}]" if ":" in host else host
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: trustyard-acme-va\r\n"
                     f"Accept: */*\r\nConnection: close\r\n\r\n".encode("latin-1"))
        response = _Response()
        parser = httptools.HttpResponseParser(response)
        head = 0
        while not response.complete:
            data = await reader.read(65536)
            if not data:  # the server closed: only a body without a length may end here
                if not response.head_done or response.framed:
                    raise ResponseCutShort("the response ended early")
                break
            if not response.head_done:
                head += len(data)  # httptools only reports a header once it has ended: count here
                if head > MAX_HEADER_BYTES + MAX_BODY_BYTES:
                    raise ValidationFailed("incorrectResponse", f"response headers larger than {MAX_HEADER_BYTES} "
                                                                "bytes")
            try:
                parser.feed_data(data)
            except httptools.HttpParserUpgrade:  # 101 and the like: its status says no
                break
            except httptools.HttpParserCallbackError as exc:  # raised in a callback: the body cap
                if isinstance(exc.__context__, ValidationFailed):
                    raise exc.__context__ from None
                raise
        status = parser.get_status_code()
        if not status:
            raise ResponseCutShort("no status line")
        return status, response.location, bytes(response.body)
    finally:
        writer.transport.abort()  # no TLS close_notify exchange: nothing more is wanted from this target


def _check_alpn_certificate(der: bytes | None, probe: Probe, ip_identifier: bool) -> None:
    try:
        cert = x509.load_der_x509_certificate(der or b"")
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        acme_ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(ACME_IDENTIFIER_OID))
    except x509.ExtensionNotFound:
        raise ValidationFailed("incorrectResponse", "the certificate lacks a SAN or the acmeIdentifier "
                                                    "extension") from None
    except Exception:
        raise ValidationFailed("tls", "the server's certificate cannot be parsed") from None
    names = list(sans)
    want: x509.GeneralName = (x509.IPAddress(ipaddress.ip_address(probe.value)) if ip_identifier
                              else x509.DNSName(probe.value))
    if len(names) != 1 or names[0] != want:
        raise ValidationFailed("incorrectResponse", "the certificate's SAN is not exactly the identifier")
    value = getattr(acme_ext.value, "value", b"")
    if not acme_ext.critical or value != tls_alpn01_extension_value(probe.key_authorization):
        raise ValidationFailed("incorrectResponse", "the acmeIdentifier extension is not critical or does not "
                                                    "hold the expected digest")


def _net_error(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error {exc.reason or type(exc).__name__}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ResponseCutShort):
        return str(exc)  # our own words, never the target's
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def _problem(kind: str, detail: str, probe: Probe) -> dict[str, Any]:
    doc = subproblem(kind, detail, {"type": probe.identifier_type, "value": probe.value})
    doc["status"] = 400 if kind != AcmeCode.SERVER_INTERNAL else 500
    return doc


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
            return _problem("connection", "validation timed out waiting for a free validation slot", probe)
        try:
            async with asyncio.timeout(left + TIMEOUT_GRACE):
                return await self.checker.check(probe)
        except TimeoutError:
            return _problem("connection", "validation timed out", probe)

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
