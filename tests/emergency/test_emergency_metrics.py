"""An emergency's revocations reach the authority's listeners: the revocation metrics count them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from trustyard.api import metrics
from trustyard.api.app import Api
from trustyard.ca.authority import Authority

from .helpers import checkin, em, fleet_of, issue, renew


def _revoked() -> float:
    assert metrics.REGISTRY is not None
    return metrics.REGISTRY.get_sample_value("trustyard_certificates_revoked_total", {"provisioner": "default"}) or 0.0


@pytest.mark.skipif(metrics.REGISTRY is None, reason="metrics are summed across processes here")
def test_a_replacement_seen_serving_counts_its_old_certificate_as_revoked(ca: Authority[Any], home: Path,
                                                                          capsys: Any) -> None:
    """When a replacement checks in serving, the old certificate's revocation moves the
    revocation counter the API exports, as a revocation through the API does."""
    Api(ca, "0" * 64)  # wires the authority's events to the metrics
    old, _other = issue(ca, "svc.internal"), issue(ca, "other.internal")
    assert em(capsys, home, "--name", "svc.*", "--reason", "keyCompromise")[0] == 0
    before = _revoked()
    new = renew(ca, old)
    checkin(fleet_of(ca), new, "svc1", endpoint_serial=new.serial)
    assert ca.get(old.serial).status == "revoked"  # type: ignore[union-attr]
    assert _revoked() == before + 1
