"""What ``trustyard emergency`` warns the operator about before it starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trustyard.ca.authority import Authority

from .helpers import audit, em, issue


def test_key_compromise_without_bootstrap_warns_of_the_thief_renewing_first(
        ca: Authority[Any], home: Path, capsys: Any) -> None:
    """A keyCompromise emergency that lets old certificates renew says on stderr that the key's
    thief may renew first and that --require-bootstrap prevents it; the audit entry records the choice."""
    issue(ca, "a.internal")
    issue(ca, "b.internal")
    code, _out, err = em(capsys, home, "--name", "a.*", "--reason", "keyCompromise")
    assert code == 0, err
    assert "warning" in err and "--require-bootstrap" in err and "stolen key" in err
    assert audit(ca, "emergency.start")[-1].detail["require_bootstrap"] is False


def test_key_compromise_with_bootstrap_or_other_reason_does_not_warn(
        ca: Authority[Any], home: Path, capsys: Any) -> None:
    """With --require-bootstrap, or for a reason other than keyCompromise, there is no warning."""
    issue(ca, "a.internal")
    issue(ca, "b.internal")
    issue(ca, "c.internal")
    code, _out, err = em(capsys, home, "--name", "a.*", "--reason", "keyCompromise", "--require-bootstrap")
    assert code == 0, err
    assert "warning" not in err
    assert audit(ca, "emergency.start")[-1].detail["require_bootstrap"] is True
    code, _out, err = em(capsys, home, "--name", "b.*", "--reason", "superseded")
    assert code == 0, err
    assert "warning" not in err
