"""`trustyard emergency` on a CA home: what each selector picks, what it refuses (changing
nothing), the one-time re-key and the refusals of an old key, --require-bootstrap, retirement
when the grace runs out (claimed once among several sweepers), status and tokens."""

from __future__ import annotations

import stat
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from trustyard.ca import emergency
from trustyard.ca.authority import Authority
from trustyard.ca.emergency import Emergencies, Selector, spki_sha256
from trustyard.errors import Code, ExitCode, Forbidden, SelectionRefused
from trustyard.store.schema import certificates

from ..support import csr_pem
from .helpers import audit, checkin, em, fleet_of, issue, renew, renew_now, status


def _state(authority: Authority[Any], serial: str) -> tuple[str, str | None]:
    record = authority.get(serial)
    assert record is not None
    return record.status, record.revocation_reason


def test_each_selector_picks_exactly_its_certificates(ca: Authority[Any], home: Path, capsys: Any) -> None:
    a, b, c1, c2, d, rest = (issue(ca, n) for n in ("a.internal", "b.internal", "c1.internal", "c2.internal",
                                                     "d.internal", "rest.internal"))
    # d was signed by an intermediate a rotation replaced: another issuer fingerprint
    with ca.store.transaction() as conn:  # type: ignore[attr-defined]
        conn.execute(update(certificates).where(certificates.c.serial == d.serial).values(issuer_sha256="ee" * 32))
    picks = {}
    for args in (["--serial", a.serial], ["--spki", spki_sha256(b.key.public_key())], ["--name", "C?.INTERNAL"],
                 ["--issuer", ":".join(["EE"] * 32)]):
        code, _out, err = em(capsys, home, *args, "--reason", "superseded")
        assert code == 0, err
        report = status(capsys, home)
        picks[args[0]] = sorted(i["serial"] for i in report["identities"])
        assert report["emergency"]["count"] == len(picks[args[0]])
    assert picks == {"--serial": [a.serial], "--spki": [b.serial], "--name": sorted([c1.serial, c2.serial]),
                     "--issuer": [d.serial]}
    # what is left is everything: --all takes it
    code, _out, err = em(capsys, home, "--all", "--reason", "keyCompromise")
    assert code == 0, err
    assert [i["serial"] for i in status(capsys, home)["identities"]] == [rest.serial]
    started = audit(ca, "emergency.start")
    assert [e.detail["count"] for e in started] == [1, 1, 2, 1, 1]
    assert started[2].detail["selector"] == {"kind": "name", "value": "c?.internal"}
    assert started[-1].detail["reason"] == "keyCompromise"


def test_a_selector_of_nothing_or_of_everything_is_refused_with_the_count(ca: Authority[Any], home: Path,
                                                                          capsys: Any) -> None:
    for name in ("x.internal", "y.internal", "z.internal"):
        issue(ca, name)
    before = len(list(ca.store.audit_entries()))  # type: ignore[attr-defined]
    code, _out, err = em(capsys, home, "--name", "nothing.*", "--reason", "keyCompromise")
    assert code == ExitCode.NOTHING_SELECTED == 6
    assert "matched none of the 3 unexpired certificates" in err and "nothing changed" in err
    code, _out, err = em(capsys, home, "--name", "*.internal", "--reason", "keyCompromise")
    assert code == 6 and "matched all 3 unexpired certificates: say --all" in err, err
    code, _out, err = em(capsys, home, "--all", "--reason", "stolen")
    assert code == ExitCode.USAGE and "stolen" in err and "keyCompromise" in err
    code, _out, err = em(capsys, home, "--all", "--name", "x.internal", "--reason", "keyCompromise")
    assert code == ExitCode.USAGE and "exactly one of" in err
    code, _out, err = em(capsys, home, "--spki", "abc", "--reason", "keyCompromise")
    assert code != 0 and "64 hex digits" in err
    assert len(list(ca.store.audit_entries())) == before  # type: ignore[attr-defined]
    assert status(capsys, home) == {"emergency": None, "identities": [],
                                           "counts": {"replaced": 0, "pending": 0, "unreachable": 0}}
    with pytest.raises(SelectionRefused) as refused:
        Emergencies(ca.store).start(Selector.of("serial", ["abcdef"]), "keyCompromise", timedelta(minutes=5))
    assert refused.value.fields == {"matched": 0, "total": 3}


def test_an_affected_certificate_rekeys_once_and_its_key_is_never_certified_again(ca: Authority[Any],
                                                                                    home: Path,
                                                                                    capsys: Any) -> None:
    old, _other = issue(ca, "pay.internal"), issue(ca, "other.internal")
    assert em(capsys, home, "--serial", old.serial, "--reason", "keyCompromise")[0] == 0
    # the same key, by renewal and by a bootstrap token
    with pytest.raises(Forbidden) as same:
        renew(ca, old, key=old.key)
    assert same.value.code == Code.KEY_BLOCKED
    with pytest.raises(Forbidden) as again:
        issue(ca, "pay.internal", key=old.key)
    assert again.value.code == Code.KEY_BLOCKED
    assert any(e.detail.get("code") == "keyBlocked" for e in audit(ca, "request.deny"))
    # a new key: once
    new = renew(ca, old)
    assert new.chain[0].public_key() != old.chain[0].public_key()
    with pytest.raises(Exception) as twice:
        renew(ca, old)
    assert getattr(twice.value, "code", None) == Code.SUPERSEDED
    # the replacement renews as any certificate does
    assert renew(ca, new).serial != new.serial


def test_require_bootstrap_refuses_any_renewal_by_the_old_certificate(ca: Authority[Any], home: Path,
                                                                     capsys: Any) -> None:
    old, _other = issue(ca, "inv.internal"), issue(ca, "other.internal")
    assert em(capsys, home, "--name", "inv.*", "--reason", "keyCompromise", "--require-bootstrap")[0] == 0
    with pytest.raises(Forbidden) as refused:
        renew(ca, old)
    assert refused.value.code == Code.BOOTSTRAP_REQUIRED == "bootstrapRequired"
    assert refused.value.status == 403 and "new bootstrap token" in refused.value.detail
    # a fresh bootstrap with a new key works
    assert issue(ca, "inv.internal").serial != old.serial


def test_grace_expiry_revokes_once_across_sweepers_and_marks_unreachable(ca: Authority[Any], home: Path,
                                                                         capsys: Any) -> None:
    lost, renewed, _keep = issue(ca, "lost.internal"), issue(ca, "cli.internal"), issue(ca, "keep.internal")
    seen = issue(ca, "seen.internal")
    fleet = fleet_of(ca)
    assert not renew_now(checkin(fleet, lost, "lost1"))  # a party holds it
    assert em(capsys, home, "--name", "[lcs]*.internal", "--reason", "keyCompromise", "--grace", "5m")[0] == 0
    assert renew_now(checkin(fleet, lost, "lost1"))  # told at its next check-in
    replacement = renew(ca, renewed)  # renewed by hand (no party): replaced when the grace runs out
    # the renewal of seen.internal checks in, serving it: retired at once, not at the deadline
    seen_new = renew(ca, seen)
    assert not renew_now(checkin(fleet, seen_new, "seen1", endpoint_serial=seen_new.serial))
    assert _state(ca, seen.serial) == ("revoked", "keyCompromise")
    assert _state(ca, lost.serial) == ("issued", None)

    def later() -> datetime:
        return ca.clock() + timedelta(minutes=6)

    one, two = Emergencies(ca.store, clock=later), Emergencies(ca.store, clock=later)
    assert one.sweep() + two.sweep() == 2  # two replicas: each certificate revoked once
    assert _state(ca, lost.serial) == ("revoked", "keyCompromise")
    assert _state(ca, renewed.serial) == ("revoked", "keyCompromise")
    assert _state(ca, replacement.serial) == ("issued", None)  # no cascade to the replacement
    assert _state(ca, seen_new.serial) == ("issued", None)
    report = status(capsys, home)
    states = {i["identity"]: (i["state"], i["replacement"]) for i in report["identities"]}
    assert states == {"lost.internal": ("unreachable", None), "cli.internal": ("replaced", replacement.serial),
                      "seen.internal": ("replaced", seen_new.serial)}
    assert report["counts"] == {"replaced": 2, "pending": 0, "unreachable": 1}
    revocations = [e for e in audit(ca, "certificate.revoke") if e.actor == "emergency"]
    assert sorted(e.target for e in revocations) == sorted([lost.serial, renewed.serial, seen.serial])
    assert all(e.detail["reason"] == "keyCompromise" for e in revocations)
    assert one.sweep() + two.sweep() == 0


def test_status_json_and_tokens_that_bootstrap_the_replacement(ca: Authority[Any], home: Path,
                                                                 tmp_path: Path, capsys: Any) -> None:
    old, _other = issue(ca, "svc.internal"), issue(ca, "other.internal")
    code, out, err = em(capsys, home, "--name", "svc.internal", "--reason", "keyCompromise",
                        "--require-bootstrap", "--grace", "1h")
    assert code == 0 and "1 certificate(s)" in out, err
    report = status(capsys, home)
    assert set(report) == {"emergency", "counts", "identities"}
    assert report["identities"] == [{"identity": "svc.internal", "serial": old.serial, "state": "pending",
                                     "replacement": None}]
    assert report["emergency"]["reason"] == "keyCompromise" and report["emergency"]["require_bootstrap"] is True
    assert report["counts"] == {"replaced": 0, "pending": 1, "unreachable": 0}
    text = em(capsys, home, "status")[1]
    assert "pending 1" in text and "svc.internal" in text

    assert em(capsys, home, "tokens")[0] == ExitCode.USAGE  # nowhere to put them
    code, out, err = em(capsys, home, "tokens", "--out", str(tmp_path / "tokens"))
    assert code == 0, err
    token_file = tmp_path / "tokens" / "svc.internal.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    from trustyard.x509.keys import KeyType, generate_private_key
    from trustyard.x509.names import parse_name

    key = generate_private_key(KeyType.EC_P256)
    issued = ca.issue_for_token(csr_pem(key, [parse_name("svc.internal")]), token_file.read_text().strip())
    from .helpers import Held

    fresh = Held(key, [issued.certificate, *issued.chain])
    # the certificate the token bought checks in (no endpoint to verify): the old one is retired
    checkin(fleet_of(ca), fresh, "svc1")
    assert _state(ca, old.serial) == ("revoked", "keyCompromise")
    assert status(capsys, home)["identities"][0]["replacement"] == fresh.serial


def test_emergency_help_names_the_selectors_and_the_exit_status(capsys: Any) -> None:
    from trustyard.cli import main

    assert main(["emergency", "--help"]) == 0
    text = capsys.readouterr().out
    for word in ("--spki", "--serial", "--name", "--issuer", "--all", "--reason", "--grace", "--require-bootstrap",
                 "status", "tokens", "exits 6"):
        assert word in text


def test_a_renewal_right_after_the_start_meets_the_emergency(ca: Authority[Any], home: Path, capsys: Any,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker trusts "no emergency open" for a while at check-in; never at issuance."""
    monkeypatch.setattr(emergency, "ACTIVE_RECHECK", 3600.0)
    old, _other = issue(ca, "race.internal"), issue(ca, "other.internal")
    assert not renew_now(checkin(fleet_of(ca), old, "r1"))  # this worker now believes none is open
    assert em(capsys, home, "--serial", old.serial, "--reason", "keyCompromise", "--require-bootstrap")[0] == 0
    with pytest.raises(Forbidden) as refused:
        renew(ca, old)
    assert refused.value.code == Code.BOOTSTRAP_REQUIRED
    with pytest.raises(Forbidden) as blocked:
        issue(ca, "race.internal", key=old.key)
    assert blocked.value.code == Code.KEY_BLOCKED


def test_a_certificate_renewed_already_is_selected_revoked_at_once_and_its_key_blocked(
        ca: Authority[Any], home: Path, capsys: Any) -> None:
    """The key of a certificate that was renewed last week leaks: the old certificate still
    works until it expires, so the emergency takes it too, with no grace."""
    old, _other = issue(ca, "pay.internal"), issue(ca, "other.internal")
    new = renew(ca, old)
    spki = spki_sha256(old.chain[0].public_key())
    code, _out, err = em(capsys, home, "--spki", spki, "--reason", "keyCompromise", "--grace", "1h")
    assert code == 0, err
    assert Emergencies(ca.store, clock=ca.clock).sweep() == 1  # no grace: its replacement exists
    assert _state(ca, old.serial) == ("revoked", "keyCompromise")
    assert _state(ca, new.serial) == ("issued", None)
    report = status(capsys, home)
    assert report["identities"] == [{"identity": "pay.internal", "serial": old.serial, "state": "replaced",
                                     "replacement": new.serial}]
    with pytest.raises(Forbidden) as blocked:
        issue(ca, "pay.internal", key=old.key)
    assert blocked.value.code == Code.KEY_BLOCKED


def test_a_certificate_expired_but_still_renewable_is_in_the_emergency(ca: Authority[Any]) -> None:
    """With ``[renewal] allow_after_expiry``, a certificate expired 20 minutes ago may still
    renew: an emergency must select it, or its (stolen) key renews around the emergency."""
    lapsed, _a, _b = issue(ca, "lapsed.internal"), issue(ca, "a.internal"), issue(ca, "b.internal")
    with ca.store.transaction() as conn:  # type: ignore[attr-defined]
        conn.execute(update(certificates).where(certificates.c.serial == lapsed.serial)
                     .values(not_after=ca.clock() - timedelta(minutes=20)))
    spki = spki_sha256(lapsed.chain[0].public_key())
    with pytest.raises(SelectionRefused):  # renewal after expiry off: it is dead, nothing to replace
        Emergencies(ca.store, clock=ca.clock).start(Selector.of("spki", [spki]), "keyCompromise",
                                                    timedelta(minutes=5))
    row, _asked = Emergencies(ca.store, clock=ca.clock, renewable_for=timedelta(hours=1)).start(
        Selector.of("spki", [spki]), "keyCompromise", timedelta(minutes=5), require_bootstrap=True)
    assert row.count == 1
    guard = Emergencies(ca.store, clock=ca.clock)
    with pytest.raises(Forbidden) as refused:
        guard.check_issue(spki_sha256(_a.chain[0].public_key()), renewed_from=lapsed.serial)
    assert refused.value.code == Code.BOOTSTRAP_REQUIRED
    with pytest.raises(Forbidden) as blocked:
        guard.check_issue(spki, renewed_from=None)
    assert blocked.value.code == Code.KEY_BLOCKED
