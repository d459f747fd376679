"""One time format, one duration grammar.

Every timestamp a person reads (text and JSON, whatever the machine's time zone) is RFC 3339
UTC with seconds and ``Z``; durations take compound forms (``4m55s``, ``1h30m``, ``2160h``)
wherever a duration is taken (API, CLI, config files) and the help shows the grammar."""

from __future__ import annotations

import json
import logging
import re
import socket
import ssl
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from trustyard import units
from trustyard.agent.config import build, cert_spec
from trustyard.ca.config import load_config
from trustyard.cli import COMMANDS, cli, main
from trustyard.units import MAX_DURATION, format_duration, parse_duration

from .support import PASSWORD

STRICT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
# anything that looks like a date and a time, in any of the forms the CLI used to print
LOOSE = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d)?(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?")


def timestamps(text: str) -> list[str]:
    return LOOSE.findall(text)


def assert_rfc3339_utc(text: str, at_least: int, what: str) -> None:
    found = timestamps(text)
    assert len(found) >= at_least, f"{what}: expected timestamps in:\n{text}"
    bad = [t for t in found if not STRICT.fullmatch(t)]
    assert not bad, f"{what}: not RFC 3339 UTC with seconds and Z: {bad}\n{text}"
    assert "+00:00" not in text and not re.search(r"\d\d:\d\d:\d\d\.\d", text), f"{what}:\n{text}"


@pytest.fixture
def elsewhere(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A machine whose local time is not UTC (half an hour off, to catch any local conversion)."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _expired_cert(directory: Path) -> Path:
    """A self-signed service certificate that expired ten days ago (a certificate found lying around)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old.internal")])
    now = datetime.now(UTC).replace(microsecond=0)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=400)).not_valid_after(now - timedelta(days=10))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("old.internal")]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    directory.mkdir()
    (directory / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = directory / "tls.key"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return directory / "tls.crt"


@contextmanager
def tls_server(cert: Path, key: Path) -> Iterator[int]:
    """A loopback TLS server presenting ``cert``; yields its port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            try:
                conn.settimeout(5)
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except Exception:  # the client hung up or refused the chain: all a probe does
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_cli_session_prints_every_timestamp_as_rfc3339_utc(tmp_path: Path, elsewhere: None,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TRUSTYARD_PASSWORD", PASSWORD.decode())
    monkeypatch.chdir(tmp_path)
    home = str(tmp_path / "home")
    assert _run(capsys, "init", "--home", home, "--allow", "*.internal")[0] == 0
    code, token = _run(capsys, "token", "orders.internal", "--home", home)
    assert code == 0
    code, issued = _run(capsys, "issue", "orders.internal", "--home", home, "--token", token.strip(), "--out", "out")
    assert code == 0
    assert_rfc3339_utc(issued, 2, "issue")
    old = _expired_cert(tmp_path / "old")

    texts = {
        "inspect": (["inspect", "out/tls.crt"], 4),
        "check": (["check", "--cert", "out/tls.crt", "--key", "out/tls.key", "--ca", "out/ca.crt"], 2),
        "list": (["list", "--home", home], 1),
        "audit": (["audit", "--home", home], 2),
        "scan": (["scan", "out", "old"], 1),  # old/tls.crt expired: its finding says when
    }
    for what, (args, at_least) in texts.items():
        code, text = _run(capsys, *args)
        assert code in (0, 1), (what, text)
        assert_rfc3339_utc(text, at_least, what)
        code, doc = _run(capsys, *args, "--json")
        assert_rfc3339_utc(doc, at_least, f"{what} --json")
        json.loads(doc)

    # doctor against a live endpoint serving the new certificate, and against the expired one
    with tls_server(tmp_path / "out/tls.crt", tmp_path / "out/tls.key") as port:
        code, text = _run(capsys, "doctor", f"127.0.0.1:{port}", "--ca", "out/ca.crt", "--name", "orders.internal")
        assert code == 0, text
        assert_rfc3339_utc(text, 4, "doctor")
    with tls_server(old, tmp_path / "old/tls.key") as port:
        for extra in ([], ["--json"]):
            code, text = _run(capsys, "doctor", f"127.0.0.1:{port}", "--ca", str(old), "--name", "old.internal",
                              *extra)
            assert code == 1 and "expired" in text, text
            assert_rfc3339_utc(text, 3, f"doctor {extra}")


def test_the_agent_log_stamps_utc_whatever_the_zone(elsewhere: None, capsys: pytest.CaptureFixture[str]) -> None:
    from trustyard.cli.agent import _setup_logging

    logger = logging.getLogger("trustyard")
    saved = logger.handlers[:], logger.level, logger.propagate
    try:
        _setup_logging(False, "info")
        before = datetime.now(UTC).replace(microsecond=0)
        logging.getLogger("trustyard.agent").info("orders.internal: renewed")
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved
    line = capsys.readouterr().err.strip()
    stamp = line.split(" ", 1)[0]
    assert STRICT.fullmatch(stamp), line
    logged = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert timedelta(0) <= logged - before <= timedelta(seconds=5), line  # UTC, not Kolkata's wall clock


# -- the formatters ---------------------------------------------------------------------------------------

def test_format_time() -> None:
    kolkata = timezone(timedelta(hours=5, minutes=30))
    assert units.format_time(datetime(2026, 12, 7, 16, 35, 28, 404155, tzinfo=UTC)) == "2026-12-07T16:35:28Z"
    assert units.format_time(datetime(2026, 12, 7, 22, 5, 28, tzinfo=kolkata)) == "2026-12-07T16:35:28Z"
    assert units.format_time(datetime(2026, 12, 7, 16, 35, 28)) == "2026-12-07T16:35:28Z"  # naive: UTC
    assert units.format_time("2026-12-07T16:35:28.404155+00:00") == "2026-12-07T16:35:28Z"
    assert units.format_time("2026-12-07T16:35:28Z") == "2026-12-07T16:35:28Z"


@pytest.mark.parametrize("seconds,text", [(295, "4m55s"), (5400, "1h30m"), (86400, "1d"), (90 * 86400, "90d"),
                                          (129600, "1d12h"), (90061, "1d1h1m1s"), (45, "45s")])
def test_format_duration_prints_compound_forms(seconds: int, text: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == text
    assert parse_duration(text) == timedelta(seconds=seconds)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=int(MAX_DURATION.total_seconds())))
def test_format_duration_round_trips(seconds: int) -> None:
    assert parse_duration(format_duration(timedelta(seconds=seconds))) == timedelta(seconds=seconds)


# -- compound durations: the parser, the CLI, the configs -----------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("4m55s", timedelta(minutes=4, seconds=55)), ("1h30m", timedelta(hours=1, minutes=30)),
    ("2160h", timedelta(days=90)), ("1d12h", timedelta(days=1, hours=12)), (" 1h30m\t", timedelta(minutes=90)),
    ("1y2w3d4h5m6s", timedelta(days=365 + 14 + 3, hours=4, minutes=5, seconds=6)),
    ("99y52w1d", timedelta(days=36500)), ("0h30m", timedelta(minutes=30)), ("24 h", timedelta(hours=24)),
])
def test_compound_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text,why", [
    ("30m1h", "largest to the smallest"), ("1h1h", "largest to the smallest"), ("1m1h", "largest to the smallest"),
    ("1h 30m", "without spaces, 1h30m"), ("1h30", "largest first"), ("h30m", "largest first"),
    ("1h-30m", "largest first"), ("1H30M", "largest first"), ("1h30m\n", "largest first"),
    ("100y1s", "maximum of 100 years"), ("0h0m", "more than zero"), ("1h" * 33, "largest first"),
])
def test_bad_compound_durations_say_why(text: str, why: str) -> None:
    with pytest.raises(ValueError, match="invalid duration") as info:
        parse_duration(text)
    assert why in str(info.value)


def test_compound_durations_on_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TRUSTYARD_PASSWORD", PASSWORD.decode())
    monkeypatch.chdir(tmp_path)
    home = str(tmp_path / "home")
    assert _run(capsys, "init", "--home", home, "--allow", "*.internal", "--intermediate-ttl", "8760h")[0] == 0
    # a token capped at 1h30m30s: a 2h request is refused, in the grammar it was given
    code, token = _run(capsys, "token", "a.internal", "--home", home, "--cert-ttl", "1h30m30s")
    assert code == 0
    code, text = _run(capsys, "issue", "a.internal", "--home", home, "--token", token.strip(), "--ttl", "2h")
    assert code == 1 and "lifetime 2h is longer than the 1h30m30s the token allows" in text, text
    code, text = _run(capsys, "token", "a.internal", "--home", home, "--cert-ttl", "4m55s")
    assert code == 1 and "lifetime 4m55s is outside [5m, 30d]" in text, text
    code, token = _run(capsys, "token", "b.internal", "--home", home, "--ttl", "4m55s")
    code, text = _run(capsys, "issue", "b.internal", "--home", home, "--token", token.strip(), "--ttl", "1h30m",
                      "--out", "b", "--json")
    assert code == 0, text
    doc = json.loads(text)
    lifetime = _utc(doc["not_after"]) - _utc(doc["not_before"])
    assert lifetime == timedelta(hours=1, minutes=31)  # 1h30m and the CA's 1m backdate
    code, text = _run(capsys, "check", "--cert", "b/tls.crt", "--key", "b/tls.key", "--ca", "b/ca.crt",
                      "--min-remaining", "1h29m")
    assert code == 0, text
    code, text = _run(capsys, "check", "--cert", "b/tls.crt", "--key", "b/tls.key", "--ca", "b/ca.crt",
                      "--min-remaining", "1h30m30s")
    assert code != 0 and "required" in text, text
    assert _run(capsys, "doctor", "127.0.0.1:1", "--timeout", "1s500ms")[0] == 2  # no such unit
    _run(capsys, "doctor", "127.0.0.1:1", "--timeout", "0m2s")
    assert "invalid duration" not in capsys.readouterr().err


def test_compound_durations_in_scan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "long.internal")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + timedelta(days=95))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("long.internal")]), critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "long.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def codes(*args: str) -> set[str]:
        main(["scan", str(tmp_path), "--json", *args])
        return {f["code"] for f in json.loads(capsys.readouterr().out)["findings"]}

    assert "long_validity" in codes("--max-validity", "2160h")  # 90 days
    assert "long_validity" not in codes("--max-validity", "13w6d")  # 97 days
    assert "expiring" in codes("--warn", "13w6d") and "expiring" not in codes("--warn", "1d12h")


def test_compound_durations_in_config_files(sqlite_home: Path, tmp_path: Path) -> None:
    path = sqlite_home / "trustyard.toml"
    doc = tomllib.loads(path.read_text())
    doc["provisioners"][0].update(min_ttl="4m55s", default_ttl="1h30m", max_ttl="1d12h")
    doc["ca"]["backdate"] = "1m30s"
    path.write_text(tomli_w.dumps(doc))
    config = load_config(sqlite_home)
    policy = config.provisioner(doc["provisioners"][0]["name"]).policy(config.backdate)
    assert (policy.min_ttl, policy.default_ttl, policy.max_ttl, policy.backdate) == (
        timedelta(minutes=4, seconds=55), timedelta(minutes=90), timedelta(hours=36), timedelta(seconds=90))

    spec = cert_spec({"name": "a.internal", "out": str(tmp_path / "a"), "ttl": "1h30m", "renew_at": "4m55s",
                      "outage_budget": "1h15m", "error_before": "2m30s", "verify_grace": "1m5s"})
    assert spec.ttl == timedelta(minutes=90) and spec.verify_grace == timedelta(seconds=65)
    assert spec.schedule.renew_at.absolute == timedelta(seconds=295)
    assert spec.schedule.outage_budget == timedelta(minutes=75)
    assert spec.error_before.absolute == timedelta(seconds=150)
    agent = build({"ca_url": "https://127.0.0.1:8443", "root": "root.crt", "roots_interval": "2m30s"}, (spec,))
    assert agent.roots_interval == timedelta(seconds=150)


def _utc(text: str) -> datetime:
    assert STRICT.fullmatch(text), text
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


# -- the help shows the grammar ---------------------------------------------------------------------------------

def _duration_options(command: Any) -> list[str]:
    return [p.opts[0] for p in command.params
            if "DURATION" in ((p.metavar or "") + (getattr(p.type, "name", "") or "")).upper()]


def test_every_duration_option_shows_the_grammar_in_its_help() -> None:
    seen = {}
    for name in COMMANDS:
        command = cli.get_command(None, name)  # type: ignore[arg-type]
        options = _duration_options(command)
        if not options:
            continue
        seen[name] = options
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0, result.output
        flat = " ".join(result.output.split())
        assert "DURATION is written as whole numbers with units, largest first" in flat, (name, result.output)
        assert "1h30m" in flat and "2160h" in flat and "y w d h m s" in flat, (name, result.output)
    assert {"init", "serve", "token", "issue", "doctor", "scan", "check", "agent"} <= set(seen), seen
    assert "--warn" in seen["scan"]  # a threshold is a duration too


def test_compound_durations_and_times_in_the_http_api(sqlite_home: Path) -> None:
    from starlette.testclient import TestClient

    from trustyard.api.app import create_app
    from trustyard.ca.home import load_authority

    from .support import new_csr

    authority = load_authority(sqlite_home, PASSWORD, minting=True)
    admin = {"Authorization": "Bearer " + (sqlite_home / "admin.token").read_text().strip()}
    try:
        with TestClient(create_app(authority, load_config(sqlite_home)), raise_server_exceptions=False) as client:
            _, csr = new_csr("api.internal")
            token = authority.mint_token("default", "api.internal", ["api.internal"])
            response = client.post("/v1/sign", json={"csr": csr.decode(), "token": token, "ttl": "1h30m"})
            assert response.status_code == 201, response.text
            doc = response.json()
            assert _utc(doc["not_after"]) - _utc(doc["not_before"]) == timedelta(hours=1, minutes=31)  # + backdate
            listed = client.get(f"/v1/certificates/{doc['serial']}", headers=admin)
            assert listed.status_code == 200, listed.text
            assert_rfc3339_utc(listed.text, 3, "GET /v1/certificates/{serial}")

            token = authority.mint_token("default", "api.internal", ["api.internal"])
            refused = client.post("/v1/sign", json={"csr": csr.decode(), "token": token, "ttl": "30m1h"})
            assert refused.status_code == 400 and refused.json()["field"] == "ttl", refused.text
            assert "largest to the smallest" in refused.json()["detail"]
    finally:
        authority.store.close()
