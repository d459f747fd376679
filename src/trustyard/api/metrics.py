"""Prometheus metrics. With several worker processes, ``serve`` sets
``PROMETHEUS_MULTIPROC_DIR`` and every worker's counters are summed at scrape time."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime

from cryptography import x509
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..ca.fleet import party_state
from ..store.fleet_store import PartyRow
from ..x509.summary import serial_text

REGISTRY = CollectorRegistry(auto_describe=True) if not os.environ.get("PROMETHEUS_MULTIPROC_DIR") else None


def _registry_kwargs() -> dict[str, object]:
    return {"registry": REGISTRY} if REGISTRY is not None else {}


ISSUED = Counter("trustyard_certificates_issued_total", "Certificates issued", ["provisioner"],
                 **_registry_kwargs())  # type: ignore[arg-type]
RENEWED = Counter("trustyard_certificates_renewed_total", "Certificates renewed", ["provisioner"],
                  **_registry_kwargs())  # type: ignore[arg-type]
REVOKED = Counter("trustyard_certificates_revoked_total", "Certificates revoked", ["provisioner"],
                  **_registry_kwargs())  # type: ignore[arg-type]
DENIED = Counter("trustyard_requests_denied_total", "Requests refused", ["code"], **_registry_kwargs())  # type: ignore[arg-type]
LATENCY = Histogram("trustyard_request_duration_seconds", "Request latency", ["route"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
                    **_registry_kwargs())  # type: ignore[arg-type]

CHECKINS = Counter("trustyard_fleet_checkins_total", "Relying-party check-ins by result (ok, refused, invalid, shed)",
                   ["result"], **_registry_kwargs())  # type: ignore[arg-type]
OCSP_RESPONSES = Counter("trustyard_ocsp_responses_total",
                         "OCSP responses by certificate status (good, revoked, unknown) or error status",
                         ["status"], **_registry_kwargs())  # type: ignore[arg-type]
SHED = Counter("trustyard_signing_shed_total",
               "Signing requests refused with 503 and Retry-After because the queue was too deep (api/admission.py)",
               ["route"], **_registry_kwargs())  # type: ignore[arg-type]
PENDING_PEAK = Gauge("trustyard_signing_pending_peak",
                     "The most signing requests one worker had admitted and not finished at once",
                     multiprocess_mode="max", **_registry_kwargs())  # type: ignore[arg-type]
MAX_PARTY_SERIES = 5000  # past this many parties, no per-party series (label cardinality)

_BY_EVENT = {"issued": ISSUED, "renewed": RENEWED, "revoked": REVOKED, "denied": DENIED}


def on_authority_event(event: str, label: str) -> None:
    counter = _BY_EVENT.get(event)
    if counter is not None:
        counter.labels(label).inc()


def on_checkin(result: str) -> None:
    CHECKINS.labels(result).inc()


def render_fleet(parties: Sequence[PartyRow], now: datetime) -> bytes:
    """Parties by state, and each party's last check-in (while there are at most ``MAX_PARTY_SERIES``)."""
    states = {"fresh": 0, "stale": 0}
    for p in parties:
        states[party_state(p, now)] += 1
    lines = ["# HELP trustyard_fleet_parties Relying parties by state (stale: not seen for 3 check-in intervals)",
             "# TYPE trustyard_fleet_parties gauge"]
    lines += [f'trustyard_fleet_parties{{state="{state}"}} {n}' for state, n in states.items()]
    lines += ["# HELP trustyard_fleet_last_checkin_timestamp_seconds When each relying party last checked in",
              "# TYPE trustyard_fleet_last_checkin_timestamp_seconds gauge"]
    if len(parties) <= MAX_PARTY_SERIES:
        lines += [f'trustyard_fleet_last_checkin_timestamp_seconds{{party="{_label(p.party)}",kind="{p.kind}"}} '
                  f"{p.last_checkin.timestamp():.3f}" for p in parties]
    return ("\n".join(lines) + "\n").encode()


def render(ca_certs: Sequence[tuple[str, x509.Certificate]],
           rotation_deadlines: Sequence[tuple[str, str, float]] = ()) -> bytes:
    """The registry, then gauges computed at scrape time: CA certificates' time left, and the
    deadline of the state each rotation in progress is in (``ca/rotation.py``)."""
    if REGISTRY is None:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    body = generate_latest(registry)
    now = datetime.now(UTC)
    lines = ["# HELP trustyard_ca_certificate_seconds_left Seconds until a CA certificate expires",
             "# TYPE trustyard_ca_certificate_seconds_left gauge"]
    # The x509-certificate-exporter's names (with role="root|intermediate"): its dashboards,
    # and contrib/prometheus/trustyard-rules.yml, read the CA's own certificates from them.
    bounds: dict[str, list[str]] = {"x509_cert_not_after": [], "x509_cert_not_before": []}
    for role, cert in ca_certs:
        left = (cert.not_valid_after_utc - now).total_seconds()
        subject = _label(cert.subject.rfc4514_string())
        lines.append(f'trustyard_ca_certificate_seconds_left{{role="{role}",subject="{subject}"}} {left:.0f}')
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        labels = (f'role="{role}",subject_CN="{_label(str(cn[0].value) if cn else "")}",'
                  f'serial_number="{serial_text(cert.serial_number)}"')
        for name, at in (("x509_cert_not_after", cert.not_valid_after_utc),
                         ("x509_cert_not_before", cert.not_valid_before_utc)):
            bounds[name].append(f"{name}{{{labels}}} {at.timestamp():.0f}")
    for name, samples in bounds.items():
        edge = "notAfter" if name.endswith("after") else "notBefore"
        lines += [f"# HELP {name} The CA certificate's {edge} (seconds since the epoch)", f"# TYPE {name} gauge",
                  *samples]
    lines += ["# HELP trustyard_rotation_state_deadline_timestamp_seconds When the rotation should have left "
              "the state it is in (Unix time)",
              "# TYPE trustyard_rotation_state_deadline_timestamp_seconds gauge"]
    for rotation, state, deadline in rotation_deadlines:
        lines.append(f'trustyard_rotation_state_deadline_timestamp_seconds{{rotation="{rotation}",state="{state}"}} '
                     f"{deadline:.0f}")
    return body + ("\n".join(lines) + "\n").encode()


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
