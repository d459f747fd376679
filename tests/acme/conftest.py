from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.testclient import TestClient

from trustyard.api.app import create_app
from trustyard.ca.authority import Authority
from trustyard.ca.config import Config, load_config
from trustyard.ca.home import InitOptions, init_home, load_authority
from trustyard.x509.names import parse_name

from ..support import PASSWORD
from .challtestsrv import ChallTestSrv, start_challtestsrv
from .client import Acme, b64, csr_der

ALLOW = ("*.internal", "127.0.0.0/8", "10.0.0.0/8")
DIRECTORY = "http://testserver/acme/acme/directory"


@pytest.fixture(scope="session")
def challtestsrv() -> Iterator[ChallTestSrv]:
    srv = start_challtestsrv()
    yield srv
    srv.stop()


@pytest.fixture
def acme_home(tmp_path: Path, db_url: str) -> Path:
    home = tmp_path / "ca"
    init_home(home, PASSWORD, InitOptions(allow=ALLOW, database_url=db_url))
    return home


def acme_config(home: Path, srv: ChallTestSrv, **changes: Any) -> Config:
    config = load_config(home)
    return replace(config, acme=replace(config.acme, http_port=srv.http_port, tls_port=srv.tls_port,
                                        resolver=srv.resolver, allow_targets=("127.0.0.0/8",),
                                        validation_timeout=5.0, **changes))


class Env:
    def __init__(self, http: TestClient, authority: Authority, srv: ChallTestSrv) -> None:
        self.http, self.authority, self.srv = http, authority, srv

    def client(self, **kwargs: Any) -> Acme:
        return Acme(self.http, DIRECTORY, **kwargs)

    def account(self, **kwargs: Any) -> Acme:
        acme = self.client(**kwargs)
        assert acme.register().status_code == 201
        return acme


def make_env(home: Path, srv: ChallTestSrv, **changes: Any) -> Iterator[Env]:
    config = acme_config(home, srv, **changes)
    authority = load_authority(home, PASSWORD, config=config)
    with TestClient(create_app(authority, config), raise_server_exceptions=False) as http:
        yield Env(http, authority, srv)
    authority.store.close()


@pytest.fixture
def env(acme_home: Path, challtestsrv: ChallTestSrv) -> Iterator[Env]:
    yield from make_env(acme_home, challtestsrv)


@pytest.fixture
def wildcard_env(acme_home: Path, challtestsrv: ChallTestSrv) -> Iterator[Env]:
    """An ACME directory whose provisioner sets ``wildcards = true``."""
    import tomllib

    import tomli_w

    path = acme_home / "trustyard.toml"
    doc = tomllib.loads(path.read_text())
    for provisioner in doc["provisioners"]:
        provisioner["wildcards"] = provisioner["name"] == "acme"
    path.write_text(tomli_w.dumps(doc))
    yield from make_env(acme_home, challtestsrv)


# -- flows -----------------------------------------------------------------------------------------

def poll(acme: Acme, url: str, until: tuple[str, ...] = ("valid", "invalid"), timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        doc = acme.post(url).json()
        if doc.get("status") in until or time.monotonic() > deadline:
            return doc
        time.sleep(0.05)


def provision(acme: Acme, srv: ChallTestSrv, authz: dict[str, Any], kind: str) -> dict[str, Any]:
    from trustyard.acme.challenges import dns01_txt

    challenge = next(c for c in authz["challenges"] if c["type"] == kind)
    key_auth = acme.key_authorization(challenge["token"])
    value = authz["identifier"]["value"]
    if kind == "http-01":
        srv.add_http01(challenge["token"], key_auth)
    elif kind == "dns-01":
        srv.set_txt(f"_acme-challenge.{value}", dns01_txt(key_auth))
    else:
        srv.add_tlsalpn01(value, key_auth)
    return challenge


def authorize(acme: Acme, srv: ChallTestSrv, order: dict[str, Any], kind: str = "http-01") -> None:
    for url in order["authorizations"]:
        authz = acme.post(url).json()
        if authz["status"] == "valid":
            continue
        challenge = provision(acme, srv, authz, kind)
        assert acme.post(challenge["url"], {}).status_code == 200
        done = poll(acme, url)
        assert done["status"] == "valid", done


def issue(acme: Acme, srv: ChallTestSrv, *names: str, kind: str = "http-01") -> tuple[dict[str, Any], str, Any]:
    """The whole flow; returns (order, PEM chain, certificate key)."""
    response = acme.new_order(*names)
    assert response.status_code == 201, response.text
    order_url = response.headers["Location"]
    authorize(acme, srv, response.json(), kind)
    order = poll(acme, order_url, ("ready", "invalid"))
    assert order["status"] == "ready", order
    key = ec.generate_private_key(ec.SECP256R1())
    finalized = acme.post(order["finalize"], {"csr": b64(csr_der(key, [parse_name(n) for n in names]))})
    assert finalized.status_code == 200, finalized.text
    order = poll(acme, order_url)
    assert order["status"] == "valid", order
    pem = acme.post(order["certificate"])
    assert pem.status_code == 200 and pem.headers["content-type"].startswith("application/pem-certificate-chain")
    return order, pem.text, key


def leaf(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificates(pem.encode())[0]
