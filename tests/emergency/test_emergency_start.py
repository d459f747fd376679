"""Starting an emergency is one transaction: its rows, its renew-now requests and its audit entry."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from trustyard.ca.authority import Authority
from trustyard.ca.emergency import Emergencies, Selector
from trustyard.errors import Conflict

from .helpers import audit, issue


def test_racing_starts_over_one_certificate_conflict_and_record_one_emergency(ca: Authority[Any]) -> None:
    """A start that selected a certificate another start took meanwhile is a Conflict naming the
    certificate and that emergency; only the first is recorded, with exactly one audit entry."""
    held = issue(ca, "race.internal")
    issue(ca, "calm.internal")
    first, second = Emergencies(ca.store), Emergencies(ca.store)
    stale = second.store.candidates(first.clock())  # selected before the first start commits
    second.store.candidates = lambda now, renewable_for=None: stale  # type: ignore[method-assign]
    row, _asked = first.start(Selector.of("serial", [held.serial]), "keyCompromise", timedelta(minutes=5))
    with pytest.raises(Conflict, match=rf"certificate {held.serial} is already in emergency {row.id}"):
        second.start(Selector.of("serial", [held.serial]), "keyCompromise", timedelta(minutes=5))
    latest = first.store.latest()
    assert latest is not None and latest.id == row.id
    assert [e.target for e in audit(ca, "emergency.start")] == [str(row.id)]


def test_an_emergency_whose_audit_entry_fails_is_not_recorded(ca: Authority[Any],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The audit entry is written in the emergency's transaction: when it fails, no emergency exists."""
    held = issue(ca, "audit.internal")
    issue(ca, "calm.internal")

    def broken(conn: Any, event: Any) -> None:
        raise RuntimeError("audit chain unavailable")

    monkeypatch.setattr(ca.store, "append_audit", broken)
    emergencies = Emergencies(ca.store)
    with pytest.raises(RuntimeError, match="audit chain unavailable"):
        emergencies.start(Selector.of("serial", [held.serial]), "keyCompromise", timedelta(minutes=5))
    monkeypatch.undo()
    assert emergencies.store.latest() is None
    assert audit(ca, "emergency.start") == []
