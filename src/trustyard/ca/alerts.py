"""Alerts the CA posts to a webhook before trust breaks: the conditions of
``contrib/prometheus/trustyard-rules.yml`` that the CA can see itself.

    [alerts]
    webhook = "https://hooks.internal/trustyard"   # empty: no alerts are posted
    interval = "60s"          # how often the conditions are evaluated
    timeout = "10s"           # one POST
    retry = "1s"              # first retry delay; doubled after each failure, at most max_retry
    max_retry = "5m"
    ca_warning_left = 0.3333  # share of a root's or intermediate's lifetime left: warning below,
    ca_critical_left = 0.1667 # critical below this

An :class:`Alerter` runs in its own threads, never on the issuance path: every ``interval`` it
asks each condition (a function from now to the :class:`Alert` s firing; the list is pluggable,
``CONDITIONS``-style) and, when the set firing changed, queues the JSON body
``{"alerts": [{"name", "severity", "summary", "labels", "since"}]}`` (an empty list: all resolved).
A sender thread POSTs it, retrying with exponential backoff; the queue is bounded and drops its
oldest body when full, so a webhook that hangs costs memory for ``QUEUE`` bodies and no more.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from ..errors import ConfigError
from .sections import duration, section

log = logging.getLogger("trustyard.alerts")

QUEUE = 100


@dataclass(frozen=True)
class AlertsConfig:
    webhook: str = ""
    interval: str = "60s"
    timeout: str = "10s"
    retry: str = "1s"
    max_retry: str = "5m"
    ca_warning_left: float = 1 / 3
    ca_critical_left: float = 1 / 6

    def seconds(self, key: str) -> float:
        return duration(f"[alerts] {key}", getattr(self, key)).total_seconds()


def load_alerts(path: Path, table: Any) -> AlertsConfig:
    config = AlertsConfig(**section(path, "alerts", table, AlertsConfig))
    for key in ("ca_warning_left", "ca_critical_left"):
        if not 0 < getattr(config, key) < 1:
            raise ConfigError(f"{path}: [alerts] {key} must be a share between 0 and 1, not {getattr(config, key)!r}")
    for key in ("interval", "timeout", "retry", "max_retry"):
        config.seconds(key)
    if config.webhook and not config.webhook.startswith(("http://", "https://")):
        raise ConfigError(f"{path}: [alerts] webhook must be an http:// or https:// URL, not {config.webhook!r}")
    if config.ca_critical_left >= config.ca_warning_left:
        raise ConfigError(f"{path}: [alerts] ca_critical_left must be below ca_warning_left")
    return config


@dataclass(frozen=True)
class Alert:
    name: str
    severity: str
    summary: str
    labels: Mapping[str, str] = field(default_factory=dict)
    since: datetime | None = None

    def key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        return self.name, tuple(sorted(self.labels.items()))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "severity": self.severity, "summary": self.summary, "labels": dict(self.labels),
                "since": self.since.isoformat().replace("+00:00", "Z") if self.since else None}


Condition = Callable[[datetime], list[Alert]]
"""now -> the alerts firing. A condition that raises is logged and counts as not firing."""


def ca_lifetime(certs: Callable[[], Sequence[tuple[str, x509.Certificate]]], warning_left: float = 1 / 3,
                critical_left: float = 1 / 6) -> Condition:
    """The CA's roots and intermediate with less than ``warning_left`` (``critical_left``) of their
    lifetime left: the rules' TrustyardCACertificateExpiring(Critical)."""
    def check(now: datetime) -> list[Alert]:
        found = []
        for role, cert in certs():
            start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
            lifetime = end - start
            if lifetime.total_seconds() <= 0:
                continue
            left = (end - now) / lifetime
            cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            labels = {"role": role, "subject_CN": str(cn[0].value) if cn else "",
                      "serial_number": format(cert.serial_number, "x")}
            if left < critical_left:
                found.append(Alert("TrustyardCACertificateExpiringCritical", "critical",
                                   f"The CA's {role} {labels['subject_CN']} has less than {critical_left:.0%} of its "
                                   f"lifetime left: rotate it now", labels, end - lifetime * critical_left))
            elif left < warning_left:
                found.append(Alert("TrustyardCACertificateExpiring", "warning",
                                   f"The CA's {role} {labels['subject_CN']} has less than {warning_left:.0%} of its "
                                   f"lifetime left: plan its rotation", labels, end - lifetime * warning_left))
        return found
    return check


def fleet_stale(stale_parties: Callable[[datetime], Sequence[str]]) -> Condition:
    """Relying parties that missed three check-ins: the rules' TrustyardAgentsStale."""
    def check(now: datetime) -> list[Alert]:
        stale = sorted(stale_parties(now))
        if not stale:
            return []
        named = ", ".join(stale[:10]) + (f" and {len(stale) - 10} more" if len(stale) > 10 else "")
        return [Alert("TrustyardAgentsStale", "warning",
                      f"{len(stale)} relying part{'y has' if len(stale) == 1 else 'ies have'} not checked in "
                      f"with the CA in time: {named} (see `trustyard fleet --stale`)", {})]
    return check


def rotation_stuck(deadline: Callable[[], tuple[str, str, datetime] | None]) -> Condition:
    """The rotation in progress is past the deadline of its state: the rules' TrustyardRotationStuck."""
    def check(now: datetime) -> list[Alert]:
        found = deadline()
        if found is None or now <= found[2]:
            return []
        rotation, state, at = found
        return [Alert("TrustyardRotationStuck", "critical",
                      f"Rotation {rotation} is stuck in state {state} past its deadline "
                      "(`trustyard rotate status` says what it waits for)", {"rotation": rotation, "state": state},
                      at)]
    return check


class Alerter:
    """Evaluates ``conditions`` every ``interval`` seconds and posts changes to ``url``."""

    def __init__(self, url: str, conditions: Sequence[Condition], *, interval: float = 60, timeout: float = 10,
                 retry: float = 1, max_retry: float = 300, queue_size: int = QUEUE,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.url, self.conditions = url, list(conditions)
        self.interval, self.timeout, self.retry, self.max_retry = interval, timeout, retry, max_retry
        self.clock = clock
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=queue_size)
        self.stopping = threading.Event()
        self.posted = 0  # bodies delivered
        self.failures = 0  # POSTs that failed
        self.dropped = 0  # bodies dropped from a full queue
        self._last: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        self._threads = [threading.Thread(target=self._evaluate_loop, name="alerts-evaluate", daemon=True),
                         threading.Thread(target=self._send_loop, name="alerts-send", daemon=True)]

    @classmethod
    def from_config(cls, config: AlertsConfig, conditions: Sequence[Condition]) -> Alerter:
        return cls(config.webhook, conditions, interval=config.seconds("interval"),
                   timeout=config.seconds("timeout"), retry=config.seconds("retry"),
                   max_retry=config.seconds("max_retry"))

    def start(self) -> Alerter:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 5) -> None:
        self.stopping.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)

    def evaluate(self) -> list[Alert]:
        """Ask every condition once; queue a body when the set firing changed."""
        now = self.clock()
        firing: list[Alert] = []
        for condition in self.conditions:
            try:
                firing += condition(now)
            except Exception:
                log.exception("alert condition %r failed", getattr(condition, "__name__", condition))
        keys = {a.key() for a in firing}
        if keys != self._last:
            self._last = keys
            self._enqueue({"alerts": [a.to_json() for a in firing]})
        return firing

    def _enqueue(self, body: dict[str, Any]) -> None:
        while True:
            try:
                self.queue.put_nowait(body)
                return
            except queue.Full:
                try:
                    self.queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def _evaluate_loop(self) -> None:
        while not self.stopping.is_set():
            self.evaluate()
            self.stopping.wait(self.interval)

    def _send_loop(self) -> None:
        import httpx  # here: loading the CA's configuration must not import the HTTP client

        with httpx.Client(timeout=self.timeout) as client:
            while not self.stopping.is_set():
                try:
                    body = self.queue.get(timeout=0.2)
                except queue.Empty:
                    continue
                delay = self.retry
                while not self.stopping.is_set():
                    try:
                        response = client.post(self.url, json=body)
                        if response.status_code < 300:
                            self.posted += 1
                            break
                        problem = f"HTTP {response.status_code}"
                    except httpx.HTTPError as exc:
                        problem = str(exc) or type(exc).__name__
                    self.failures += 1
                    log.warning("alert webhook %s failed (%s): retrying in %.0fs", self.url, problem, delay)
                    if self.stopping.wait(delay):
                        return
                    delay = min(delay * 2, self.max_retry)
                    if not self.queue.empty():  # a newer state supersedes this one
                        break
