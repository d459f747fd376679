"""``revoke`` and ``list`` behave like their neighbours, against a real
``trustyard serve`` (and the local ``--home`` path)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from trustyard.ca.authority import REVOCATION_REASONS
from trustyard.ca.home import InitOptions, init_home
from trustyard.units import format_time
from trustyard.x509.summary import serial_text

from .support import PASSWORD, Server, internal_ca_server, run_cli

ENV = {"TRUSTYARD_PASSWORD": PASSWORD.decode()}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with internal_ca_server(tmp_path_factory.mktemp("revoke-ca")) as served:
        yield served


run = run_cli


def remote(server: Server) -> list[str]:
    """--ca-url with the admin token of the home (``--home`` names where admin.token is)."""
    return ["--ca-url", server.url, "--root", str(server.root), "--home", str(server.home)]


def issue(server: Server, out: Path, name: str = "orders.internal") -> str:
    code, stdout, err = run("issue", name, "--home", str(server.home), "--out", str(out), "--json")
    assert code == 0, err
    return json.loads(stdout)["serial"]


def status_of(server: Server, serial: str) -> dict[str, str]:
    code, stdout, err = run("list", *remote(server), "--json")
    assert code == 0, err
    return next(c for c in json.loads(stdout)["certificates"] if c["serial"] == serial)


def test_revoke_takes_the_serial_as_argument_and_says_who_is_told(server: Server, tmp_path: Path) -> None:
    serial = issue(server, tmp_path / "orders")
    code, out, err = run("revoke", serial, *remote(server))
    assert code == 0, err
    lines = out.splitlines()
    revoked_at = status_of(server, serial)["revoked_at"]  # the ledger's time, to the second
    assert lines[0] == f"revoked   {serial} at {revoked_at} (unspecified)"
    (told,) = [line for line in lines if line.startswith("told ")]
    assert "the CA: it refuses to renew this certificate from now on" in told and "OCSP responder" in told
    (not_told,) = [line for line in lines if line.startswith("not told")]
    assert "check neither OCSP nor the CRL" in not_told and "until it expires at" in not_told
    assert "trustyard token orders.internal, then trustyard issue orders.internal" in out
    assert status_of(server, serial)["status"] == "revoked"


def test_the_old_serial_option_still_works_but_is_hidden(server: Server, tmp_path: Path) -> None:
    serial = issue(server, tmp_path / "orders")
    code, out, err = run("revoke", "--serial", serial, *remote(server))
    assert code == 0 and out.startswith(f"revoked   {serial}"), err
    code, help_text, _ = run("revoke", "--help")
    assert "[SERIAL]" in help_text and "--serial" not in help_text


def test_reason_is_a_case_insensitive_choice(server: Server, tmp_path: Path) -> None:
    serial = issue(server, tmp_path / "orders")
    code, out, err = run("revoke", serial, "--reason", "CESSATIONOFOPERATION", *remote(server))
    assert code == 0, err
    assert out.splitlines()[0].endswith("(cessationOfOperation)")
    assert status_of(server, serial)["revocation_reason"] == "cessationOfOperation"


def test_a_bad_reason_is_a_usage_error_listing_the_reasons(server: Server, tmp_path: Path) -> None:
    serial = issue(server, tmp_path / "orders")
    code, out, err = run("revoke", serial, "--reason", "stolen", *remote(server))
    assert code == 2 and out == ""
    assert "Invalid value for '--reason': 'stolen' is not one of " + ", ".join(REVOCATION_REASONS) in err
    assert status_of(server, serial)["status"] == "issued"  # nothing changed


@pytest.mark.parametrize("how", ["admin", "holder", "local"])
def test_revoking_again_succeeds_and_says_when(server: Server, tmp_path: Path, how: str) -> None:
    out_dir = tmp_path / "orders"
    serial = issue(server, out_dir)
    args = {"admin": [serial, *remote(server)],
            "holder": ["--cert", str(out_dir / "tls.crt"), "--key", str(out_dir / "tls.key"), "--ca-url",
                       server.url, "--root", str(server.root)],
            "local": [serial, "--home", str(server.home)]}[how]
    code, first, err = run("revoke", *args, "--reason", "superseded")
    assert code == 0, err
    revoked_at = status_of(server, serial)["revoked_at"]
    assert f"{serial} at {revoked_at} (superseded)" in first.splitlines()[0]
    code, again, err = run("revoke", *args, "--reason", "superseded")
    assert code == 0, err
    assert again.strip() == f"{serial} was already revoked at {revoked_at} (superseded); nothing changed"
    code, doc, _ = run("revoke", *args, "--json")
    assert code == 0 and json.loads(doc)["already_revoked"] is True


def test_key_compromise_still_reaches_the_renewals_of_a_revoked_certificate(server: Server, tmp_path: Path) -> None:
    out_dir = tmp_path / "orders"
    first = issue(server, out_dir)
    shutil.copytree(out_dir, tmp_path / "first")
    code, _, err = run("renew", "--cert", str(out_dir / "tls.crt"), "--key", str(out_dir / "tls.key"),
                       "--home", str(server.home))
    assert code == 0, err
    child = status_of(server, first)["superseded_by"]
    assert child and status_of(server, child)["status"] == "issued"
    assert run("revoke", first, *remote(server))[0] == 0  # unspecified: the renewal lives on
    assert status_of(server, child)["status"] == "issued"
    code, out, err = run("revoke", first, "--reason", "keycompromise", *remote(server))
    assert code == 0, err
    assert "(keyCompromise)" in out.splitlines()[0] and "and every certificate renewed from it" in out
    assert status_of(server, child)["status"] == "revoked"
    code, out, _ = run("revoke", first, "--reason", "keyCompromise", *remote(server))
    assert code == 0 and "was already revoked at" in out and "(keyCompromise)" in out


def _not_after(pem: Path) -> str:
    """The certificate's notAfter as the CLI prints it (RFC 3339 UTC, seconds, ``Z``)."""
    return format_time(x509.load_pem_x509_certificate(pem.read_bytes()).not_valid_after_utc)


def test_list_says_no_certificates_found_on_an_empty_ledger(tmp_path: Path) -> None:
    home = tmp_path / "ca"
    init_home(home, PASSWORD, InitOptions(allow=("*.internal",)))
    code, out, err = run("list", "--home", str(home))
    assert code == 0, err
    assert out == "No certificates found.\n"
    code, out, _ = run("list", "--home", str(home), "--json")
    assert json.loads(out) == {"certificates": []}


def test_list_shows_expires_in_superseded_and_filters_by_name(server: Server, tmp_path: Path) -> None:
    out_dir = tmp_path / "reports"
    first = issue(server, out_dir, "reports.internal")
    not_after = {first: _not_after(out_dir / "tls.crt")}
    code, _, err = run("renew", "--cert", str(out_dir / "tls.crt"), "--key", str(out_dir / "tls.key"),
                       "--home", str(server.home))
    assert code == 0, err
    renewed = x509.load_pem_x509_certificate((out_dir / "tls.crt").read_bytes())
    not_after[serial_text(renewed.serial_number)] = _not_after(out_dir / "tls.crt")
    issue(server, tmp_path / "other", "billing.internal")
    code, out, err = run("list", *remote(server), "--name", "REPORTS.internal")
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split() == ["SERIAL", "STATUS", "EXPIRES", "IN", "NOT", "AFTER", "SANS"]
    assert len(rows) == 2 and all(row.endswith("reports.internal") for row in rows)
    assert "billing.internal" not in out
    statuses = {row.split()[0]: row.split()[1] for row in rows}
    assert statuses[first] == "superseded" and "issued" in statuses.values()
    for row in rows:  # the columns line up under their headers
        assert row.index(" ", header.index("EXPIRES IN")) > header.index("EXPIRES IN")
        assert re.match(r"2[0-3]h \d+m", row[header.index("EXPIRES IN"):])
        assert row[header.index("NOT AFTER"):].split()[0] == not_after[row.split()[0]]
    code, out, _ = run("list", *remote(server), "--name", "*.internal")
    assert code == 0 and "billing.internal" in out and "reports.internal" in out
    code, out, _ = run("list", *remote(server), "--name", "nothing.internal")
    assert code == 0 and out == "No certificates found.\n"
