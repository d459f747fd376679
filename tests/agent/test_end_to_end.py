"""Real processes end to end: a CA, a uvicorn service and an httpx client, each
side's certificates kept by its own agent; nginx reloaded by an agent, checked with curl."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustyard.testing import free_port
from trustyard.tls import client_context
from trustyard.x509.keys import KeyType, generate_private_key, private_key_pem
from trustyard.x509.profiles import root_builder, sign

from ..nginx import nginx_conf, start_nginx, stop_nginx
from ..support import Server
from .helpers import AgentProcess, agent_args, mint, serial_of, wait_for

HERE = Path(__file__).parent


def once(ca: Server, out: Path, name: str, token: Path, *extra: str) -> None:
    done = subprocess.run([sys.executable, "-m", "trustyard", "agent", *agent_args(ca, out, name, token),
                           "--once", *extra], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def peer_serial(response: httpx.Response) -> str:
    ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
    return format(x509.load_der_x509_certificate(ssl_object.getpeercert(True)).serial_number, "x")


@pytest.mark.slow
def test_service_and_client_rotate_twice_under_load_with_zero_failures(tmp_path: Path, ca: Server) -> None:
    server_dir, client_dir, intruder_dir = tmp_path / "api", tmp_path / "web", tmp_path / "intruder"
    tokens = {}
    for label, name, sans in (("api", "api.internal", ("api.internal", "127.0.0.1")),
                              ("web", "web.internal", ("web.internal", "spiffe://prod.internal/web")),
                              ("intruder", "intruder.internal",
                               ("intruder.internal", "spiffe://prod.internal/intruder"))):
        tokens[label] = tmp_path / f"{label}.token"
        tokens[label].write_text(mint(ca.home, name, *sans))
    lifetime = ("--ttl", "60s", "--renew-at", "50%")
    once(ca, server_dir, "api.internal", tokens["api"], "--san", "api.internal", "--san", "127.0.0.1", *lifetime)
    once(ca, client_dir, "web.internal", tokens["web"], "--san", "web.internal", "--san",
         "spiffe://prod.internal/web", *lifetime)
    policy = tmp_path / "callers.toml"
    policy.write_text('[[allow]]\nidentities = ["spiffe://prod.internal/web"]\n')
    port = free_port()
    service_log = (tmp_path / "service.log").open("wb")
    service = subprocess.Popen([sys.executable, str(HERE / "e2e_app.py"), str(server_dir), str(policy), str(port)],
                               stdout=service_log, stderr=subprocess.STDOUT)
    agents = [
        AgentProcess(agent_args(ca, server_dir, "api.internal", tokens["api"], *lifetime, "--verify-endpoint",
                                f"127.0.0.1:{port}"), tmp_path / "agent-api.log"),
        AgentProcess(agent_args(ca, client_dir, "web.internal", tokens["web"], *lifetime), tmp_path / "agent-web.log"),
    ]
    url = f"https://127.0.0.1:{port}/orders"
    ctx = client_context(client_dir)
    failures: list[str] = []
    server_serials: set[str] = set()
    client_serials: set[str] = set()
    count = [0]
    stop = threading.Event()

    def fresh_connections() -> None:
        while not stop.is_set():
            try:
                with httpx.Client(verify=ctx, timeout=10) as client, client.stream("GET", url) as response:
                    response.read()
                    server_serials.add(peer_serial(response))
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text}")
                    else:
                        client_serials.add(response.json()["client_serial"])
            except httpx.HTTPError as exc:
                failures.append(repr(exc))
            count[0] += 1

    def keep_alive() -> None:  # one connection across rotations: open connections are undisturbed
        with httpx.Client(verify=ctx, timeout=10) as client:
            while not stop.is_set():
                try:
                    response = client.get(url)
                    if response.status_code != 200:
                        failures.append(f"keep-alive {response.status_code}")
                except httpx.HTTPError as exc:
                    failures.append(f"keep-alive {exc!r}")
                count[0] += 1
                time.sleep(0.05)

    try:
        wait_for(lambda: _answers(url, ctx), timeout=30, what="the service")
        threads = [threading.Thread(target=fresh_connections), threading.Thread(target=keep_alive)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: (len(server_serials) >= 3 and len(client_serials) >= 3) or bool(failures),
                     timeout=150, interval=0.5, what="two rotations of both sides")
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        assert failures == []
        assert len(server_serials) >= 3 and len(client_serials) >= 3  # >= 2 rotations each side
        assert count[0] > 200
        assert "serves serial" in agents[0].text()  # the server agent proved each rotation live

        # A third identity, valid certificate from the same CA, outside the service's policy.
        once(ca, intruder_dir, "intruder.internal", tokens["intruder"], "--san", "intruder.internal", "--san",
             "spiffe://prod.internal/intruder", *lifetime)
        with httpx.Client(verify=client_context(intruder_dir), timeout=10) as client:
            refused = client.get(url)
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/problem+json"
        assert "spiffe://prod.internal/intruder" in refused.json()["detail"]

        # A self-signed client certificate fails the handshake.
        rogue = tmp_path / "rogue"
        rogue.mkdir()
        key = generate_private_key(KeyType.EC_P256)
        cert = sign(root_builder(key.public_key(), "web.internal", datetime.now(UTC) - timedelta(minutes=1),  # type: ignore[arg-type]
                                 timedelta(days=1)), key)
        (rogue / "tls.crt").write_bytes(cert.public_bytes(Encoding.PEM))
        (rogue / "tls.key").write_bytes(private_key_pem(key))
        shutil.copy(server_dir / "ca.crt", rogue / "ca.crt")
        with (pytest.raises((httpx.TransportError, ssl.SSLError)),
              httpx.Client(verify=client_context(rogue), timeout=10) as client):
            client.get(url)
    finally:
        for agent in agents:
            agent.stop()
        service.terminate()
        service.wait(10)
        service_log.close()


def _answers(url: str, ctx: ssl.SSLContext) -> bool:
    try:
        with httpx.Client(verify=ctx, timeout=5) as client:
            return client.get(url).status_code == 200
    except httpx.HTTPError:
        return False


def curl_serial(port: int, certs: Path) -> str:
    done = subprocess.run(["curl", "-sS", "--cacert", str(certs / "ca.crt"), "--resolve",
                           f"edge.internal:{port}:127.0.0.1", "-w", "%{certs}", "-o", "/dev/null",
                           f"https://edge.internal:{port}/"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return format(x509.load_pem_x509_certificates(done.stdout.encode())[0].serial_number, "x")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx missing: scripts/apt-packages.txt installs it")
def test_nginx_reloaded_by_the_agent_serves_each_new_certificate(tmp_path: Path, ca: Server) -> None:
    certs, run_dir, port = tmp_path / "certs", tmp_path / "nginx", free_port()
    run_dir.mkdir()
    token = tmp_path / "token"
    token.write_text(mint(ca.home, "edge.internal"))
    once(ca, certs, "edge.internal", token, "--ttl", "20s")
    start_nginx(run_dir, nginx_conf(run_dir, port, certs))
    pid_file = run_dir / "nginx.pid"
    agent = None
    try:
        first = curl_serial(port, certs)
        assert first == format(serial_of(certs) or 0, "x")
        agent = AgentProcess(agent_args(ca, certs, "edge.internal", token, "--renew-at", "50%", "--reload-signal",
                                        "HUP", "--pid-file", str(pid_file), "--verify-endpoint",
                                        f"127.0.0.1:{port}"), tmp_path / "agent.log")
        seen = {first}
        deadline = time.monotonic() + 60
        while len(seen) < 3 and time.monotonic() < deadline:
            seen.add(curl_serial(port, certs))
            time.sleep(0.5)
        assert len(seen) >= 3, agent.text()  # two rotations, each picked up by nginx after the agent's HUP
        assert "sent SIGHUP to pid" in agent.text() and "serves serial" in agent.text()
        assert curl_serial(port, certs) == format(serial_of(certs) or 0, "x") or "renewed" in agent.text()
    finally:
        if agent is not None:
            agent.stop()
        stop_nginx(run_dir)
