"""Health and Prometheus metrics on a local port: ``/healthz`` (JSON; 200 while every
certificate is valid and renewal is not in the error state, else 503) and ``/metrics``
(text exposition format 0.0.4). Hand-written to keep the agent small: no client library,
no global registry."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from ..x509.summary import serial_text
from .schedule import Level

if TYPE_CHECKING:
    from .runner import Agent

_GAUGES = [
    ("trustyard_agent_certificate_seconds_left", "gauge", "Seconds until the current certificate expires."),
    ("trustyard_agent_certificate_not_after_timestamp_seconds", "gauge", "notAfter of the current certificate."),
    ("trustyard_agent_last_success_timestamp_seconds", "gauge", "When a renewal (or bootstrap) last completed."),
    ("trustyard_agent_next_renewal_timestamp_seconds", "gauge", "When the next renewal is planned."),
    ("trustyard_agent_consecutive_failures", "gauge", "Failed attempts since the last success."),
    ("trustyard_agent_needs_bootstrap", "gauge", "1 when only a new bootstrap token can help."),
    ("trustyard_agent_verify_ok", "gauge", "1 when the verify endpoint serves the current certificate."),
    ("trustyard_agent_status", "gauge", "1 for the current level (ok, warning, error)."),
    ("trustyard_agent_renewals_total", "counter", "Certificates renewed."),
    ("trustyard_agent_bootstraps_total", "counter", "Certificates obtained with a bootstrap token."),
    ("trustyard_agent_failures_total", "counter", "Failed attempts."),
    ("trustyard_agent_verify_failures_total", "counter", "Renewals the live endpoint did not pick up."),
    ("trustyard_agent_reloads_total", "counter", "Reload actions run."),
    ("trustyard_agent_roots_updates_total", "counter", "Trust bundle (ca.crt) updates written."),
    ("trustyard_agent_roots_refused_total", "counter",
     "Trust bundles refused: they held none of the roots the agent was bootstrapped with."),
    ("trustyard_agent_served_matches_issued", "gauge",
     "1 when the verify endpoint serves the certificate last issued, 0 when it serves another."),
    # The x509-certificate-exporter's names, so its dashboards and alerts work on the agent's certificates.
    ("x509_cert_not_after", "gauge", "notAfter of the current certificate (seconds since the epoch)."),
    ("x509_cert_not_before", "gauge", "notBefore of the current certificate (seconds since the epoch)."),
]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def render(agent: Agent) -> str:
    now = agent.clock.now()
    samples: dict[str, list[str]] = {name: [] for name, _, _ in _GAUGES}
    for m in agent.managed:
        lbl = f'name="{_label(m.spec.name)}"'

        def put(metric: str, value: float, extra: str = "", lbl: str = lbl) -> None:
            samples[metric].append(f"{metric}{{{lbl}{extra}}} {value}")

        if m.not_after is not None:
            put("trustyard_agent_certificate_seconds_left", round((m.not_after - now).total_seconds(), 3))
            put("trustyard_agent_certificate_not_after_timestamp_seconds", m.not_after.timestamp())
        put("trustyard_agent_last_success_timestamp_seconds", m.last_success.timestamp() if m.last_success else 0)
        if m.renew_point is not None:
            put("trustyard_agent_next_renewal_timestamp_seconds", m.renew_point.timestamp())
        put("trustyard_agent_consecutive_failures", m.failures)
        put("trustyard_agent_needs_bootstrap", int(m.needs_bootstrap))
        if m.verify_ok is not None:
            put("trustyard_agent_verify_ok", int(m.verify_ok))
            put("trustyard_agent_served_matches_issued", int(m.verify_ok))
        if m.current is not None:
            leaf = m.current.chain[0]
            cert_labels = (f',subject_CN="{_label(_common_name(leaf))}"'
                           f',serial_number="{serial_text(leaf.serial_number)}",filepath="{_label(str(m.output_path("tls.crt")))}"')
            put("x509_cert_not_after", leaf.not_valid_after_utc.timestamp(), cert_labels)
            put("x509_cert_not_before", leaf.not_valid_before_utc.timestamp(), cert_labels)
        level = m.status(now).level
        for candidate in Level:
            put("trustyard_agent_status", int(candidate is level), f',level="{candidate.value}"')
        c = m.counters
        put("trustyard_agent_renewals_total", c.renewals)
        put("trustyard_agent_bootstraps_total", c.bootstraps)
        put("trustyard_agent_failures_total", c.failures)
        put("trustyard_agent_verify_failures_total", c.verify_failures)
        put("trustyard_agent_reloads_total", c.reloads)
        put("trustyard_agent_roots_updates_total", c.roots_updates)
        put("trustyard_agent_roots_refused_total", c.roots_refused)
    lines = []
    for name, kind, text in _GAUGES:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", *samples[name]]
    return "\n".join(lines) + "\n"


def health(agent: Agent) -> tuple[int, dict[str, Any]]:
    now = agent.clock.now()
    reports = [m.report(now) for m in agent.managed]
    healthy = all(r["level"] != Level.ERROR.value for r in reports)
    return (200 if healthy else 503), {"healthy": healthy, "certificates": reports}


class _Handler(BaseHTTPRequestHandler):
    agent: Agent

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            status, body, ctype = 200, render(self.agent).encode(), "text/plain; version=0.0.4; charset=utf-8"
        elif path in ("/healthz", "/health", "/"):
            status, doc = health(self.agent)
            body, ctype = json.dumps(doc, indent=2).encode(), "application/json"
        else:
            status, body, ctype = 404, b"not found\n", "text/plain"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class MetricsServer:
    def __init__(self, agent: Agent, host: str, port: int) -> None:
        handler = type("Handler", (_Handler,), {"agent": agent})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="agent-metrics", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> MetricsServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
