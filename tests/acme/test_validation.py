"""The validation authority's SSRF guard, redirects, body cap, no echo, dialing the
checked address, timeouts and bounded concurrency (probes against local servers)."""

from __future__ import annotations

import asyncio
import http.server
import ipaddress
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

import pytest

from trustyard.acme.guard import TargetGuard, TargetRefused
from trustyard.acme.probes import Checker, Probe, Resolver
from trustyard.acme.validation import ValidationAuthority
from trustyard.testing import free_port

KEY_AUTH = "tok.thumb"


class FixedResolver(Resolver):
    """Answers every name with the given addresses and counts the lookups."""

    def __init__(self, *addresses: str) -> None:
        super().__init__()
        self.answers = [ipaddress.ip_address(a) for a in addresses]
        self.lookups = 0

    async def addresses(self, name: str, deadline: float) -> AsyncIterator[Any]:
        self.lookups += 1
        for address in self.answers:
            yield address


class Handler(http.server.BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[int, dict[str, str], bytes]]] = {}
    seen: ClassVar[list[tuple[str, str]]] = []

    def do_GET(self) -> None:
        self.seen.append((self.headers.get("Host", ""), self.connection.getsockname()[0]))
        if self.path.startswith("/hang"):
            time.sleep(3)
        status, headers, body = self.routes.get(self.path, (404, {}, b"no"))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def web() -> Iterator[tuple[int, type[Handler]]]:
    class H(Handler):
        routes: ClassVar[dict[str, tuple[int, dict[str, str], bytes]]] = {}
        seen: ClassVar[list[tuple[str, str]]] = []

    server = http.server.ThreadingHTTPServer(("127.0.0.2", 0), H)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], H
    server.shutdown()
    server.server_close()


def validate(probing: Checker, p: Probe) -> dict[str, Any] | None:
    return asyncio.run(probing.check(p))


def checker(port: int, resolver: Resolver | None = None, allow: tuple[str, ...] = ("127.0.0.0/8",),
            timeout: float = 2.0) -> Checker:
    return Checker(TargetGuard.from_allow_list(allow, own_ports={8443}), resolver or FixedResolver("127.0.0.2"),
                   http_port=port, tls_port=port + 1 if port < 65535 else port - 1, timeout=timeout)


def probe(value: str = "web.internal", kind: str = "http-01") -> Probe:
    return Probe("c1", kind, "dns", value, KEY_AUTH)


@pytest.mark.parametrize("address", ["169.254.169.254", "169.254.1.1", "fe80::1", "fd00:ec2::254", "224.0.0.1",
                                     "0.0.0.0", "::ffff:169.254.169.254"])
def test_guard_never_allows_link_local_or_metadata(address: str) -> None:
    guard = TargetGuard.from_allow_list(["0.0.0.0/0", "::/0", ".internal"])
    with pytest.raises(TargetRefused):
        guard.check(ipaddress.ip_address(address), 80, "meta.internal")


def test_guard_allow_list_and_own_port() -> None:
    guard = TargetGuard.from_allow_list(["10.0.0.0/8", ".svc.internal"], own_ports={8443})
    guard.check(ipaddress.ip_address("10.1.2.3"), 80)
    guard.check(ipaddress.ip_address("192.168.1.1"), 80, "a.svc.internal")  # by domain suffix
    for address, port, name in [("192.168.1.1", 80, "a.other.internal"), ("8.8.8.8", 80, None),
                                ("10.1.2.3", 8443, None)]:
        with pytest.raises(TargetRefused):
            guard.check(ipaddress.ip_address(address), port, name)


def test_http01_dials_the_checked_address_with_the_name_as_host(web: tuple[int, type[Handler]]) -> None:
    port, handler = web
    handler.routes["/.well-known/acme-challenge/tok"] = (200, {}, KEY_AUTH.encode() + b"\n")
    resolver = FixedResolver("127.0.0.2")
    assert validate(checker(port, resolver), probe()) is None
    assert handler.seen == [("web.internal", "127.0.0.2")] and resolver.lookups == 1


def test_http01_refuses_targets_outside_the_allow_list(web: tuple[int, type[Handler]]) -> None:
    port, handler = web
    handler.routes["/.well-known/acme-challenge/tok"] = (200, {}, KEY_AUTH.encode())
    error = validate(checker(port, FixedResolver("169.254.169.254")), probe())
    assert error and error["type"].endswith(":connection") and "link-local" in error["detail"]
    error = validate(checker(port, allow=("10.0.0.0/8",)), probe())
    assert error and "allow-list" in error["detail"] and handler.seen == []


def test_http01_redirects_at_most_ten(web: tuple[int, type[Handler]]) -> None:
    port, handler = web
    for i in range(11):
        handler.routes[f"/r{i}"] = (302, {"Location": f"/r{i + 1}"}, b"")
    handler.routes["/r11"] = (200, {}, KEY_AUTH.encode())
    handler.routes["/.well-known/acme-challenge/tok"] = (301, {"Location": "/r2"}, b"")
    assert validate(checker(port), probe()) is None  # exactly 10 redirects: /r2 ... /r11
    handler.routes["/.well-known/acme-challenge/tok"] = (301, {"Location": "/r1"}, b"")  # 11
    error = validate(checker(port), probe())
    assert error and "more than 10 redirects" in error["detail"]


def test_http01_redirect_to_metadata_or_other_port_is_refused(web: tuple[int, type[Handler]]) -> None:
    port, handler = web
    handler.routes["/.well-known/acme-challenge/tok"] = (302, {"Location": f"http://169.254.169.254:{port}/x"}, b"")
    error = validate(checker(port), probe())
    assert error and "link-local" in error["detail"]
    handler.routes["/.well-known/acme-challenge/tok"] = (302, {"Location": "http://127.0.0.2:22/x"}, b"")
    error = validate(checker(port), probe())
    assert error and "port 22" in error["detail"]


def test_http01_caps_the_body_and_never_echoes_it(web: tuple[int, type[Handler]]) -> None:
    port, handler = web
    handler.routes["/.well-known/acme-challenge/tok"] = (200, {}, b"SECRET" * 100_000)
    error = validate(checker(port), probe())
    assert error and "larger than" in error["detail"] and "SECRET" not in str(error)
    handler.routes["/.well-known/acme-challenge/tok"] = (200, {}, b"root:x:0:0:SECRET")
    error = validate(checker(port), probe())
    assert error and error["type"].endswith(":incorrectResponse") and "SECRET" not in str(error)
    handler.routes["/.well-known/acme-challenge/tok"] = (500, {}, b"SECRET stack trace")
    error = validate(checker(port), probe())
    assert error and "500" in error["detail"] and "SECRET" not in str(error)


def test_probe_timeout_is_bounded(web: tuple[int, type[Handler]]) -> None:
    port, handler = web
    handler.routes["/.well-known/acme-challenge/tok"] = (302, {"Location": "/hang"}, b"")
    started = time.monotonic()
    error = validate(checker(port, timeout=0.5), probe())
    assert error and time.monotonic() - started < 2
    with socket.socket() as closed:
        closed.bind(("127.0.0.2", 0))
        dead = closed.getsockname()[1]
    error = validate(checker(dead), probe())
    assert error and error["type"].endswith(":connection")


def test_validation_pool_bounds_concurrency() -> None:
    running, peak, lock, done = [0], [0], threading.Lock(), threading.Event()
    results: list[str] = []

    class Slow(Checker):
        async def check(self, p: Probe) -> dict[str, Any] | None:
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            await asyncio.sleep(0.05)
            with lock:
                running[0] -= 1
            return None

    def record(challenge_id: str, error: Any) -> None:
        results.append(challenge_id)
        if len(results) == 12:
            done.set()

    va = ValidationAuthority(Slow(TargetGuard(), Resolver(), 80, 443, 1.0), record, workers=3)
    for i in range(12):
        assert va.submit(Probe(f"c{i}", "http-01", "dns", "x.internal", KEY_AUTH))
    assert done.wait(10)
    va.shutdown()
    assert peak[0] == 3 and sorted(results) == sorted(f"c{i}" for i in range(12))


class CountingResolver(Resolver):
    """The real resolver against pebble-challtestsrv's DNS, counting lookups by type."""

    def __init__(self, server: str) -> None:
        super().__init__(server)
        self.asked: list[str] = []

    async def _query(self, name: str, rdtype: str, deadline: float) -> Any:
        self.asked.append(rdtype)
        return await super()._query(name, rdtype, deadline)


def test_aaaa_is_looked_up_only_when_the_a_addresses_fail(web: tuple[int, type[Handler]], challtestsrv: Any) -> None:
    port, handler = web
    handler.routes["/.well-known/acme-challenge/tok"] = (200, {}, KEY_AUTH.encode())
    challtestsrv.add_a("v4.internal", "127.0.0.2")
    resolver = CountingResolver(challtestsrv.resolver)
    assert validate(checker(port, resolver), probe("v4.internal")) is None
    assert resolver.asked == ["A"] and handler.seen == [("v4.internal", "127.0.0.2")]

    challtestsrv.add_a("down.internal", "127.0.0.3")  # nothing listens there
    resolver = CountingResolver(challtestsrv.resolver)
    error = validate(checker(port, resolver), probe("down.internal"))
    assert error and error["type"].endswith(":connection") and "127.0.0.3" in error["detail"]
    assert resolver.asked == ["A", "AAAA"]


def test_a_failed_aaaa_lookup_after_failed_a_addresses_still_names_them(challtestsrv: Any) -> None:
    class BrokenAAAA(CountingResolver):
        async def _query(self, name: str, rdtype: str, deadline: float) -> Any:
            records = await super()._query(name, rdtype, deadline)  # counted
            if rdtype == "AAAA":
                raise TimeoutError()
            return records

    challtestsrv.add_a("half.internal", "127.0.0.3")  # nothing listens there
    resolver = BrokenAAAA(challtestsrv.resolver)
    error = validate(checker(free_port("127.0.0.2"), resolver), probe("half.internal"))
    assert error and error["type"].endswith(":connection"), error
    assert "127.0.0.3" in error["detail"] and "AAAA" in error["detail"] and resolver.asked == ["A", "AAAA"]


class Instant(Checker):
    """A checker that answers at once: the tests below are about where probes run and record."""

    def __init__(self) -> None:
        super().__init__(TargetGuard(), Resolver(), 80, 443, 1.0)
        self.threads: list[int] = []

    async def check(self, p: Probe) -> dict[str, Any] | None:
        self.threads.append(threading.get_ident())
        return None


def test_a_probe_runs_and_is_recorded_on_the_loop_that_submitted_it() -> None:
    """No thread competes with the event loop: the probe is a task of the submitting loop, and
    its result is written there. Without a running loop, the authority's own loop serves."""
    recorded: list[tuple[str, int]] = []
    checker_ = Instant()
    va = ValidationAuthority(checker_, lambda cid, error: recorded.append((cid, threading.get_ident())))

    async def submit_and_wait() -> int:
        assert va.submit(Probe("on-loop", "http-01", "dns", "x.internal", KEY_AUTH))
        for _ in range(200):
            if recorded:
                break
            await asyncio.sleep(0.01)
        return threading.get_ident()

    loop_thread = asyncio.run(submit_and_wait())
    assert recorded == [("on-loop", loop_thread)] and checker_.threads == [loop_thread]
    assert va.submit(Probe("no-loop", "http-01", "dns", "x.internal", KEY_AUTH))
    va.shutdown()  # waits for the probes on the authority's own loop
    assert recorded[1][0] == "no-loop" and recorded[1][1] not in (loop_thread, threading.get_ident())
    assert checker_.threads[1] == recorded[1][1]


def test_probes_on_a_loop_share_its_bound() -> None:
    running, peak = [0], [0]

    class Slow(Instant):
        async def check(self, p: Probe) -> dict[str, Any] | None:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            await asyncio.sleep(0.05)
            running[0] -= 1
            return None

    recorded: list[str] = []
    va = ValidationAuthority(Slow(), lambda cid, error: recorded.append(cid), workers=2)

    async def burst() -> None:
        for i in range(6):
            assert va.submit(Probe(f"c{i}", "http-01", "dns", "x.internal", KEY_AUTH))
        while len(recorded) < 6:
            await asyncio.sleep(0.01)

    asyncio.run(asyncio.wait_for(burst(), 10))
    assert peak[0] == 2 and sorted(recorded) == [f"c{i}" for i in range(6)]


@pytest.fixture
def raw() -> Iterator[tuple[int, list[Any]]]:
    """A TCP server on 127.0.0.2 that answers each connection with the next script: bytes to
    send then close, or a callable that gets the socket."""
    scripts: list[Any] = []
    server = socket.socket()
    server.bind(("127.0.0.2", 0))
    server.listen(8)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(4096)
                    script = scripts.pop(0) if scripts else b""
                    if callable(script):
                        script(conn)
                    else:
                        conn.sendall(script)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], scripts
    stop.set()
    server.close()


def test_http01_refuses_a_head_that_never_ends(raw: tuple[int, list[Any]]) -> None:
    port, scripts = raw
    sent = [0]

    def endless_header(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Filler: ")
        while sent[0] < 50_000_000:
            conn.sendall(b"a" * 65536)
            sent[0] += 65536

    scripts.append(endless_header)
    started = time.monotonic()
    error = validate(checker(port, timeout=5.0), probe())
    assert error and error["type"].endswith(":incorrectResponse") and "headers larger" in error["detail"]
    assert time.monotonic() - started < 3 and sent[0] < 5_000_000  # stopped reading at the cap


def test_http01_responses_cut_short_or_upgraded_are_failures(raw: tuple[int, list[Any]]) -> None:
    port, scripts = raw
    key = KEY_AUTH.encode()
    cases = [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + key, ":connection"),            # short body
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n" + key + b"\r\n", ":connection"),  # no end
        (b"HTTP/1.1 2", ":connection"),                                                        # no status line
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n", ":incorrectResponse"),
        (b"HTTP/1.1 200 OK\r\n\r\n" + key, None),                                              # ends at close
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n" + key + b"\r\n0\r\n\r\n", None),
    ]
    for response, expected in cases:
        scripts.append(response)
        error = validate(checker(port), probe())
        if expected is None:
            assert error is None, (response, error)
        else:
            assert error and error["type"].endswith(expected), (response, error)
            if expected == ":connection":
                assert "ended early" in error["detail"] or "no status line" in error["detail"], error


def test_a_dns_server_that_never_answers_is_named_as_such() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        resolver = Resolver(f"127.0.0.1:{silent.getsockname()[1]}")
        error = validate(checker(80, resolver, timeout=0.5), probe())
    assert error and error["type"].endswith(":dns") and "DNS lookup of A" in error["detail"], error


def test_a_probe_cancelled_before_it_ran_leaves_the_queue_count_right() -> None:
    va = ValidationAuthority(Instant(), lambda cid, error: None)

    async def submit_and_cancel() -> None:
        assert va.submit(Probe("gone", "http-01", "dns", "x.internal", KEY_AUTH))
        for task in list(va._tasks):
            task.cancel()
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(submit_and_cancel())
    assert va._queued == 0


class Zone:
    """A DNS server on loopback (UDP and TCP, messages by dnspython) answering from ``records``
    (a CNAME is followed within the zone, and ``extra`` records go into every answer):
    unknown names get NXDOMAIN, ``servfail`` names SERVFAIL; it ignores the first ``drop``
    UDP queries, and a UDP answer over 512 bytes goes out truncated, as servers do."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[str]] = {}
        self.extra: list[tuple[str, str, str]] = []
        self.servfail: set[str] = set()
        self.drop = 0
        self.udp_queries = self.tcp_queries = 0
        self.udp, self.tcp = self._bind_pair()
        self.port = self.udp.getsockname()[1]
        self.tcp.listen()
        self.resolver = f"127.0.0.1:{self.port}"
        for target in (self._serve_udp, self._serve_tcp):
            threading.Thread(target=target, daemon=True).start()

    @staticmethod
    def _bind_pair() -> tuple[socket.socket, socket.socket]:
        # The UDP port the kernel picks may be taken for TCP by another process: try again.
        for _ in range(50):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("127.0.0.1", 0))
            tcp = socket.socket()
            try:
                tcp.bind(("127.0.0.1", udp.getsockname()[1]))
            except OSError:
                udp.close()
                tcp.close()
                continue
            return udp, tcp
        raise RuntimeError("no loopback port free for both UDP and TCP")

    def answer(self, wire: bytes) -> Any:
        import dns.message
        import dns.rcode
        import dns.rrset

        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        question = query.question[0]
        name, rdtype = question.name.to_text(omit_final_dot=True), dns.rdatatype.to_text(question.rdtype)
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif not any(n == name for n, _ in self.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
        else:
            owner = name
            while (owner, "CNAME") in self.records and rdtype != "CNAME":
                target = self.records[owner, "CNAME"][0]
                response.answer.append(dns.rrset.from_text(owner + ".", 60, "IN", "CNAME", target + "."))
                owner = target
            if (owner, rdtype) in self.records:
                values = [f'"{v}"' if rdtype == "TXT" else v for v in self.records[owner, rdtype]]
                response.answer.append(dns.rrset.from_text(owner + ".", 60, "IN", rdtype, *values))
            for other, kind, value in self.extra:
                response.answer.append(dns.rrset.from_text(other + ".", 60, "IN", kind, value))
        return response

    def _serve_udp(self) -> None:
        import dns.flags

        while True:
            try:
                wire, peer = self.udp.recvfrom(65535)
            except OSError:
                return
            self.udp_queries += 1
            if self.drop > 0:
                self.drop -= 1
                continue
            response = self.answer(wire)
            data = response.to_wire()
            if len(data) > 512:
                response.answer.clear()
                response.flags |= dns.flags.TC
                data = response.to_wire()
            self.udp.sendto(data, peer)

    def _serve_tcp(self) -> None:
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            with conn:
                self.tcp_queries += 1
                size = int.from_bytes(conn.recv(2), "big")
                wire = b""
                while len(wire) < size:
                    chunk = conn.recv(size - len(wire))
                    if not chunk:
                        break
                    wire += chunk
                if len(wire) == size:
                    data = self.answer(wire).to_wire()
                    conn.sendall(len(data).to_bytes(2, "big") + data)

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()


@pytest.fixture
def zone() -> Iterator[Zone]:
    z = Zone()
    yield z
    z.close()


def lookup(resolver: Resolver, name: str, kind: str = "A", within: float = 3.0) -> Any:
    async def run() -> Any:
        deadline = time.monotonic() + within
        if kind == "TXT":
            return await resolver.txt(name, deadline)
        return [str(a) async for a in resolver.addresses(name, deadline)]
    return asyncio.run(run())


def test_a_configured_server_answers_addresses_and_txt(zone: Zone) -> None:
    zone.records[("web.internal", "A")] = ["127.0.0.7", "127.0.0.8"]
    zone.records[("web.internal", "AAAA")] = ["::1"]
    zone.records[("_acme-challenge.web.internal", "TXT")] = ["digest-one", "digest-two"]
    resolver = Resolver(zone.resolver)
    found = lookup(resolver, "web.internal")
    assert sorted(found[:2]) == ["127.0.0.7", "127.0.0.8"] and found[2:] == ["::1"]  # A first, then AAAA
    assert sorted(lookup(resolver, "_acme-challenge.web.internal", "TXT")) == ["digest-one", "digest-two"]


def test_nxdomain_and_servfail_are_named(zone: Zone) -> None:
    from trustyard.acme.probes import ValidationFailed

    zone.servfail.add("broken.internal")
    resolver = Resolver(zone.resolver)
    for name, kind, said in [("nowhere.internal", "A", "nowhere.internal does not exist (NXDOMAIN)"),
                             ("nowhere.internal", "TXT", "no TXT record at nowhere.internal (NXDOMAIN)"),
                             ("broken.internal", "A", "DNS lookup of A broken.internal failed"),
                             ("broken.internal", "TXT", "DNS lookup of TXT broken.internal failed")]:
        with pytest.raises(ValidationFailed) as caught:
            lookup(resolver, name, kind)
        assert caught.value.kind == "dns" and caught.value.detail == said


def test_a_lost_udp_query_is_sent_again_and_a_truncated_answer_comes_over_tcp(
        zone: Zone, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Resolver, "ATTEMPT", 0.3)
    zone.records[("lossy.internal", "A")] = ["127.0.0.9"]
    zone.drop = 1
    started = time.monotonic()
    assert lookup(Resolver(zone.resolver), "lossy.internal") == ["127.0.0.9"]
    assert zone.udp_queries >= 2 + 1 and 0.25 <= time.monotonic() - started < 2  # A twice (or more), then AAAA

    many = [f"{i:02d}-" + "x" * 60 for i in range(12)]  # ~900 bytes: more than UDP's 512
    zone.records[("_acme-challenge.big.internal", "TXT")] = many
    assert sorted(lookup(Resolver(zone.resolver), "_acme-challenge.big.internal", "TXT")) == many
    assert zone.tcp_queries == 1


def test_a_server_that_never_answers_fails_the_lookup_at_the_deadline(zone: Zone) -> None:
    from trustyard.acme.probes import ValidationFailed

    zone.drop = 1000
    started = time.monotonic()
    with pytest.raises(ValidationFailed) as caught:
        lookup(Resolver(zone.resolver), "web.internal", within=0.8)
    assert caught.value.detail == "DNS lookup of A web.internal failed"
    assert 0.7 <= time.monotonic() - started < 1.5 and zone.udp_queries >= 1


def test_each_lookup_asks_the_server_again(zone: Zone) -> None:
    """No answer is remembered: a TXT record changed for the next dns-01 validation, or a name
    published after a failed attempt, is seen by the very next lookup on the same loop."""
    from trustyard.acme.probes import ValidationFailed

    resolver = Resolver(zone.resolver)

    async def twice() -> tuple[list[str], list[str], str, list[str]]:
        deadline = time.monotonic() + 3
        zone.records[("_acme-challenge.w.internal", "TXT")] = ["first"]
        first = await resolver.txt("_acme-challenge.w.internal", deadline)
        zone.records[("_acme-challenge.w.internal", "TXT")] = ["second"]
        second = await resolver.txt("_acme-challenge.w.internal", deadline)
        try:
            await resolver.txt("_acme-challenge.late.internal", deadline)
            missing = "found"
        except ValidationFailed as exc:
            missing = exc.detail
        zone.records[("_acme-challenge.late.internal", "TXT")] = ["published"]
        return first, second, missing, await resolver.txt("_acme-challenge.late.internal", deadline)

    first, second, missing, late = asyncio.run(twice())
    assert (first, second, late) == (["first"], ["second"], ["published"])
    assert missing == "no TXT record at _acme-challenge.late.internal (NXDOMAIN)"


def test_only_records_at_the_name_or_its_cname_chain_count(zone: Zone) -> None:
    zone.records[("alias.internal", "CNAME")] = ["web.internal"]
    zone.records[("web.internal", "A")] = ["127.0.0.7"]
    zone.extra.append(("other.internal", "A", "10.9.9.9"))  # an answer for a name nobody asked about
    assert lookup(Resolver(zone.resolver), "alias.internal") == ["127.0.0.7"]


@pytest.mark.parametrize("name", ["a..b.internal", "x" * 64 + ".internal", "\udcff.internal",
                                  "\u00e9" * 254 + ".internal"])
def test_a_name_dns_cannot_carry_fails_as_a_lookup(zone: Zone, web: tuple[int, type[Handler]], name: str) -> None:
    """Redirect targets come from the target: a name c-ares refuses is a DNS failure, not a
    server error."""
    from trustyard.acme.probes import ValidationFailed

    with pytest.raises(ValidationFailed) as caught:
        lookup(Resolver(zone.resolver), name)
    assert caught.value.kind == "dns" and caught.value.detail == f"DNS lookup of A {name} failed"
    if not name.isascii():
        return  # a Location header cannot carry it
    port, handler = web
    handler.routes["/.well-known/acme-challenge/tok"] = (302, {"Location": f"http://{name}:{port}/x"}, b"")
    zone.records[("web.internal", "A")] = ["127.0.0.2"]  # where the web fixture listens
    error = validate(checker(port, Resolver(zone.resolver)), probe("web.internal"))
    assert error and error["type"].endswith(":dns"), error


def test_lookups_leave_no_sockets_behind(zone: Zone) -> None:
    """A lookup cut short by its deadline closes its channel and socket, whatever loop ran it."""
    import os

    from trustyard.acme.probes import ValidationFailed

    zone.records[("web.internal", "A")] = ["127.0.0.7"]
    lookup(Resolver(zone.resolver), "web.internal")  # pycares's clean-up thread, and earlier tests' channels
    time.sleep(0.5)
    zone.drop = 1000
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        with pytest.raises(ValidationFailed):
            lookup(Resolver(zone.resolver), "web.internal", within=0.2)
    deadline = time.monotonic() + 5
    while len(os.listdir("/proc/self/fd")) > before and time.monotonic() < deadline:
        time.sleep(0.05)  # pycares closes a channel in its clean-up thread
    assert len(os.listdir("/proc/self/fd")) <= before


def test_a_socket_c_ares_stops_writing_to_is_no_longer_watched_for_writing() -> None:
    """A watched writable socket would wake the loop on every iteration."""
    from trustyard.acme.cares import _Lookup

    async def follow() -> list[tuple[bool, bool]]:
        loop = asyncio.get_running_loop()
        lookup_ = _Lookup(loop, {"servers": ["127.0.0.1:9"]})
        a, b = socket.socketpair()
        seen = []
        try:
            for readable, writable in ((True, True), (True, False), (False, False)):
                lookup_._socket_state(a.fileno(), readable, writable)
                seen.append((a.fileno() in lookup_._readers, a.fileno() in lookup_._writers))
        finally:
            lookup_.close()
            a.close()
            b.close()
        return seen

    assert asyncio.run(follow()) == [(True, True), (True, False), (False, False)]


def test_international_names_are_asked_in_their_ascii_form(zone: Zone) -> None:
    zone.records[("xn--bcher-kva.internal", "A")] = ["127.0.0.8"]
    assert lookup(Resolver(zone.resolver), "b\u00fccher.internal") == ["127.0.0.8"]


def test_a_cname_chain_counts_in_whatever_order_the_answer_lists_it() -> None:
    import pycares

    from trustyard.acme.cares import _records

    def record(name: str, kind: int, data: Any) -> Any:
        return pycares.DNSRecord(name=name, type=kind, record_class=1, ttl=60, data=data)

    answer = [record("y.internal", pycares.QUERY_TYPE_CNAME, pycares.CNAMERecordData(cname="Z.internal.")),
              record("z.internal", pycares.QUERY_TYPE_A, pycares.ARecordData(addr="127.0.0.9")),
              record("X.internal", pycares.QUERY_TYPE_CNAME, pycares.CNAMERecordData(cname="y.internal")),
              record("x.internal", pycares.QUERY_TYPE_CNAME, pycares.CNAMERecordData(cname="x.internal"))]
    assert [r.addr for r in _records(answer, "x.internal.", pycares.QUERY_TYPE_A)] == ["127.0.0.9"]


def test_without_a_server_a_name_dns_cannot_carry_is_a_dns_failure() -> None:
    from trustyard.acme.probes import ValidationFailed

    with pytest.raises(ValidationFailed) as caught:
        lookup(Resolver(), "a..b.internal")
    assert caught.value.kind == "dns" and caught.value.detail == "no address found for a..b.internal"
