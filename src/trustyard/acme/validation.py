"""The validation authority: proves control of identifiers, outside the request that asked.

``ValidationAuthority.submit`` hands a challenge to a bounded thread pool (one per worker
process) and returns at once; the probe records its result in the database, so any worker
or replica answers the client's next poll. Each probe has one deadline for everything it
does (DNS, connect, TLS, redirects, reading). Problems name what failed, never what a
target sent back.
"""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import logging
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urljoin, urlsplit

import dns.exception
import dns.resolver
from cryptography import x509

from .challenges import (ACME_IDENTIFIER_OID, ACME_TLS_ALPN, DNS_01, HTTP_01, TLS_ALPN_01, dns01_txt,
                         tls_alpn01_extension_value)
from .guard import IPAddress, TargetGuard, TargetRefused
from .problems import subproblem

log = logging.getLogger("trustyard.acme.va")

MAX_REDIRECTS = 10
MAX_BODY_BYTES = 8 * 1024
MAX_QUEUED = 10_000
HANDOFF_WAIT = 5.0  # seconds a finished probe waits for its event loop to take the result


class ValidationFailed(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind, self.detail = kind, detail


@dataclass(frozen=True)
class Probe:
    challenge_id: str
    type: str
    identifier_type: str  # dns | ip
    value: str            # without "*." for wildcards
    key_authorization: str


class Resolver:
    """A/AAAA/TXT lookups, from a configured DNS server (``host:port``) or the system's."""

    def __init__(self, server: str = "", timeout: float = 5.0) -> None:
        self.server = server
        self.timeout = timeout
        self._local = threading.local()

    def _resolver(self) -> dns.resolver.Resolver:
        resolver = getattr(self._local, "resolver", None)
        if resolver is None:
            if self.server:
                host, _, port = self.server.rpartition(":")
                resolver = dns.resolver.Resolver(configure=False)
                resolver.nameservers = [host.strip("[]")]
                resolver.port = int(port)
            else:
                resolver = dns.resolver.Resolver()
            resolver.cache = None
            self._local.resolver = resolver
        return resolver

    def addresses(self, name: str, deadline: float) -> Iterator[IPAddress]:
        """The A addresses, then the AAAA ones; the AAAA lookup happens only if the caller
        asks for more than the A addresses (a validation that succeeds on IPv4 skips it)."""
        if not self.server:
            try:
                infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
            except socket.gaierror:
                raise ValidationFailed("dns", f"no address found for {name}") from None
            yield from dict.fromkeys(ipaddress.ip_address(i[4][0].split("%")[0]) for i in infos)
            return
        found = False
        for rdtype in ("A", "AAAA"):
            try:
                answer = self._resolver().resolve(name, rdtype, lifetime=_left(deadline), raise_on_no_answer=False)
            except dns.resolver.NXDOMAIN:
                raise ValidationFailed("dns", f"{name} does not exist (NXDOMAIN)") from None
            except (dns.exception.DNSException, OSError):
                raise ValidationFailed("dns", f"DNS lookup of {rdtype} {name} failed") from None
            for record in answer:
                found = True
                yield ipaddress.ip_address(record.address)
        if not found:
            raise ValidationFailed("dns", f"no A or AAAA record for {name}")

    def txt(self, name: str, deadline: float) -> list[str]:
        try:
            answer = self._resolver().resolve(name, "TXT", lifetime=_left(deadline), raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            raise ValidationFailed("dns", f"no TXT record at {name} (NXDOMAIN)") from None
        except (dns.exception.DNSException, OSError):
            raise ValidationFailed("dns", f"DNS lookup of TXT {name} failed") from None
        return [b"".join(r.strings).decode("ascii", "replace") for r in answer]


def _keeping_failures(targets: Iterator[IPAddress], failures: list[str], cannot: str) -> Iterator[IPAddress]:
    """``targets``, except that when looking up more addresses fails (the AAAA lookup, or the
    deadline) after some have already failed to connect, the error names those failures."""
    try:
        yield from targets
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
    """The three probes, synchronous; everything they contact passes the guard first."""

    def __init__(self, guard: TargetGuard, resolver: Resolver, http_port: int, tls_port: int,
                 timeout: float) -> None:
        self.guard, self.resolver = guard, resolver
        self.http_port, self.tls_port, self.timeout = http_port, tls_port, timeout

    def check(self, probe: Probe) -> dict[str, Any] | None:
        """None when the challenge is met, else the problem document to store."""
        deadline = time.monotonic() + self.timeout
        try:
            if probe.type == HTTP_01:
                self.http01(probe, deadline)
            elif probe.type == DNS_01:
                self.dns01(probe, deadline)
            elif probe.type == TLS_ALPN_01:
                self.tls_alpn01(probe, deadline)
            else:
                raise ValidationFailed("malformed", f"unknown challenge type {probe.type}")
        except ValidationFailed as exc:
            return _problem(exc.kind, exc.detail, probe)
        except Exception:  # a probe must never take its worker down; say little, log the rest
            log.exception("validation of %s for %s failed unexpectedly", probe.type, probe.value)
            return _problem("serverInternal", "validation failed unexpectedly", probe)
        return None

    # -- targets --------------------------------------------------------------------------------

    def _targets(self, host: str, port: int, deadline: float) -> Iterator[IPAddress]:
        """The addresses of ``host`` the guard allows, lazily: a caller that succeeds on the
        first one never looks up the rest."""
        addresses: Iterable[IPAddress]
        try:
            addresses = [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            addresses = self.resolver.addresses(host, deadline)
        allowed, refusals = False, []
        for address in addresses:
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

    def http01(self, probe: Probe, deadline: float) -> None:
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
            status, location, body = self._fetch(parts.scheme, parts.hostname, port,
                                                 parts.path + (f"?{parts.query}" if parts.query else ""), deadline)
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

    def _fetch(self, scheme: str, host: str, port: int, path: str, deadline: float) -> tuple[int, str, bytes]:
        failures: list[str] = []
        cannot = f"cannot fetch from {host}:{port}"
        for address in _keeping_failures(self._targets(host, port, deadline), failures, cannot):
            conn: http.client.HTTPConnection
            if scheme == "https":
                conn = _PinnedHTTPS(str(address), port, host, timeout=_left(deadline))
            else:
                conn = http.client.HTTPConnection(str(address), port, timeout=_left(deadline))
            try:
                host_header = f"[{host}]" if ":" in host else host
                conn.request("GET", path or "/", headers={"Host": host_header, "User-Agent": "trustyard-acme-va",
                                                          "Accept": "*/*", "Connection": "close"})
                response = conn.getresponse()
                body = response.read(MAX_BODY_BYTES + 1)
                if len(body) > MAX_BODY_BYTES:
                    raise ValidationFailed("incorrectResponse", f"response body larger than {MAX_BODY_BYTES} bytes")
                return response.status, response.getheader("Location") or "", body
            except ValidationFailed:
                raise
            except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
                failures.append(f"{address}: {_net_error(exc)}")
            finally:
                conn.close()
        raise ValidationFailed("connection", f"{cannot} ({'; '.join(failures[:3])})")

    # -- dns-01 ---------------------------------------------------------------------------------

    def dns01(self, probe: Probe, deadline: float) -> None:
        name = f"_acme-challenge.{probe.value}"
        expected = dns01_txt(probe.key_authorization)
        records = self.resolver.txt(name, deadline)
        if expected not in records:
            raise ValidationFailed("incorrectResponse", f"none of the {len(records)} TXT record(s) at {name} "
                                                        "is the expected digest")

    # -- tls-alpn-01 ----------------------------------------------------------------------------

    def tls_alpn01(self, probe: Probe, deadline: float) -> None:
        ip_identifier = probe.identifier_type == "ip"
        sni = ipaddress.ip_address(probe.value).reverse_pointer if ip_identifier else probe.value
        failures: list[str] = []
        for address in _keeping_failures(self._targets(probe.value, self.tls_port, deadline), failures,
                                         f"cannot connect to {probe.value}:{self.tls_port}"):
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # the self-signed challenge certificate is the point
            context.set_alpn_protocols([ACME_TLS_ALPN])
            try:
                with socket.create_connection((str(address), self.tls_port), timeout=_left(deadline)) as raw:
                    with context.wrap_socket(raw, server_hostname=sni) as tls:
                        alpn = tls.selected_alpn_protocol()
                        der = tls.getpeercert(binary_form=True)
            except (OSError, ssl.SSLError) as exc:
                failures.append(f"{address}: {_net_error(exc)}")
                continue
            if alpn != ACME_TLS_ALPN:
                raise ValidationFailed("tls", f"the server did not negotiate ALPN {ACME_TLS_ALPN}")
            _check_alpn_certificate(der, probe, ip_identifier)
            return
        raise ValidationFailed("connection" if not failures or "TLS" not in failures[0] else "tls",
                               f"cannot connect to {probe.value}:{self.tls_port} ({'; '.join(failures[:3])})")


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


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to the checked address with the name as SNI (the certificate is not checked, as in http-01)."""

    def __init__(self, address: str, port: int, server_name: str, timeout: float) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        super().__init__(address, port, timeout=timeout, context=context)
        self._server_name = server_name
        self._context = context

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._server_name)


def _net_error(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error {exc.reason or type(exc).__name__}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def _problem(kind: str, detail: str, probe: Probe) -> dict[str, Any]:
    doc = subproblem(kind, detail, {"type": probe.identifier_type, "value": probe.value})
    doc["status"] = 400 if kind != "serverInternal" else 500
    return doc


class ValidationAuthority:
    """Runs probes in a bounded pool (created per process: uvicorn forks workers after import).

    A probe submitted from an event loop has its result recorded back on that loop: the
    pool's threads only wait on the network, and the database write joins the loop's other
    short transactions on its kept connection, instead of contending from another thread
    for the write lock and the GIL. Submitted from anywhere else, or if the loop has closed,
    the result is recorded in the pool's thread."""

    def __init__(self, checker: Checker, record: Callable[[str, dict[str, Any] | None], None],
                 workers: int = 8) -> None:
        self.checker = checker
        self.record = record
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._queued = 0

    def submit(self, probe: Probe) -> bool:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            if self._queued >= MAX_QUEUED:
                return False
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="acme-va")
            self._queued += 1
            self._pool.submit(self._run, probe, loop)
        return True

    def _run(self, probe: Probe, loop: asyncio.AbstractEventLoop | None) -> None:
        try:
            error = self.checker.check(probe)
        except Exception:  # check() turns every failure into a problem; this is a bug
            log.exception("validating challenge %s failed", probe.challenge_id)
            error = _problem("serverInternal", "validation failed unexpectedly", probe)
        finally:
            with self._lock:
                self._queued -= 1
        if loop is not None and self._record_on(loop, probe.challenge_id, error):
            return
        self._record(probe.challenge_id, error)

    def _record_on(self, loop: asyncio.AbstractEventLoop, challenge_id: str, error: dict[str, Any] | None) -> bool:
        """Record on ``loop``; False if it did not take the result within HANDOFF_WAIT (it has
        stopped or closed: a callback queued on a stopped loop is dropped when it closes), in
        which case the result is the caller's to record, and the loop will not record it."""
        taken = threading.Lock()  # whoever acquires it records the result
        done = threading.Event()

        def on_loop() -> None:
            if taken.acquire(blocking=False):
                try:
                    self._record(challenge_id, error)
                finally:
                    done.set()

        try:
            loop.call_soon_threadsafe(on_loop)
        except RuntimeError:  # closed already
            return False
        if done.wait(HANDOFF_WAIT):
            return True
        return not taken.acquire(blocking=False)  # the loop took it after all: it is recording

    def _record(self, challenge_id: str, error: dict[str, Any] | None) -> None:
        try:
            self.record(challenge_id, error)
        except Exception:
            log.exception("recording the validation of challenge %s failed", challenge_id)

    def shutdown(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
