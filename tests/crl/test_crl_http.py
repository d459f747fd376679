"""GET /crl/...: the stored bytes with caching headers; garbage gets a fast 404 without touching
the database (a well-formed path costs one primary-key lookup), never a 500."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from cryptography import x509
from starlette.testclient import TestClient

from trustyard.api.app import create_app
from trustyard.ca.authority import Authority
from trustyard.ca.config import load_config
from trustyard.ca.crl_job import CrlJob
from trustyard.ca.home import load_authority
from trustyard.store.crls import CrlStore

from ..support import PASSWORD
from .helpers import cdp_url, crl_home, issue


@pytest.fixture
def crl_app(tmp_path: Path) -> Iterator[tuple[TestClient, Authority, CrlJob]]:
    home = crl_home(tmp_path / "ca", crl={"shards": 4, "delay": "30s"}, url="https://testserver")
    authority = load_authority(home, PASSWORD, minting=True)
    job = CrlJob(load_config(home), PASSWORD, authority.store)
    with TestClient(create_app(authority, load_config(home)), raise_server_exceptions=False) as client:
        yield client, authority, job
    authority.store.close()


def test_a_crl_is_served_with_its_type_etag_and_cache_lifetime(crl_app: tuple[TestClient, Authority, CrlJob]) -> None:
    client, authority, job = crl_app
    issued, _ = issue(authority, "a.internal")
    path = cdp_url(issued.certificate).removeprefix("https://testserver")
    assert client.get(path).status_code == 404  # not generated yet
    job.tick()
    answer = client.get(path)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(answer.content)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert answer.headers["etag"].endswith(f'-{number}"')
    assert parsedate_to_datetime(answer.headers["last-modified"]) == crl.last_update_utc
    assert answer.headers["cache-control"] == "public, max-age=30"  # the delay: less than nextUpdate
    again = client.get(path, headers={"If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    authority.revoke(issued.record.serial, "keyCompromise", admin=True)
    assert client.get(path).content == answer.content  # the revoke path builds no CRL itself
    job.clock = lambda: datetime.now(UTC) + job.delay  # its shard's mark is half a delay old
    job.tick()
    newer = client.get(path, headers={"If-None-Match": answer.headers["etag"]})
    assert newer.status_code == 200 and newer.headers["etag"] != answer.headers["etag"]


GARBAGE = ["/crl/", "/crl/x", "/crl/zz/1.crl", "/crl/0123456789ABCDEF/1.crl", "/crl/0123456789abcdef/4.crl",
           "/crl/0123456789abcdef/1.der", "/crl/0123456789abcdef/-1.crl", "/crl/0123456789abcdef/99999.crl",
           "/crl/0123456789abcdef/1.crl/x", "/crl/" + "a" * 5000 + "/1.crl", "/crl/0123456789abcdef/%00.crl",
           "/crl/../v1/roots/1.crl", "/crl/%2e%2e/%2e%2e/1.crl"]


def test_garbage_crl_paths_get_a_fast_404_without_a_database_lookup(
        crl_app: tuple[TestClient, Authority, CrlJob], monkeypatch: pytest.MonkeyPatch) -> None:
    client, _authority, job = crl_app
    job.tick()
    lookups: list[tuple[str, int]] = []
    real = CrlStore.get
    monkeypatch.setattr(CrlStore, "get", lambda self, ident, shard: lookups.append((ident, shard)) or real(
        self, ident, shard))
    started = time.perf_counter()
    for _ in range(20):
        for path in GARBAGE:
            answer = client.get(path)
            assert answer.status_code == 404, (path, answer.status_code)
    took = (time.perf_counter() - started) / (20 * len(GARBAGE))
    assert took < 0.02, f"{took * 1000:.1f} ms per garbage request"
    assert lookups == []
    # A well-formed path of an unknown issuer: one lookup, then 404.
    assert client.get("/crl/0123456789abcdef/1.crl").status_code == 404
    assert lookups == [("0123456789abcdef", 1)]
