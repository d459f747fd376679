"""The CA's webhook alerts: the conditions it sees are posted as JSON, retried with growing
delays when the receiver fails, and a receiver that hangs never slows issuance."""

from __future__ import annotations

import json
import statistics
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from cryptography import x509

from trustyard.ca.alerts import Alert, Alerter, ca_lifetime
from trustyard.ca.config import load_config
from trustyard.ca.home import InitOptions, home_alerter, init_home, open_home_store
from trustyard.ca.rotation_watch import home_journal
from trustyard.errors import ConfigError
from trustyard.store.fleet_store import CheckinRow, FleetStore
from trustyard.testing import TestCA

from .agent.helpers import mint, wait_for
from .support import PASSWORD, new_csr, start_server


class Receiver:
    """A webhook receiver on loopback: refuses the first ``fail`` posts (503), or holds every
    connection open without answering (``hang``)."""

    def __init__(self, fail: int = 0, hang: bool = False) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.times: list[float] = []
        self.connections = 0
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.connections += 1
                if hang:
                    receiver.release.wait(60)
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.times.append(time.monotonic())
                refused = len(receiver.times) <= fail
                if not refused:
                    receiver.bodies.append(body)
                self.send_response(503 if refused else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def receiver(**kw: Any) -> Iterator[Receiver]:
    r = Receiver(**kw)
    try:
        yield r
    finally:
        r.close()


def aging_ca(left: float) -> list[tuple[str, Any]]:
    """A root and an intermediate of 30 days with ``left`` of the intermediate's lifetime to go."""
    lifetime = timedelta(days=30)
    ca = TestCA("aging").child("aging Intermediate", not_before=datetime.now(UTC) - lifetime * (1 - left),
                                 lifetime=lifetime)
    return [("root", ca.root), ("intermediate", ca.cert)]


def test_a_failing_receiver_gets_the_alert_after_retries_with_growing_delays() -> None:
    certs = aging_ca(left=0.25)
    with receiver(fail=2) as hook:
        alerter = Alerter(hook.url, [ca_lifetime(lambda: certs)], interval=30, retry=0.3, max_retry=5).start()
        try:
            wait_for(lambda: hook.bodies, timeout=15, what="the alert after two refusals")
        finally:
            alerter.stop()
    assert len(hook.times) == 3 and alerter.failures == 2 and alerter.posted == 1
    first_gap, second_gap = hook.times[1] - hook.times[0], hook.times[2] - hook.times[1]
    assert first_gap >= 0.3 and second_gap >= 0.6 and second_gap > first_gap * 1.5  # backoff doubles
    [alert] = hook.bodies[0]["alerts"]
    assert alert["name"] == "TrustyardCACertificateExpiring" and alert["severity"] == "warning"
    assert alert["labels"]["role"] == "intermediate" and alert["labels"]["subject_CN"] == "aging Intermediate"
    since = datetime.fromisoformat(alert["since"])
    assert abs((datetime.now(UTC) - since) - timedelta(days=30) * (1 / 3 - 0.25)) < timedelta(minutes=5)
    assert "1/3" in alert["summary"] or "33%" in alert["summary"]


def test_critical_below_a_sixth_and_nothing_posted_while_healthy() -> None:
    assert [a.name for a in ca_lifetime(lambda: aging_ca(left=0.1))(datetime.now(UTC))] == [
        "TrustyardCACertificateExpiringCritical"]
    healthy = aging_ca(left=0.5)
    with receiver() as hook:
        alerter = Alerter(hook.url, [ca_lifetime(lambda: healthy)], interval=0.1, retry=0.1)
        for _ in range(3):
            assert alerter.evaluate() == []
        alerter.start()
        time.sleep(0.5)
        alerter.stop()
    assert hook.connections == 0 and alerter.queue.empty()


def test_the_queue_is_bounded_and_keeps_the_newest_state() -> None:
    states = iter(range(1000))
    alerter = Alerter("http://127.0.0.1:9/never", [lambda now: [Alert(f"A{next(states)}", "warning", "changing")]],
                      queue_size=5)  # never started: nothing drains the queue
    for _ in range(20):
        alerter.evaluate()
    assert alerter.queue.qsize() == 5 and alerter.dropped == 15
    newest = [alerter.queue.get_nowait()["alerts"][0]["name"] for _ in range(5)]
    assert newest == [f"A{n}" for n in range(15, 20)]


def test_alerts_config_is_checked_at_load(tmp_path: Path) -> None:
    home = tmp_path / "ca"
    init_home(home, PASSWORD, InitOptions())
    doc = tomllib.loads((home / "trustyard.toml").read_text())
    for bad, words in (({"webhook": "ftp://x"}, "http:// or https://"), ({"interval": "soon"}, "interval"),
                       ({"ca_warning_left": 2}, "between 0 and 1"), ({"colour": "red"}, "unknown key")):
        (home / "trustyard.toml").write_text(tomli_w.dumps({**doc, "alerts": bad}))
        with pytest.raises(ConfigError, match=words):
            load_config(home)
    (home / "trustyard.toml").write_text(tomli_w.dumps({**doc, "alerts": {"webhook": "https://hooks.internal/x"}}))
    assert load_config(home).alerts.webhook == "https://hooks.internal/x"


def sign_latencies(server: Any, home: Path, count: int) -> list[float]:
    took = []
    with server.client() as client:
        for i in range(count):
            token = mint(home, f"svc{i}.internal")
            _, csr = new_csr(f"svc{i}.internal")
            started = time.perf_counter()
            response = client.post("/v1/sign", json={"csr": csr.decode(), "token": token})
            took.append(time.perf_counter() - started)
            assert response.status_code == 201, response.text
    return took


def test_issuance_latency_is_unaffected_while_the_webhook_hangs(tmp_path: Path) -> None:
    home = tmp_path / "ca"
    init_home(home, PASSWORD, InitOptions(allow=("*.internal",)))
    server = start_server(home)
    try:
        baseline = statistics.median(sign_latencies(server, home, 10))
    finally:
        server.stop()
    with receiver(hang=True) as hook:
        doc = tomllib.loads((home / "trustyard.toml").read_text())
        # every CA certificate has used more than 1e-7 of its lifetime: the warning fires at once
        doc["alerts"] = {"webhook": hook.url, "interval": "1s", "timeout": "60s", "ca_warning_left": 0.9999999,
                         "ca_critical_left": 0.5}
        (home / "trustyard.toml").write_text(tomli_w.dumps(doc))
        server = start_server(home)
        try:
            wait_for(lambda: hook.connections >= 1, timeout=15, what="the alert POST to the hanging receiver")
            during = sign_latencies(server, home, 10)
            assert hook.connections == 1  # still the one POST, hanging
        finally:
            server.stop()
    assert statistics.median(during) < baseline * 3 + 0.05, (baseline, during)
    assert max(during) < 2


def test_the_ca_alerts_on_its_issuing_intermediate_stale_parties_and_a_stuck_rotation(tmp_path: Path) -> None:
    """``home_alerter`` on a real home: a party silent for an hour (60 s interval) is stale, a
    rotation left in ``prepared`` past its deadline is stuck; neither fires before its time."""
    home = tmp_path / "ca"
    init_home(home, PASSWORD, InitOptions(allow=("*.internal",)))
    doc = tomllib.loads((home / "trustyard.toml").read_text())
    doc["alerts"] = {"webhook": "http://127.0.0.1:9/hook"}
    (home / "trustyard.toml").write_text(tomli_w.dumps(doc))
    config = load_config(home)
    store = open_home_store(config, migrate=False)
    try:
        now = datetime.now(UTC)
        FleetStore(store).checkin(CheckinRow(
            party="api.internal#a1", identity="api.internal", instance="a1", kind="agent", serial="1f",
            not_after=now + timedelta(hours=1), bundle_version=1, bundle_sha256=None, endpoint_serial=None,
            failures=0, last_error=None, agent_version="test", interval_seconds=60), "jti-1", now - timedelta(hours=1))
        row = home_journal(config, PASSWORD, store).prepare("intermediate", "test", "alert test")
        alerter = home_alerter(config, store)
        assert alerter is not None and row.deadline_at is not None
        names = {a.name for c in alerter.conditions for a in c(now)}
        assert names == {"TrustyardAgentsStale"}  # the rotation is within its deadline; the CA is young
        late = row.deadline_at + timedelta(minutes=1)
        firing = {a.name: a for c in alerter.conditions for a in c(late)}
        assert set(firing) == {"TrustyardAgentsStale", "TrustyardRotationStuck"}
        assert "api.internal#a1" in firing["TrustyardAgentsStale"].summary
        assert firing["TrustyardRotationStuck"].labels == {"rotation": f"intermediate-{row.id}", "state": "prepared"}
        # the intermediate watched is the one that issues: the home's own until a rotation is active
        inter = x509.load_pem_x509_certificate((home / "ca" / "intermediate.crt").read_bytes())
        years = inter.not_valid_after_utc + timedelta(days=1)
        expiring = {a.labels.get("role") for c in alerter.conditions for a in c(years)
                    if a.name.startswith("TrustyardCACertificateExpiring")}
        assert expiring == {"intermediate"}
    finally:
        store.close()
