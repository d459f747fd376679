"""``trustyard agent`` as a real process against a real CA server on loopback."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from datetime import UTC
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustyard.testing import free_port
from trustyard.units import format_time
from trustyard.x509.keys import KeyType, generate_private_key
from trustyard.x509.profiles import root_builder, sign
from trustyard.x509.summary import serial_text

from ..support import Server
from .helpers import AgentProcess, agent_args, leaf, mint, serial_of, serve, wait_for

HERE = Path(__file__).parent


def metrics(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def metric(port: int, name: str, cert: str, extra: str = "") -> float | None:
    return metrics(port).get(f'{name}{{name="{cert}"{extra}}}')


def run_once(server: Server, out: Path, name: str, token_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trustyard", "agent", *agent_args(server, out, name, token_file),
                           "--once", "--json", *extra], capture_output=True, text=True, timeout=60)


def test_bootstrap_renew_reload_command_metrics_and_sigterm(tmp_path: Path, ca: Server) -> None:
    token = tmp_path / "token"
    token.write_text(mint(ca.home, "api.internal", "api.internal", "127.0.0.1"))
    out, seen = tmp_path / "certs", tmp_path / "reloads.txt"
    port = free_port()
    started = time.time()
    # The reload command records the serial on disk when it runs: it must already be the new one.
    reload_cmd = f'openssl x509 -in "$TRUSTYARD_CERT_DIR/tls.crt" -noout -serial >> {seen}'
    agent = AgentProcess(agent_args(ca, out, "api.internal", token, "--san", "api.internal", "--san", "127.0.0.1",
                                    "--ttl", "20s", "--renew-at", "50%", "--reload-cmd", reload_cmd,
                                    "--metrics-listen", f"127.0.0.1:{port}"), tmp_path / "agent.log")
    try:
        first = wait_for(lambda: serial_of(out), what="the bootstrap")
        wait_for(lambda: len({serial_of(out), first}) == 2 and seen.exists() and
                 len(seen.read_text().split()) >= 3, timeout=45, what="two renewals")
        assert stat.S_IMODE(os.stat(out / "tls.key").st_mode) == 0o600
        recorded = [line.split("=")[1].lower().lstrip("0") for line in seen.read_text().split()]
        assert recorded[0] == format(first, "x")
        assert len(set(recorded)) == len(recorded)  # one reload per new certificate, each after its write
        log = agent.text()
        assert "issued certificate serial" in log and "renewed certificate serial" in log
        # the line for the certificate on disk names its serial and its exact notAfter
        on_disk = leaf(out)
        assert on_disk is not None
        wait_for(lambda: f"certificate serial {serial_text(on_disk.serial_number)} subject CN=api.internal issuer "
                 f"CN=trustyard Intermediate CA,O=trustyard SANs api.internal,127.0.0.1 "
                 f"notAfter {format_time(on_disk.not_valid_after_utc)} (in " in agent.text(),
                 timeout=10, what="the log line of the certificate on disk")
        m = metrics(port)
        assert 0 < m['trustyard_agent_certificate_seconds_left{name="api.internal"}'] <= 20
        assert started <= m['trustyard_agent_last_success_timestamp_seconds{name="api.internal"}'] <= time.time()
        assert m['trustyard_agent_consecutive_failures{name="api.internal"}'] == 0
        assert m['trustyard_agent_renewals_total{name="api.internal"}'] >= 2
        assert m['trustyard_agent_status{name="api.internal",level="ok"}'] == 1
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status_code == 200 and health.json()["certificates"][0]["level"] == "ok"
    finally:
        code = agent.stop()
    assert code == 0, agent.text()
    assert "stopping" in agent.text()
    assert serial_of(out) is not None  # SIGTERM leaves the files in place


def test_reload_signal_to_a_pid_file_and_verify_endpoint(tmp_path: Path, ca: Server) -> None:
    token = tmp_path / "token"
    token.write_text(mint(ca.home, "web.internal"))
    out, pid_file, port = tmp_path / "certs", tmp_path / "server.pid", free_port()
    assert run_once(ca, out, "web.internal", token, "--ttl", "20s").returncode == 0
    service = subprocess.Popen([sys.executable, str(HERE / "tls_server.py"), str(out), str(port), str(pid_file)])
    try:
        wait_for(pid_file.exists, what="the TLS server")
        agent = AgentProcess(agent_args(ca, out, "web.internal", token, "--renew-at", "50%", "--reload-signal",
                                        "HUP", "--pid-file", str(pid_file), "--verify-endpoint",
                                        f"127.0.0.1:{port}"), tmp_path / "agent.log")
        try:
            wait_for(lambda: agent.text().count("serves serial") >= 2, timeout=45, what="two verified renewals")
        finally:
            assert agent.stop() == 0
        reloaded = (tmp_path / "reloaded.txt").read_text().split()
        assert len(reloaded) >= 3 and len(set(reloaded)) == len(reloaded)  # each HUP loaded a new cert
        assert f"127.0.0.1:{port} serves serial {reloaded[-1]}" in agent.text()
        assert "sent SIGHUP to pid" in agent.text()
    finally:
        service.terminate()
        service.wait(10)


def test_verify_fails_when_the_service_never_picks_up_the_new_certificate(tmp_path: Path, ca: Server) -> None:
    token = tmp_path / "token"
    token.write_text(mint(ca.home, "stuck.internal"))
    out, pid_file, port, mport = tmp_path / "certs", tmp_path / "server.pid", free_port(), free_port()
    assert run_once(ca, out, "stuck.internal", token, "--ttl", "20s").returncode == 0
    service = subprocess.Popen([sys.executable, str(HERE / "tls_server.py"), str(out), str(port), str(pid_file),
                                "--ignore-hup"])
    try:
        wait_for(pid_file.exists, what="the TLS server")
        agent = AgentProcess(agent_args(ca, out, "stuck.internal", token, "--renew-at", "40%", "--reload-signal",
                                        "HUP", "--pid-file", str(pid_file), "--verify-endpoint", f"127.0.0.1:{port}",
                                        "--verify-grace", "1s", "--metrics-listen", f"127.0.0.1:{mport}"),
                             tmp_path / "agent.log")
        try:
            wait_for(lambda: "still does not serve serial" in agent.text(), timeout=40, what="the verify error")
            m = metrics(mport)
            assert m['trustyard_agent_verify_ok{name="stuck.internal"}'] == 0
            assert m['trustyard_agent_verify_failures_total{name="stuck.internal"}'] >= 1
            assert m['trustyard_agent_consecutive_failures{name="stuck.internal"}'] >= 1
            log = agent.text()
            # reload, grace, reload again, grace, then the error
            assert log.index("still serves the old certificate after 1s: reloading again") < \
                log.index("still does not serve serial")
            assert "ERROR" in log.split("still does not serve serial")[0].splitlines()[-1]
        finally:
            assert agent.stop() == 0
    finally:
        service.terminate()
        service.wait(10)


def test_ca_outage_keeps_files_backs_off_and_recovers_without_restart(tmp_path: Path, ca: Server) -> None:
    token = tmp_path / "token"
    token.write_text(mint(ca.home, "db.internal"))
    out, mport = tmp_path / "certs", free_port()
    agent = AgentProcess(agent_args(ca, out, "db.internal", token, "--ttl", "40s", "--renew-at", "25%",
                                    "--error-before", "50%", "--metrics-listen", f"127.0.0.1:{mport}"),
                         tmp_path / "agent.log")
    server = ca
    try:
        first = wait_for(lambda: serial_of(out), what="the bootstrap")
        server.stop()  # the outage starts before the first renewal point
        wait_for(lambda: (metric(mport, "trustyard_agent_consecutive_failures", "db.internal") or 0) >= 2,
                 timeout=30, what="failed renewals")
        assert serial_of(out) == first  # the current files stay
        wait_for(lambda: any(" ERROR " in line and "renewal failing since" in line
                             for line in agent.text().splitlines()), timeout=30, what="the error level")
        assert metric(mport, "trustyard_agent_status", "db.internal", ',level="error"') == 1
        log = agent.text()
        assert "renewal failing since" in log and "cannot reach the CA" in log
        warning = next(line for line in log.splitlines() if "renewal failing since" in line)
        assert " WARNING " in warning and warning.split("db.internal: ")[1].startswith("expires in ")
        retries = [line for line in log.splitlines() if "retry in" in line]
        assert len(retries) >= 2
        server = serve(ca.home, ca.port)  # the CA comes back on the same port
        wait_for(lambda: serial_of(out) not in (None, first), timeout=45, what="renewal after the outage")
        wait_for(lambda: metric(mport, "trustyard_agent_consecutive_failures", "db.internal") == 0,
                 what="the failure count to reset")
        assert "renewal works again after" in agent.text()
        assert agent.process.poll() is None  # same process: no restart needed
    finally:
        agent.stop()
        server.stop()


def test_expired_certificate_asks_for_a_new_token_then_bootstraps_again(tmp_path: Path, ca: Server) -> None:
    token = tmp_path / "token"
    token.write_text(mint(ca.home, "batch.internal"))
    out = tmp_path / "certs"
    first = run_once(ca, out, "batch.internal", token, "--ttl", "10s")
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["certificates"][0]["level"] == "ok" and doc["certificates"][0]["seconds_left"] <= 10
    old = serial_of(out)
    wait_for(lambda: time.time() > x509.load_pem_x509_certificate((out / "tls.crt").read_bytes())
             .not_valid_after_utc.timestamp() + 1, timeout=20, what="expiry")
    again = run_once(ca, out, "batch.internal", token)
    assert again.returncode == 3, again.stderr
    assert "Re-bootstrap: mint a new one-time token (trustyard token batch.internal)" in again.stderr
    assert json.loads(again.stdout)["certificates"][0]["needs_bootstrap"] is True
    assert serial_of(out) == old
    token.write_text(mint(ca.home, "batch.internal"))
    fresh = run_once(ca, out, "batch.internal", token, "--ttl", "10s")
    assert fresh.returncode == 0, fresh.stderr
    assert serial_of(out) not in (None, old)


def test_renewal_of_an_expired_certificate_is_refused_by_the_ca(tmp_path: Path, ca: Server) -> None:
    """The CA's own refusal, through the agent's renewal path: the agent's clock lags, so
    the agent still believes the certificate is valid and asks the CA to renew it."""
    from datetime import timedelta

    from trustyard.agent.config import cert_spec
    from trustyard.agent.runner import ManagedCert
    from trustyard.agent.seams import FakeClock, FileOutput, HTTPBackend

    token = tmp_path / "token"
    token.write_text(mint(ca.home, "late.internal"))
    out = tmp_path / "certs"
    assert run_once(ca, out, "late.internal", token, "--ttl", "10s").returncode == 0
    not_after = x509.load_pem_x509_certificates((out / "tls.crt").read_bytes())[0].not_valid_after_utc
    wait_for(lambda: time.time() > not_after.timestamp() + 1, timeout=20, what="expiry")
    token.write_text("")  # the spent token is gone: a token waiting would be tried at once
    backend = HTTPBackend(ca.url, ca.root)
    lagging = FakeClock(not_after - timedelta(seconds=2))
    m = ManagedCert(cert_spec({"name": "late.internal", "out": str(out), "token_file": str(token)}), backend,
                    FileOutput(out), lagging)
    try:
        m.start()
        assert m.current is not None and not m.needs_bootstrap
        lagging.advance(timedelta(seconds=1))
        m.step(lagging.now())
    finally:
        backend.close()
    assert m.needs_bootstrap, m.last_error
    assert "[expired]" in (m.last_error or "") and "Re-bootstrap" in (m.last_error or "")
    assert m.report()["level"] == "error"


def test_trust_bundle_change_rewrites_ca_crt_without_renewal(tmp_path: Path, ca: Server) -> None:
    token = tmp_path / "token"
    token.write_text(mint(ca.home, "cache.internal"))
    out, count = tmp_path / "certs", tmp_path / "reloads"
    agent = AgentProcess(agent_args(ca, out, "cache.internal", token, "--ttl", "1h", "--roots-interval", "1s",
                                    "--reload-cmd", f"echo x >> {count}"), tmp_path / "agent.log")
    server = ca
    try:
        serial = wait_for(lambda: serial_of(out), what="the bootstrap")
        assert len(x509.load_pem_x509_certificates((out / "ca.crt").read_bytes())) == 1
        key = generate_private_key(KeyType.EC_P256)
        from datetime import datetime, timedelta
        new_root = sign(root_builder(key.public_key(), "Next Root CA", datetime.now(UTC),  # type: ignore[arg-type]
                                     timedelta(days=30)), key)
        server.stop()
        with (ca.home / "ca" / "roots.pem").open("a") as fh:
            fh.write(new_root.public_bytes(Encoding.PEM).decode())
        server = serve(ca.home, ca.port)
        wait_for(lambda: len(x509.load_pem_x509_certificates((out / "ca.crt").read_bytes())) == 2, timeout=30,
                 what="the new bundle")
        assert serial_of(out) == serial  # no renewal was needed
        wait_for(lambda: count.exists() and len(count.read_text().split()) == 2, what="the reload")
        assert "trust bundle changed" in agent.text()
    finally:
        agent.stop()
        server.stop()


def test_config_file_manages_several_certificates(tmp_path: Path, ca: Server) -> None:
    (tmp_path / "a.token").write_text(mint(ca.home, "a.internal"))
    (tmp_path / "b.token").write_text(mint(ca.home, "b.internal", "b.internal", "spiffe://prod.internal/b"))
    config = tmp_path / "agent.toml"
    config.write_text(f'''
ca_url = "{ca.url}"
root = "{ca.root}"

[[certificate]]
name = "a.internal"
token_file = "a.token"
out = "certs/a"
ttl = "1h"

[[certificate]]
name = "b.internal"
sans = ["b.internal", "spiffe://prod.internal/b"]
token_env = "B_TOKEN"
out = "certs/b"
ttl = "30m"
renew_at = "8m"
''')
    env = {**os.environ, "B_TOKEN": (tmp_path / "b.token").read_text()}
    done = subprocess.run([sys.executable, "-m", "trustyard", "agent", "--config", str(config), "--once", "--json"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert [c["name"] for c in doc["certificates"]] == ["a.internal", "b.internal"]
    b = x509.load_pem_x509_certificates((tmp_path / "certs/b/tls.crt").read_bytes())[0]
    sans = b.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(u) for u in sans.get_values_for_type(x509.UniformResourceIdentifier)] == ["spiffe://prod.internal/b"]
    assert serial_of(tmp_path / "certs/a") is not None
    # Both are current now: a second --once has nothing to do and needs no token.
    again = subprocess.run([sys.executable, "-m", "trustyard", "agent", "--config", str(config), "--once"],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "expires in" in again.stdout


def test_outage_budget_the_ttl_cannot_meet_is_warned_about(tmp_path: Path, ca: Server) -> None:
    token = tmp_path / "token"
    token.write_text(mint(ca.home, "tiny.internal"))
    done = run_once(ca, tmp_path / "certs", "tiny.internal", token, "--ttl", "1m", "--outage-budget", "4h")
    assert done.returncode == 0
    assert "cannot survive a 4h 0m CA outage" in done.stderr and "raise the TTL" in done.stderr


def test_help_explains_the_flags() -> None:
    done = subprocess.run([sys.executable, "-m", "trustyard", "agent", "--help"], capture_output=True, text=True)
    for flag in ("--token-file", "--renew-at", "--outage-budget", "--verify-endpoint", "--reload-signal",
                 "--pid-file", "--once", "--config", "--metrics-listen", "Exit status"):
        assert flag in done.stdout
