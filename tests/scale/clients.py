"""Clients that keep asking through crashes, as a well-behaved client does, and write down
every error they saw: REST (a bootstrap token, then one renewal) and ACME (http-01 orders).

A client retries the same request (the same token and CSR; a fresh proof or nonce, which are
single-use) after a connection reset or refusal, after a 503 with Retry-After, and after
badNonce; anything else is a ``violation``. An ACME order that became ``invalid`` with
serverInternal because a crash cut its finalize is placed again (RFC 8555's answer to a failed
finalization), and counted.
"""

from __future__ import annotations

import ipaddress
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustyard.ca import proofs
from trustyard.x509.keys import KeyType, generate_private_key

from ..acme.client import Acme, b64, csr_der
from ..support import csr_pem
from .replicas import Responder

GIVE_UP_S = 60.0  # one request retried for longer than this is a failure of the CA, not of the client
RETRYABLE_IO = (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


@dataclass
class Log:
    """What every client saw, shared by the threads."""

    errors: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, what) retryable ones
    recovered: list[tuple[float, float]] = field(default_factory=list)  # (first failure, answered) per request
    violations: list[str] = field(default_factory=list)
    issued: list[tuple[str, str, bytes]] = field(default_factory=list)  # (how, serial, DER) handed out
    tokens_done: int = 0
    tokens_started: int = 0
    orders_replaced: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def error(self, what: str) -> None:
        with self.lock:
            self.errors.append((time.monotonic(), what))

    def violation(self, what: str) -> None:
        with self.lock:
            self.violations.append(what)

    def got(self, how: str, pem: str) -> x509.Certificate:
        cert = x509.load_pem_x509_certificate(pem.encode())
        with self.lock:
            self.issued.append((how, format(cert.serial_number, "x"), cert.public_bytes(Encoding.DER)))
        return cert


class GaveUp(Exception):
    pass


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    return float(value) if response.status_code == 503 and value and value.isdigit() else None


def http_client(url: str, root: str) -> httpx.Client:
    return httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=root), timeout=20)


def send(log: Log, what: str, request: Any) -> httpx.Response | None:
    """``request()`` until it is answered with anything but a retryable error; None: gave up."""
    deadline = time.monotonic() + GIVE_UP_S
    failed: float | None = None  # when it first failed
    while time.monotonic() < deadline:
        try:
            response: httpx.Response = request()
        except RETRYABLE_IO as exc:
            log.error(f"{what}: {type(exc).__name__}")
            failed = failed or time.monotonic()
            time.sleep(0.1)
            continue
        except httpx.TimeoutException as exc:
            log.violation(f"{what}: {type(exc).__name__} (no answer in 20 s)")
            continue
        wait = _retry_after(response)
        if wait is not None:
            log.error(f"{what}: 503 {response.json().get('type', '')} Retry-After {wait:g}")
            failed = failed or time.monotonic()
            time.sleep(min(wait, 10.0))
            continue
        if response.status_code == 503:
            log.violation(f"{what}: 503 without Retry-After: {response.text[:200]}")
            time.sleep(0.5)
            continue
        if failed:
            with log.lock:
                log.recovered.append((failed, time.monotonic()))
        return response
    log.violation(f"{what}: still failing after {GIVE_UP_S:g} s")
    return None


class RestClient(threading.Thread):
    """Redeems each of its tokens (retrying with the same token and CSR) and renews once."""

    def __init__(self, log: Log, url: str, root: str, tokens: list[str], stop: threading.Event, pace: float) -> None:
        super().__init__(daemon=True)
        self.log, self.url, self.root, self.tokens, self.stop_event, self.pace = log, url, root, tokens, stop, pace

    def run(self) -> None:
        with http_client(self.url, self.root) as http:
            for token in self.tokens:
                if self.stop_event.is_set():
                    return
                with self.log.lock:
                    self.log.tokens_started += 1
                try:
                    self.one(http, token)
                except GaveUp:
                    continue
                with self.log.lock:
                    self.log.tokens_done += 1
                time.sleep(self.pace)

    def one(self, http: httpx.Client, token: str) -> None:
        key = generate_private_key(KeyType.EC_P256)
        csr = csr_pem(key, []).decode()
        response = send(self.log, "sign", lambda: http.post("/v1/sign", json={"csr": csr, "token": token}))
        if response is None or response.status_code != 201:
            self.log.violation(f"sign: {response.status_code if response else '-'} "
                               f"{response.text[:300] if response else ''}")
            raise GaveUp()
        cert = self.log.got("sign", response.json()["certificate"])
        new_key = generate_private_key(KeyType.EC_P256)
        renew_csr = csr_pem(new_key, [])
        digest = proofs.csr_digest(x509.load_pem_x509_csr(renew_csr).public_bytes(Encoding.DER))

        def renew() -> httpx.Response:  # a fresh proof each time: a proof is single-use
            proof = proofs.make(key, [cert], proofs.RENEW, csr_sha256=digest)
            return http.post("/v1/renew", json={"csr": renew_csr.decode(), "proof": proof})
        response = send(self.log, "renew", renew)
        if response is None or response.status_code != 201:
            self.log.violation(f"renew: {response.status_code if response else '-'} "
                               f"{response.text[:300] if response else ''}")
            raise GaveUp()
        self.log.got("renew", response.json()["certificate"])


class AcmeClient(threading.Thread):
    """One account placing http-01 orders for 127.0.0.1 until ``stop``."""

    def __init__(self, log: Log, url: str, root: str, responder: Responder, stop: threading.Event,
                 pace: float) -> None:
        super().__init__(daemon=True)
        self.log, self.url, self.root, self.responder, self.stop_event, self.pace = \
            log, url, root, responder, stop, pace
        self.completed = 0

    def run(self) -> None:
        with http_client(self.url, self.root) as http:
            acme = self._connect(http)
            if acme is None:
                return
            while not self.stop_event.is_set():
                try:
                    self.order(acme)
                except GaveUp:
                    return
                time.sleep(self.pace)

    def _connect(self, http: httpx.Client) -> Acme | None:
        deadline = time.monotonic() + GIVE_UP_S
        while time.monotonic() < deadline:
            try:
                acme = Acme(http, "/acme/acme/directory")
                response = self.post(acme, acme.directory["newAccount"], {"termsOfServiceAgreed": True},
                                     use_jwk=True)
                acme.kid = response.headers["Location"]
                return acme
            except RETRYABLE_IO as exc:
                self.log.error(f"acme directory: {type(exc).__name__}")
                time.sleep(0.2)
        self.log.violation("acme: no account")
        return None

    def post(self, acme: Acme, url: str, payload: Any = None, allow: tuple[str, ...] = (),
             **kwargs: Any) -> httpx.Response:
        """One ACME POST until answered (badNonce: again with the fresh nonce it carried); a
        problem whose type is in ``allow`` is handed back, any other is a violation."""
        def attempt() -> httpx.Response:
            try:
                response: httpx.Response = acme.post(url, payload, retries=1, **kwargs)
            except RETRYABLE_IO:
                acme.saved_nonce = None
                raise
            if response.status_code == 400 and "badNonce" in response.text:
                if not response.headers.get("Replay-Nonce"):
                    self.log.violation("badNonce without a fresh nonce")
                raise httpx.RemoteProtocolError("badNonce")  # retried like a reset, counted as an error
            return response
        response = send(self.log, f"acme {url.rsplit('/', 2)[-2]}", attempt)
        if response is None:
            raise GaveUp()
        if response.status_code >= 400 and any(f"error:{kind}" in response.text for kind in allow):
            return response
        if response.status_code >= 400:
            self.log.violation(f"acme POST {url}: {response.status_code} {response.text[:300]}")
            raise GaveUp()
        return response

    def order(self, acme: Acme) -> None:
        order = self.post(acme, acme.directory["newOrder"], {"identifiers": [{"type": "ip", "value": "127.0.0.1"}]})
        order_url, body = order.headers["Location"], order.json()
        authz_url = body["authorizations"][0]
        authz = self.post(acme, authz_url).json()
        challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
        self.responder.publish(challenge["token"], acme.key_authorization(challenge["token"]))
        self.post(acme, challenge["url"], {})
        deadline = time.monotonic() + GIVE_UP_S
        while authz["status"] == "pending" and time.monotonic() < deadline:
            time.sleep(0.2)
            authz = self.post(acme, authz_url).json()
        if authz["status"] != "valid":
            self.log.violation(f"acme authz {authz['status']}: {json.dumps(authz)[:300]}")
            raise GaveUp()
        key = generate_private_key(KeyType.EC_P256)
        csr = csr_der(key, [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        # A finalize retried after its answer was lost finds the order processing or done: poll it.
        finalize_sent = time.monotonic()
        finalized = self.post(acme, body["finalize"], {"csr": b64(csr)}, allow=("orderNotReady",))
        body = finalized.json() if finalized.status_code < 400 else self.post(acme, order_url).json()
        while body["status"] == "processing" and time.monotonic() < deadline:
            time.sleep(0.2)
            body = self.post(acme, order_url).json()
        if body["status"] == "invalid" and "serverInternal" in json.dumps(body.get("error", {})):
            with self.log.lock:  # a crash cut the finalize: the order is over, place another
                self.log.orders_replaced += 1
                self.log.recovered.append((finalize_sent, time.monotonic()))  # it knows what to do from here
            self.log.error(f"acme order invalid: {body['error'].get('detail', '')}")
            return
        if body["status"] != "valid" or not body.get("certificate"):
            self.log.violation(f"acme order {body['status']}: {json.dumps(body)[:300]}")
            raise GaveUp()
        pem = self.post(acme, body["certificate"]).text
        self.log.got("acme", pem)
        self.completed += 1
