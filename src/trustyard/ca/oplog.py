"""The CA's operations log: one line per issuance, renewal, revocation and refusal, for its operator.

The lines are made from what the CA records, where it records it: the store tells its
observers (``SqlStore.observers``) of every audit entry and of every refusal it counts in
aggregate once the transaction has committed, and ``OperationsLog.record`` writes each as one
line of the ``trustyard.ca`` logger, in logfmt (``key=value``, values with spaces quoted)::

    issued serial=5f1c... names=orders.internal lifetime=24h not_after=... provisioner=default client=10.0.0.7
    renewed serial=7a02... renewed_from=5f1c... names=orders.internal lifetime=24h ... client=10.0.0.7
    revoked serial=7a02... reason=keyCompromise names=orders.internal by=admin client=10.0.0.9
    refused action=certificate.issue code=policyDenied reason="..." client=10.0.0.8

A line holds only what the audit entry holds (serial, names, lifetime, provisioner, who, the
reason of a refusal) and the address the request came from (``client_address``, which the
app sets for each request): never a token, a proof, a CSR or a key.

Refusals are rate-limited, since anyone can send them: per worker, at most one line per
source address (IPv6 by /64) and refusal code every ``REFUSAL_INTERVAL`` seconds; the next
line for them says how many were left out (``suppressed=N``); once ``MAX_SOURCES`` sources
are remembered, new ones share one budget (``sources=many``). The audit log and the refusal
counts (``trustyard audit``) keep every one.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from ..store import AuditEvent, refusals

log = logging.getLogger("trustyard.ca")

client_address: ContextVar[str | None] = ContextVar("trustyard_client_address", default=None)
"""The address of the client whose request is being served (set by the app, per request)."""

REFUSAL_INTERVAL = 60.0
"""Seconds between two refusal lines for the same source and code (per worker)."""
MAX_SOURCES = 1024
"""Sources+codes remembered for the rate limit; beyond it, new ones share one budget."""
_VALUE_MAX = 300
_PLAIN = re.compile(r"[A-Za-z0-9._:/@*,+%-]+")


def logfmt(**fields: Any) -> str:
    """``key=value`` pairs; values with anything but plain characters are JSON-quoted (so a
    client-chosen text can neither start a line of its own nor pose as another field)."""
    parts = []
    for key, value in fields.items():
        if value is None or value == "" or value == []:
            continue
        text = ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
        if len(text) > _VALUE_MAX:
            text = text[:_VALUE_MAX - 3] + "..."
        parts.append(f"{key}={text if _PLAIN.fullmatch(text) else json.dumps(text)}")
    return " ".join(parts)


LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
"""The format ``trustyard serve`` gives every worker's log lines (times in UTC, ``Z``)."""


class OperationsLog:
    """Observer of the store's recorded events (``SqlStore.observers``) that logs each one."""

    def __init__(self, logger: logging.Logger = log, interval: float = REFUSAL_INTERVAL,
                 clock: Callable[[], float] = time.monotonic, max_sources: int = MAX_SOURCES) -> None:
        self.logger, self.interval, self.clock, self.max_sources = logger, interval, clock, max_sources
        self._slots: dict[tuple[str, str, str], list[float]] = {}  # key -> [last line at, left out since]
        self._lock = threading.Lock()

    def record(self, event: AuditEvent) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        client = client_address.get()
        detail = event.detail
        if event.action == "request.deny":
            self._refused(event, client)
        elif event.action in ("certificate.issue", "certificate.renew"):
            verb = "issued" if event.action == "certificate.issue" else "renewed"
            if event.outcome != "ok":  # revoked (key compromise of its parent) while being signed
                verb = "refused"
            self.logger.info("%s %s", verb, logfmt(
                serial=event.target, renewed_from=detail.get("renewed_from"), names=detail.get("sans"),
                lifetime=detail.get("lifetime"), not_after=detail.get("not_after"), provisioner=event.actor,
                client=client,
                reason="its parent was revoked while it was being signed" if event.outcome != "ok" else None))
        elif event.action == "certificate.renew.retry":
            self.logger.info("renewed %s", logfmt(serial=event.target, renewed_from=detail.get("renewed_from"),
                                                  retry="same-answer", provisioner=event.actor, client=client))
        elif event.action == "certificate.revoke":
            self.logger.info("revoked %s", logfmt(
                serial=event.target, reason=detail.get("reason"), names=detail.get("sans"),
                also_revoked=detail.get("descendants"), by=_by(event.actor, client), client=client))
        elif event.action == "token.mint":
            self.logger.info("token minted %s", logfmt(
                name=event.target, names=detail.get("sans"), provisioner=detail.get("provisioner"),
                by=event.actor, expires=detail.get("expires_at")))
        else:
            self.logger.info("%s %s", event.action, logfmt(target=event.target, outcome=event.outcome,
                                                          by=event.actor, client=client))

    def _refused(self, event: AuditEvent, client: str | None) -> None:
        detail = event.detail
        counted = event.outcome == "counted"  # never authenticated: its actor is its source
        source = refusals.source_key(client or event.actor)
        code = str(detail.get("code", ""))
        admitted = self._admit((source, event.target, code))
        if admitted is None:
            return
        suppressed, shared = admitted
        self.logger.info("refused %s", logfmt(
            action=event.target, code=code, reason=detail.get("reason"), rule=detail.get("rule"),
            value=detail.get("value"), by=None if counted else _by(event.actor, client),
            client=client or (event.actor if counted else None),
            unauthenticated="yes" if counted else None, suppressed=suppressed or None,
            sources="many" if shared else None))

    def _admit(self, key: tuple[str, str, str]) -> tuple[int, bool] | None:
        """None to leave this refusal out; else how many of its kind were left out before it, and
        whether it shares the budget of many sources (too many to tell apart)."""
        now = self.clock()
        with self._lock:
            if key not in self._slots and len(self._slots) >= self.max_sources:
                for stale in [k for k, (at, _n) in self._slots.items() if now - at >= self.interval]:
                    del self._slots[stale]
                if len(self._slots) >= self.max_sources:
                    key = ("", key[1], key[2])
            slot = self._slots.get(key)
            if slot is not None and now - slot[0] < self.interval:
                slot[1] += 1
                return None
            self._slots[key] = [now, 0]
            return (int(slot[1]) if slot is not None else 0), not key[0]


def _by(actor: str, client: str | None) -> str | None:
    """Who acted, when that says more than the client address."""
    return None if actor == client else actor
