"""The CA sheds signing load: past ``[server] max_pending`` requests in a worker's queue, or past
its ``latency_target`` of expected wait, a signing request is answered 503 with Retry-After
before any work, and every request it admitted is served. Against a real ``trustyard serve``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustyard.ca import proofs
from trustyard.ca.home import InitOptions, init_home, load_authority
from trustyard.testing import free_port

from .support import PASSWORD, new_csr, start_server, str_ctx

FLOOD = 48


def _configure(home: Path, **server: object) -> None:
    path = home / "trustyard.toml"
    doc = tomllib.loads(path.read_text())
    doc["server"].update(server)
    path.write_text(tomli_w.dumps(doc))


def _metric(text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else r"(?:\{\})?") + r" (\S+)"
    found = re.search(r"^" + pattern + r"$", text, re.M)
    return float(found.group(1)) if found else 0.0


def _flood(url: str, root: Path, path: str, bodies: list[dict[str, str]]) -> list[httpx.Response]:
    ctx = str_ctx(root)

    def send(body: dict[str, str]) -> httpx.Response:
        with httpx.Client(base_url=url, verify=ctx, timeout=60) as c:
            return c.post(path, json=body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(send, bodies))


def _check_shed(responses: list[httpx.Response]) -> tuple[list[httpx.Response], list[httpx.Response]]:
    admitted = [r for r in responses if r.status_code != 503]
    shed = [r for r in responses if r.status_code == 503]
    assert all(r.status_code == 201 for r in admitted), [r.text for r in admitted if r.status_code != 201]
    for r in shed:
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"] == "urn:trustyard:error:overloaded"
        assert r.headers["retry-after"].isdigit() and int(r.headers["retry-after"]) >= 1
    return admitted, shed


@pytest.mark.slow
def test_a_flood_of_signing_requests_is_shed_with_retry_after_and_the_queue_stays_capped(tmp_path: Path) -> None:
    """48 concurrent sign requests, then as many renewals, against one worker that admits at
    most 3 at once: some get 503 with Retry-After (an integer >= 1), every admitted one gets its
    certificate, the refusals are counted, and the worker never held more than 3."""
    home = tmp_path / "ca"
    init_home(home, PASSWORD, InitOptions(allow=("*.internal",)))
    _configure(home, max_pending=3, latency_target="50ms")
    authority = load_authority(home, PASSWORD, minting=True)
    try:
        tokens = [authority.mint_token("default", f"s{i}.internal", [f"s{i}.internal"], ttl=timedelta(minutes=10))
                  for i in range(FLOOD)]
    finally:
        authority.store.close()
    keys_csrs = [new_csr(f"s{i}.internal") for i in range(FLOOD)]
    server = start_server(home, workers=1)
    try:
        signed = _flood(server.url, server.root, "/v1/sign",
                        [{"csr": csr.decode(), "token": t} for (_k, csr), t in zip(keys_csrs, tokens, strict=True)])
        admitted, shed = _check_shed(signed)
        assert admitted and shed, [r.status_code for r in signed]
        for r in admitted:
            x509.load_pem_x509_certificate(r.json()["certificate"].encode())
        # a refused request did nothing: sent again, one at a time, its token still redeems
        bodies = [{"csr": csr.decode(), "token": token} for (_k, csr), token in zip(keys_csrs, tokens, strict=True)]
        with server.client() as c:
            for response, body in zip(signed, bodies, strict=True):
                if response.status_code == 503:
                    again = c.post("/v1/sign", json=body)
                    assert again.status_code == 201, again.text
                    admitted.append(again)

        # the same for renewals, with the certificates just issued
        renewals = []
        for r in admitted:
            cert = x509.load_pem_x509_certificate(r.json()["certificate"].encode())
            name = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            index = int(str(name.get_values_for_type(x509.DNSName)[0]).split(".")[0][1:])
            key = keys_csrs[index][0]
            _new_key, csr = new_csr(f"s{index}.internal")
            der = x509.load_pem_x509_csr(csr).public_bytes(Encoding.DER)
            proof = proofs.make(key, [cert], proofs.RENEW, csr_sha256=proofs.csr_digest(der))
            renewals.append({"csr": csr.decode(), "proof": proof})
        renewed = _flood(server.url, server.root, "/v1/renew", renewals)
        admitted_renewals, shed_renewals = _check_shed(renewed)
        assert admitted_renewals, [r.text for r in renewed]

        with server.client() as c:
            text = c.get("/metrics").text
        assert _metric(text, "trustyard_signing_shed_total", 'route="sign"') == len(shed)
        assert _metric(text, "trustyard_signing_shed_total", 'route="renew"') == len(shed_renewals)
        assert 1 <= _metric(text, "trustyard_signing_pending_peak") <= 3
    finally:
        server.stop()


def test_bad_admission_settings_are_refused_when_serve_starts(tmp_path: Path) -> None:
    home = tmp_path / "ca"
    init_home(home, PASSWORD, InitOptions(allow=("*.internal",)))
    for settings, message in (({"latency_target": "soon"}, "[server] latency_target"),
                              ({"latency_target": "0s"}, "[server] latency_target"),
                              ({"max_pending": 0}, "[server] max_pending = 0"),
                              ({"max_pending": "10"}, "[server] max_pending must be an integer")):
        text = (home / "trustyard.toml").read_text()
        _configure(home, **settings)
        code, err = _serve_exit(home)
        assert code == 2 and message in err, (settings, err)
        (home / "trustyard.toml").write_text(text)
    path = home / "trustyard.toml"
    path.write_text(path.read_text() + '\n[renewal]\nallow_after_expiry = "forever"\n')
    code, err = _serve_exit(home)
    assert code == 2 and "[renewal] allow_after_expiry" in err, err


def _serve_exit(home: Path) -> tuple[int, str]:
    """``trustyard serve`` that must refuse its configuration: (exit status, stderr)."""
    done = subprocess.run([sys.executable, "-m", "trustyard", "serve", "--home", str(home), "--listen",
                           f"127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "TRUSTYARD_PASSWORD": PASSWORD.decode()})
    return done.returncode, done.stderr


def test_clients_sending_their_bodies_slowly_hold_no_admission_slot(tmp_path: Path) -> None:
    """Four connections that send a sign request's headers and then dribble its body, against a
    worker that admits 2 at once: a real request meanwhile is signed, not refused as overloaded
    (no authentication is needed to send a slow body, so a slot must not be had that way)."""
    import socket
    import ssl

    home = tmp_path / "ca"
    init_home(home, PASSWORD, InitOptions(allow=("*.internal",)))
    _configure(home, max_pending=2)
    authority = load_authority(home, PASSWORD, minting=True)
    try:
        token = authority.mint_token("default", "real.internal", ["real.internal"], ttl=timedelta(minutes=10))
    finally:
        authority.store.close()
    server = start_server(home, workers=1)
    context = ssl.create_default_context(cafile=str(server.root))
    slow = []
    try:
        host, port = server.url.removeprefix("https://").rsplit(":", 1)
        for _ in range(4):
            conn = context.wrap_socket(socket.create_connection((host, int(port)), timeout=10), server_hostname=host)
            conn.sendall(b"POST /v1/sign HTTP/1.1\r\nHost: ca\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 4000\r\n\r\n{\"csr\": \"")
            slow.append(conn)
        _key, csr = new_csr("real.internal")
        with server.client() as c:
            answer = c.post("/v1/sign", json={"csr": csr.decode(), "token": token})
        assert answer.status_code == 201, answer.text
    finally:
        for conn in slow:
            conn.close()
        server.stop()
