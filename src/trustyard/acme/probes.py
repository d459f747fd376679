"""The probes of the validation authority: what http-01, dns-01 and tls-alpn-01 check.

``Checker.check`` runs one ``Probe`` (a challenge to prove) by one deadline for everything it
does (DNS, connect, TLS, redirects, reading) and returns the problem document to store, or
None when the challenge is met. Every address it contacts passes the SSRF guard first
(:mod:`.guard`); http-01 fetches with :mod:`.http01`. Problems name what failed, never what a
target sent back. :mod:`.validation` decides when and how many probes run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httptools
from cryptography import x509

from ..ca.config import dns_server
from .cares import DnsError, Lookups
from .challenges import (
    ACME_IDENTIFIER_OID,
    ACME_TLS_ALPN,
    DNS_01,
    HTTP_01,
    TLS_ALPN_01,
    dns01_txt,
    tls_alpn01_extension_value,
)
from .guard import IPAddress, TargetGuard, TargetRefused
from .http01 import ResponseCutShort, ResponseTooLarge, http_get, unverified_context
from .problems import AcmeCode, subproblem

log = logging.getLogger("trustyard.acme.va")

MAX_REDIRECTS = 10
TIMEOUT_GRACE = 0.5  # seconds past a probe's deadline before it is cut off whatever it is doing
# System resolver lookups (getaddrinfo blocks): threads of their own, shared by every probe.
_system_lookups = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="acme-va-dns")


class ValidationFailed(Exception):
    """A probe found the challenge unmet: ``kind`` is the ACME problem type (``AcmeCode``: any
    other is a ``ValueError``)."""

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
                raise ValidationFailed(AcmeCode.DNS, nxdomain) from None
            raise ValidationFailed(AcmeCode.DNS, f"DNS lookup of {rdtype} {name} failed") from None
        except TimeoutError:
            raise ValidationFailed(AcmeCode.DNS, f"DNS lookup of {rdtype} {name} failed") from None

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
                raise ValidationFailed(AcmeCode.DNS, f"no address found for {name}") from None
            for address in dict.fromkeys(ipaddress.ip_address(str(i[4][0]).split("%")[0]) for i in infos):
                yield address
            return
        found = False
        for rdtype in ("A", "AAAA"):
            for record in await self._records(name, rdtype, deadline, f"{name} does not exist (NXDOMAIN)"):
                found = True
                yield ipaddress.ip_address(record.addr)
        if not found:
            raise ValidationFailed(AcmeCode.DNS, f"no A or AAAA record for {name}")

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
        raise ValidationFailed(AcmeCode.CONNECTION, f"{cannot} ({'; '.join(failures[:3])}; then {exc.detail})") from None


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise ValidationFailed(AcmeCode.CONNECTION, "validation timed out")
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
                    raise ValidationFailed(AcmeCode.MALFORMED, f"unknown challenge type {probe.type}")
        except ValidationFailed as exc:
            return problem(exc.kind, exc.detail, probe)
        except TimeoutError:
            return problem(AcmeCode.CONNECTION, "validation timed out", probe)
        except Exception:  # a probe must never take its worker down; say little, log the rest
            log.exception("validation of %s for %s failed unexpectedly", probe.type, probe.value)
            return problem(AcmeCode.SERVER_INTERNAL, "validation failed unexpectedly", probe)
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
            raise ValidationFailed(AcmeCode.CONNECTION, f"{host}: " + "; ".join(refusals[:3]))

    # -- http-01 --------------------------------------------------------------------------------

    async def http01(self, probe: Probe, deadline: float) -> None:
        host = f"[{probe.value}]" if ":" in probe.value else probe.value
        url = f"http://{host}:{self.http_port}/.well-known/acme-challenge/{probe.key_authorization.split('.')[0]}"
        for _hop in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValidationFailed(AcmeCode.CONNECTION, "redirect to an unsupported URL scheme")
            port = parts.port or (self.http_port if parts.scheme == "http" else self.tls_port)
            if port not in (self.http_port, self.tls_port):
                raise ValidationFailed(AcmeCode.CONNECTION, f"redirect to port {port}: only {self.http_port} and "
                                                     f"{self.tls_port} are validation ports")
            status, location, body = await self._fetch(parts.scheme, parts.hostname, port,
                                                       parts.path + (f"?{parts.query}" if parts.query else ""),
                                                       deadline)
            if status in (301, 302, 303, 307, 308):
                if not location:
                    raise ValidationFailed(AcmeCode.CONNECTION, f"HTTP {status} without a Location")
                url = urljoin(url, location)
                continue
            if status != 200:
                raise ValidationFailed(AcmeCode.INCORRECT_RESPONSE, f"HTTP status {status} from {parts.hostname}")
            if body.strip() != probe.key_authorization.encode():
                raise ValidationFailed(AcmeCode.INCORRECT_RESPONSE, "the response body is not the key authorization")
            return
        raise ValidationFailed(AcmeCode.CONNECTION, f"more than {MAX_REDIRECTS} redirects")

    async def _fetch(self, scheme: str, host: str, port: int, path: str, deadline: float) -> tuple[int, str, bytes]:
        failures: list[str] = []
        cannot = f"cannot fetch from {host}:{port}"
        targets = _keeping_failures(self._targets(host, port, deadline), failures, cannot)
        async with contextlib.aclosing(targets):  # type: ignore[type-var]
            async for address in targets:
                try:
                    async with asyncio.timeout(_left(deadline)):
                        return await http_get(str(address), port, host, path or "/", tls=scheme == "https")
                except ResponseTooLarge as exc:
                    raise ValidationFailed(AcmeCode.INCORRECT_RESPONSE, exc.detail) from None
                except (OSError, ssl.SSLError, httptools.HttpParserError) as exc:
                    failures.append(f"{address}: {_net_error(exc)}")
        raise ValidationFailed(AcmeCode.CONNECTION, f"{cannot} ({'; '.join(failures[:3])})")

    # -- dns-01 ---------------------------------------------------------------------------------

    async def dns01(self, probe: Probe, deadline: float) -> None:
        if probe.identifier_type != "dns":  # RFC 8738 section 7: whoever runs DNS does not hold the address
            raise ValidationFailed(AcmeCode.MALFORMED, "dns-01 cannot prove an IP address")
        name = f"_acme-challenge.{probe.value}"
        expected = dns01_txt(probe.key_authorization)
        records = await self.resolver.txt(name, deadline)
        if expected not in records:
            raise ValidationFailed(AcmeCode.INCORRECT_RESPONSE, f"none of the {len(records)} TXT record(s) at {name} "
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
                context = unverified_context()  # the self-signed challenge certificate is the point
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
                    raise ValidationFailed(AcmeCode.TLS, f"the server did not negotiate ALPN {ACME_TLS_ALPN}")
                _check_alpn_certificate(der, probe, ip_identifier)
                return
        raise ValidationFailed(AcmeCode.CONNECTION if not failures or "TLS" not in failures[0] else AcmeCode.TLS,
                               f"cannot connect to {probe.value}:{self.tls_port} ({'; '.join(failures[:3])})")


async def _one(address: IPAddress) -> AsyncIterator[IPAddress]:
    yield address


def _check_alpn_certificate(der: bytes | None, probe: Probe, ip_identifier: bool) -> None:
    try:
        cert = x509.load_der_x509_certificate(der or b"")
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        acme_ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(ACME_IDENTIFIER_OID))
    except x509.ExtensionNotFound:
        raise ValidationFailed(AcmeCode.INCORRECT_RESPONSE, "the certificate lacks a SAN or the acmeIdentifier "
                                                    "extension") from None
    except Exception:
        raise ValidationFailed(AcmeCode.TLS, "the server's certificate cannot be parsed") from None
    names = list(sans)
    want: x509.GeneralName = (x509.IPAddress(ipaddress.ip_address(probe.value)) if ip_identifier
                              else x509.DNSName(probe.value))
    if len(names) != 1 or names[0] != want:
        raise ValidationFailed(AcmeCode.INCORRECT_RESPONSE, "the certificate's SAN is not exactly the identifier")
    value = getattr(acme_ext.value, "value", b"")
    if not acme_ext.critical or value != tls_alpn01_extension_value(probe.key_authorization):
        raise ValidationFailed(AcmeCode.INCORRECT_RESPONSE, "the acmeIdentifier extension is not critical or does not "
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


def problem(kind: str, detail: str, probe: Probe) -> dict[str, Any]:
    """The problem document of a probe that failed, naming its identifier."""
    doc = subproblem(kind, detail, {"type": probe.identifier_type, "value": probe.value})
    doc["status"] = 400 if kind != AcmeCode.SERVER_INTERNAL else 500
    return doc
