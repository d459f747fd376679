"""The soak's load: REST issuance, REST renewal and ACME orders, one after the other in turn.

A REST issuance redeems a fresh bootstrap token (minted here with the home's provisioner key,
as ``trustyard token`` does) for a CSR; a renewal renews a certificate an earlier operation
got, authenticated by a proof signed with its key (as the agent does), and its answer is
renewed in turn later; an ACME order is the full flow of ``bench/acme`` (its ``Account`` and
``one_order``, http-01 answered by pebble-challtestsrv). Requests go over the keep-alive
connections of ``bench/acme/connection.py``.

``closed_loop`` runs ``concurrency`` clients back to back (the maximum rate); ``open_loop``
starts operations at a fixed rate whatever the server does, and times each from when it was
due, so a server that falls behind shows in the latency instead of slowing the load.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from connection import Connection
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

KINDS = ("issue", "renew", "acme")
TOKEN_TTL = timedelta(minutes=1)  # redeemed within milliseconds; short, so its used_tokens row goes early
NAMES = 64
RETRIES = 5  # attempts of one REST operation the CA answers 503 (overloaded, with Retry-After)


@dataclass
class Sample:
    kind: str
    due: float  # monotonic seconds since the load began
    latency: float | None  # None: failed
    error: str = ""


@dataclass
class Record:
    """Every operation of a run, in the order they finished."""

    started: float = field(default_factory=time.monotonic)
    samples: list[Sample] = field(default_factory=list)

    def add(self, kind: str, due: float, latency: float | None, error: str = "") -> None:
        self.samples.append(Sample(kind, due - self.started, latency, error))


class Load:
    """What the three operations need: the CA's origin and root, the provisioner key, ACME
    accounts (one connection each) and REST connections, handed out one operation at a time."""

    def __init__(self, acme: Any, origin: str, root: str, directory_url: str, challtest_url: str,
                 provisioner_key: Any, clients: int, poll_s: float) -> None:
        from trustyard.ca import proofs, tokens

        self.acme, self.proofs, self.tokens = acme, proofs, tokens
        self.origin, self.root, self.directory_url, self.challtest_url = origin, root, directory_url, challtest_url
        self.provisioner_key, self.clients, self.poll_s = provisioner_key, clients, poll_s
        self.names = [f"soak-{i}.bench.internal" for i in range(NAMES)]
        self.keys = [ec.generate_private_key(ec.SECP256R1()) for _ in self.names]
        self.csrs = [(x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
                      .add_extension(x509.SubjectAlternativeName([x509.DNSName(n)]), critical=False)
                      .sign(k, hashes.SHA256())) for n, k in zip(self.names, self.keys)]
        self.csr_pems = [c.public_bytes(Encoding.PEM).decode() for c in self.csrs]
        self.digests = [proofs.csr_digest(c.public_bytes(Encoding.DER)) for c in self.csrs]
        self.next_name = itertools.cycle(range(NAMES))
        self.renewable: deque[tuple[int, x509.Certificate]] = deque(maxlen=4 * NAMES)
        self.acme_csr_key = ec.generate_private_key(ec.SECP256R1())
        self.order_names = itertools.count()
        self.rest: asyncio.Queue[Connection] = asyncio.Queue()
        self.accounts: asyncio.Queue[tuple[Any, Connection]] = asyncio.Queue()
        self.connections: list[Connection] = []
        self.retried: Counter[str] = Counter()  # operations sent again after a 503 (load shed)

    async def open(self) -> None:
        for _ in range(self.clients):
            rest = Connection(self.origin, self.root)
            self.connections.append(rest)
            self.rest.put_nowait(rest)
        http = Connection(self.directory_url, self.root)
        self.connections.append(http)
        directory = (await http.request("GET", self.directory_url)).json()
        for _ in range(self.clients):
            account = self.acme.Account(Connection(self.directory_url, self.root), directory)
            await account.register()
            challtest = Connection(self.challtest_url)
            self.connections += [account.http, challtest]
            self.accounts.put_nowait((account, challtest))

    def close(self) -> None:
        for connection in self.connections:
            connection.close()

    # -- the three operations --------------------------------------------------------------------

    async def issue(self) -> None:
        i = next(self.next_name)

        def body() -> dict[str, str]:
            token, _ = self.tokens.mint(self.provisioner_key, "default", self.names[i], [self.names[i]], TOKEN_TTL)
            return {"csr": self.csr_pems[i], "token": token}

        await self._certificate("issue", i, "/v1/sign", body)

    async def renew(self) -> None:
        if not self.renewable:
            await self.issue()
        i, current = self.renewable.popleft()

        def body() -> dict[str, str]:
            proof = self.proofs.make(self.keys[i], [current], self.proofs.RENEW, csr_sha256=self.digests[i])
            return {"csr": self.csr_pems[i], "proof": proof}

        await self._certificate("renew", i, "/v1/renew", body)

    async def _certificate(self, kind: str, i: int, path: str, body: Callable[[], dict[str, str]]) -> None:
        """POST until answered; a 503 (the CA shedding load, with Retry-After) is sent again
        after the time it names, with a fresh token or proof, as ``trustyard.client`` does."""
        for attempt in range(1, RETRIES + 1):
            connection = await self.rest.get()
            try:
                answer = await connection.request("POST", path, json.dumps(body()).encode(), "application/json")
            finally:
                self.rest.put_nowait(connection)
            if answer.status == 503 and "retry-after" in answer.headers and attempt < RETRIES:
                self.retried[kind] += 1
                await asyncio.sleep(min(float(answer.headers["retry-after"]), 5.0))
                continue
            if answer.status != 201:
                raise RuntimeError(f"{path}: {answer.status} {answer.body[:200]!r}")
            self.renewable.append((i, x509.load_pem_x509_certificate(answer.json()["certificate"].encode())))
            return

    async def order(self) -> None:
        """An ACME order; one whose finalize was shed (503) is placed again once, a second later,
        as an ACME client run from cron would (``one_order`` does not retry a finalize)."""
        account, challtest = await self.accounts.get()
        try:
            for attempt in (1, 2):
                try:
                    await self.acme.one_order(account, challtest, f"soak-order-{next(self.order_names)}.bench.internal",
                                              self.acme_csr_key, self.poll_s)
                    return
                except RuntimeError as exc:
                    if attempt == 2 or not str(exc).startswith("finalize: 503"):
                        raise
                    self.retried["acme"] += 1
                    await asyncio.sleep(1.0)
        finally:
            self.accounts.put_nowait((account, challtest))

    def operation(self, kind: str) -> Callable[[], Awaitable[None]]:
        return {"issue": self.issue, "renew": self.renew, "acme": self.order}[kind]


async def _timed(load: Load, record: Record, kind: str, due: float) -> None:
    try:
        await load.operation(kind)()
    except Exception as exc:  # counted, never fatal: the soak reports every error
        record.add(kind, due, None, f"{type(exc).__name__}: {str(exc)[:200]}")
    else:
        record.add(kind, due, time.monotonic() - due)


async def closed_loop(load: Load, seconds: float, warmup: float) -> tuple[float, Record]:
    """Operations back to back from ``load.clients`` clients, the kinds in turn; the rate
    (operations/s) over ``seconds`` after ``warmup``."""
    record = Record()
    kinds = itertools.cycle(KINDS)
    end = record.started + warmup + seconds

    async def client() -> None:
        while time.monotonic() < end:
            await _timed(load, record, next(kinds), time.monotonic())

    await asyncio.gather(*(client() for _ in range(load.clients)))
    counted = [s for s in record.samples if s.due >= warmup and s.latency is not None]
    return len(counted) / seconds, record


async def open_loop(load: Load, rate: float, seconds: float, on_tick: Callable[[float], None] | None = None,
                    max_in_flight: int = 2000) -> Record:
    """One operation every 1/``rate`` seconds for ``seconds``, the kinds in turn; each timed
    from when it was due. ``on_tick`` is called about once a second (progress)."""
    record = Record()
    kinds = itertools.cycle(KINDS)
    running: set[asyncio.Task[None]] = set()
    last_tick = 0.0
    for n in itertools.count():
        due = record.started + n / rate
        if due - record.started >= seconds:
            break
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(running) >= max_in_flight:  # the server stopped keeping up: fail instead of piling on
            record.add(next(kinds), due, None, "overload: too many operations in flight")
            continue
        task = asyncio.ensure_future(_timed(load, record, next(kinds), due))
        running.add(task)
        task.add_done_callback(running.discard)
        if on_tick and time.monotonic() - last_tick >= 1:
            last_tick = time.monotonic()
            on_tick(last_tick - record.started)
    if running:
        await asyncio.gather(*running)
    return record
