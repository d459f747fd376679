"""An IP address is never a DNS identifier nor proved by DNS, a wildcard is
ordered only where the provisioner allows it, and an allow-listed domain suffix never reaches
loopback, link-local or metadata addresses."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

import pytest

from trustyard.acme.challenges import dns01_txt
from trustyard.acme.guard import TargetGuard, TargetRefused
from trustyard.acme.probes import Checker, Probe, Resolver

from .conftest import Env
from .test_protocol import problem
from .test_validation import Zone

KEY_AUTH = "tok.thumb"


@pytest.mark.parametrize("value", ["10.0.0.1", "127.0.0.1.", "10.1", "0x7f.0.0.1", "2130706433", "1.2.3.0x4"])
def test_an_ip_address_is_never_a_dns_identifier(env: Env, value: str) -> None:
    """10.0.0.0/8 and 127.0.0.0/8 are allowed here: ordered as ``dns``, the address would be
    proved by dns-01 (by whoever runs the DNS) and issued as an IP SAN."""
    acme = env.account()
    doc = problem(acme.post(acme.directory["newOrder"], {"identifiers": [{"type": "dns", "value": value}]}),
                  400, "rejectedIdentifier")
    assert "IP address" in doc["detail"]
    ok = acme.post(acme.directory["newOrder"], {"identifiers": [{"type": "ip", "value": "10.0.0.1"}]})
    assert ok.status_code == 201, ok.text
    for url in ok.json()["authorizations"]:
        assert "dns-01" not in {c["type"] for c in acme.post(url).json()["challenges"]}


def test_a_wildcard_is_ordered_only_where_the_provisioner_allows_it(env: Env) -> None:
    acme = env.account()  # allow *.internal, wildcards unset
    doc = problem(acme.new_order("*.svc.internal"), 400, "rejectedIdentifier")
    assert doc["subproblems"][0]["identifier"] == {"type": "dns", "value": "*.svc.internal"}


def test_a_wildcard_of_the_whole_allowed_zone_is_never_ordered(wildcard_env: Env) -> None:
    acme = wildcard_env.account()  # allow *.internal, wildcards = true
    problem(acme.new_order("*.internal"), 400, "rejectedIdentifier")
    assert acme.new_order("*.svc.internal").status_code == 201


class FixedResolver(Resolver):
    def __init__(self, *addresses: str) -> None:
        super().__init__()
        self.answers = [ipaddress.ip_address(a) for a in addresses]

    async def addresses(self, name: str, deadline: float) -> AsyncIterator[Any]:
        for address in self.answers:
            yield address


@pytest.fixture
def zone() -> Iterator[Zone]:
    z = Zone()
    yield z
    z.close()


def test_dns01_never_proves_an_ip_identifier(zone: Zone) -> None:
    """Even a challenge row that says so (an old database, a bug elsewhere): the TXT record is
    there, and still the validation authority refuses."""
    zone.records[("_acme-challenge.10.0.0.1", "TXT")] = [dns01_txt(KEY_AUTH)]
    zone.records[("_acme-challenge.web.internal", "TXT")] = [dns01_txt(KEY_AUTH)]
    checker = Checker(TargetGuard.from_allow_list(["10.0.0.0/8"]), Resolver(zone.resolver), 80, 443, 3.0)
    assert asyncio.run(checker.check(Probe("c1", "dns-01", "dns", "web.internal", KEY_AUTH))) is None
    error = asyncio.run(checker.check(Probe("c2", "dns-01", "ip", "10.0.0.1", KEY_AUTH)))
    assert error is not None and error["type"].endswith(":malformed") and "IP address" in error["detail"]


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1", "169.254.169.254",
                                     "169.254.10.10", "fe80::1", "fd00:ec2::254", "0.0.0.0", "2002:a9fe:a9fe::1",
                                     "2002:7f00:1::1", "64:ff9b::a9fe:a9fe"])
def test_an_allowed_suffix_never_reaches_loopback_link_local_or_metadata(address: str) -> None:
    guard = TargetGuard.from_allow_list([".svc.internal", "10.0.0.0/8"])
    with pytest.raises(TargetRefused):
        guard.check(ipaddress.ip_address(address), 80, "web.svc.internal")
    guard.check(ipaddress.ip_address("192.168.1.10"), 80, "web.svc.internal")  # what a suffix is for


def test_loopback_is_reached_when_listed_explicitly() -> None:
    guard = TargetGuard.from_allow_list([".svc.internal", "127.0.0.0/8"])
    guard.check(ipaddress.ip_address("127.0.0.2"), 80, "web.svc.internal")
    guard.check(ipaddress.ip_address("::ffff:127.0.0.2"), 80, "web.svc.internal")
    for address in ("169.254.169.254", "2002:a9fe:a9fe::1"):  # link-local and metadata: whatever is listed
        with pytest.raises(TargetRefused):
            TargetGuard.from_allow_list(["169.254.0.0/16", "::/0"]).check(ipaddress.ip_address(address), 80)


def test_http01_through_a_suffix_to_loopback_is_refused_unless_listed(zone: Zone) -> None:
    """Through the real resolver path: ``web.svc.internal`` resolves (local DNS server) to a
    loopback address, where the probe must not go unless 127.0.0.0/8 is listed."""
    import http.server
    import threading

    class Answer(http.server.BaseHTTPRequestHandler):
        hits: ClassVar[list[str]] = []

        def do_GET(self) -> None:
            self.hits.append(self.path)
            body = KEY_AUTH.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.3", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        zone.records[("web.svc.internal", "A")] = ["127.0.0.3"]
        zone.records[("meta.svc.internal", "A")] = ["169.254.169.254"]
        probe = Probe("c1", "http-01", "dns", "web.svc.internal", KEY_AUTH)

        def check(allow: list[str], p: Probe = probe) -> dict[str, Any] | None:
            checker = Checker(TargetGuard.from_allow_list(allow), Resolver(zone.resolver), port, port + 1, 3.0)
            return asyncio.run(checker.check(p))

        started = time.monotonic()
        error = check([".svc.internal"])
        assert error is not None and error["type"].endswith(":connection") and "loopback" in error["detail"]
        assert Answer.hits == [] and time.monotonic() - started < 3
        error = check([".svc.internal", "127.0.0.0/8"],
                      Probe("c2", "http-01", "dns", "meta.svc.internal", KEY_AUTH))
        assert error is not None and "metadata" in error["detail"]
        assert check([".svc.internal", "127.0.0.0/8"]) is None and Answer.hits == ["/.well-known/acme-challenge/tok"]
    finally:
        server.shutdown()
        server.server_close()
