"""The CA tells its operator what happens.

A real ``trustyard serve --init`` on loopback: one log line per issuance, renewal, revocation and
refusal on its stderr (never a token or a key), refusals rate-limited; the first steps printed
only by the run that created the CA; ``--listen`` kept out of trustyard.toml; ``audit`` as a table
that shows why a request was refused.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from trustyard.ca.oplog import OperationsLog, logfmt
from trustyard.store import AuditEvent
from trustyard.testing import free_port

from .support import new_csr, str_ctx

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ INFO trustyard\.ca\[\d+\]: (.*)$")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTYARD_")}
    return subprocess.run([sys.executable, "-m", "trustyard", *args], capture_output=True, text=True, env=env,
                          timeout=120)


class Serve:
    """``trustyard serve`` as its operator starts it, stderr kept in a file."""

    def __init__(self, home: Path, *args: str, workers: int = 1) -> None:
        self.home, self.port = home, free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.err = home.parent / f"serve-{self.port}.err"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTYARD_")}
        with self.err.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "trustyard", "serve", "--home", str(home), "--listen",
                 f"127.0.0.1:{self.port}", "--workers", str(workers), *args],
                stdout=subprocess.DEVNULL, stderr=err, env=env, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.stderr()
            if (home / "ca/root.crt").exists():
                try:
                    if httpx.get(self.url + "/healthz", verify=str_ctx(home / "ca/root.crt")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError("the CA did not come up:\n" + self.stderr())

    def stderr(self) -> str:
        return self.err.read_text()

    def messages(self) -> list[str]:
        """What the CA logged (trustyard.ca), without the time, level and process prefix."""
        return [m.group(1) for m in map(LOG_LINE.match, self.stderr().splitlines()) if m]

    def wait_for(self, pattern: str, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [m for m in self.messages() if re.search(pattern, m)]
            if found:
                return found[0]
            time.sleep(0.1)
        raise AssertionError(f"no log line matches {pattern!r}:\n{self.stderr()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(5)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """The Quickstart's `serve --init --insecure-no-password`, with two workers, on a free port."""
    server = Serve(tmp_path_factory.mktemp("served") / "ca", "--init", "--insecure-no-password", workers=2)
    yield server
    server.stop()


def _mismatched_sign(server: Serve) -> httpx.Response:
    """A genuine token for a.internal spent on a CSR for b.internal: refused (and audited)."""
    token = run("token", "--home", str(server.home), "a.internal").stdout.strip()
    _key, csr = new_csr("b.internal")
    with httpx.Client(base_url=server.url, verify=str_ctx(server.home / "ca/root.crt")) as client:
        return client.post("/v1/sign", json={"csr": csr.decode(), "token": token})


@pytest.mark.slow
def test_serve_logs_each_issuance_renewal_revocation_and_refusal(served: Serve, tmp_path: Path) -> None:
    root = str(served.home / "ca/root.crt")
    token = run("token", "--home", str(served.home), "orders.internal").stdout.strip()
    out = tmp_path / "orders"
    issued = run("issue", "orders.internal", "--token", token, "--ca-url", served.url, "--root", root,
                 "--out", str(out))
    assert issued.returncode == 0, issued.stderr
    serial = re.search(r"serial\s+([0-9a-f]+)", issued.stdout).group(1)  # type: ignore[union-attr]
    renewed = run("renew", "--cert", str(out / "tls.crt"), "--key", str(out / "tls.key"), "--ca-url", served.url,
                  "--root", root)
    assert renewed.returncode == 0, renewed.stderr
    new_serial = re.search(r"serial\s+([0-9a-f]+)", renewed.stdout).group(1)  # type: ignore[union-attr]
    admin = (served.home / "admin.token").read_text().strip()
    with httpx.Client(base_url=served.url, verify=str_ctx(served.home / "ca/root.crt")) as client:
        revoked = client.post("/v1/revoke", json={"serial": new_serial, "reason": "keyCompromise"},
                              headers={"Authorization": f"Bearer {admin}"})
        assert revoked.status_code == 200, revoked.text
        _key, csr = new_csr("orders.internal")
        garbage = [client.post("/v1/sign", json={"csr": csr.decode(), "token": "not-a-token"}) for _ in range(6)]
        assert {r.status_code for r in garbage} == {401}
        junk = client.post("/acme/acme/new-account", content=b"{}", headers={"Content-Type": "application/json"})
        assert junk.status_code == 415
    assert _mismatched_sign(served).status_code == 403

    line = served.wait_for(f"^issued serial={serial} ")
    assert re.fullmatch(rf"issued serial={serial} names=orders\.internal lifetime=\S+ not_after=\S+ "
                        r"provisioner=default client=127\.0\.0\.1", line), line
    line = served.wait_for(f"^renewed serial={new_serial} ")
    assert f"renewed_from={serial} names=orders.internal lifetime=" in line
    assert line.endswith(" provisioner=default client=127.0.0.1"), line
    line = served.wait_for(f"^revoked serial={new_serial} ")
    assert line == f"revoked serial={new_serial} reason=keyCompromise names=orders.internal by=admin client=127.0.0.1"
    line = served.wait_for("^refused action=certificate.issue code=tokenNameMismatch ")
    assert ' reason="the token does not cover b.internal (it is bound to a.internal)" ' in line
    assert line.endswith(" client=127.0.0.1"), line
    line = served.wait_for("^refused action=certificate.issue code=badToken ")
    assert 'reason="malformed bootstrap token: DecodeError" client=127.0.0.1 unauthenticated=yes' in line
    line = served.wait_for("^refused action=acme.new-account code=malformed ")
    assert "client=127.0.0.1 unauthenticated=yes" in line
    # six garbage tokens, one line per worker at most (the rest wait for the next line's suppressed=N)
    assert 1 <= sum(m.startswith("refused action=certificate.issue code=badToken ") for m in served.messages()) <= 2

    log = served.stderr()
    assert token not in log and admin not in log and "not-a-token" not in log
    for secret in (out / "tls.key", served.home / "ca/intermediate.key", served.home / "server/tls.key"):
        body = "".join(secret.read_text().splitlines()[1:-1])
        assert body[:40] not in log, secret
    assert "PRIVATE KEY" not in log and "CERTIFICATE REQUEST" not in log and "eyJ" not in log


@pytest.mark.slow
def test_serve_init_says_first_steps_once_and_keeps_listen_out_of_the_config(served: Serve) -> None:
    first = served.stderr()
    home = served.home
    assert f"Created a CA in {home} (root SHA256 " in first
    assert f"  admin token:   {home / 'admin.token'}  (for revoke and list; keep it secret)" in first
    assert f"trustyard issue orders.internal --token \"$TOKEN\" --ca-url {served.url} --root {home}/ca/root.crt" in first
    assert (f"trustyard CA serving on {served.url} (--listen: this run only; trustyard.toml has 127.0.0.1:8443) "
            "with 2 worker(s)") in first
    config = (home / "trustyard.toml").read_bytes()
    assert b'listen = "127.0.0.1:8443"' in config and str(served.port).encode() not in config

    again = Serve(home, "--init", "--insecure-no-password")  # the same command, later: the CA exists
    again.stop()
    said = [line for line in again.stderr().splitlines() if not re.match(r"^\d{4}-\d\d-\d\dT", line)]
    assert said == [f"trustyard CA serving the existing CA in {home} on {again.url} (--listen: this run only; "
                    "trustyard.toml has 127.0.0.1:8443) with 1 worker(s)"], again.stderr()
    assert (home / "trustyard.toml").read_bytes() == config  # --listen did not go into the configuration


@pytest.mark.slow
def test_audit_is_a_table_that_says_why_a_request_was_refused(served: Serve, tmp_path: Path) -> None:
    assert _mismatched_sign(served).status_code == 403
    with httpx.Client(base_url=served.url, verify=str_ctx(served.home / "ca/root.crt")) as client:
        client.post("/v1/sign", json={"csr": "x", "token": "not-a-token"})
    result = run("audit", "--home", str(served.home))
    assert result.returncode == 0, result.stderr
    entries, counted = result.stdout.rstrip("\n").split("\n\n")
    header, *rows = entries.splitlines()
    assert header.split() == ["SEQ", "TIME", "AGE", "OUTCOME", "ACTION", "TARGET", "ACTOR", "DETAIL"]
    columns = [header.index(name) for name in ("TIME", "AGE", "OUTCOME", "ACTION", "TARGET", "ACTOR", "DETAIL")]
    for row in rows:  # aligned: every cell starts under its header
        assert all(row[c - 2:c] == "  " and row[c] != " " for c in columns), row
    denied = [r for r in rows if "request.deny" in r]
    assert denied and "tokenNameMismatch: the token does not cover b.internal (it is bound to a.internal)" in denied[-1]
    assert re.search(r"  \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ  \d+s +denied ", denied[-1])  # TIME, then AGE in seconds
    title, head, *aggregated = counted.splitlines()
    assert title == "Refused before authenticating (counted per hour, source and reason):"
    assert head.split() == ["INTERVAL", "SOURCE", "COUNT", "ACTION", "REASON", "LAST"]
    assert any(r.split()[1:2] == ["127.0.0.1"] and r.split()[3:5] == ["certificate.issue", "badToken"]
               for r in aggregated), aggregated

    empty = tmp_path / "empty"
    assert run("init", "--home", str(empty), "--insecure-no-password").returncode == 0
    assert run("audit", "--home", str(empty)).stdout == "No audit entries found.\n"


# -- the log lines themselves, in-process -----------------------------------------------------------

def _refusal(source: str, code: str = "badToken") -> AuditEvent:
    return AuditEvent(actor=source, action="request.deny", target="certificate.issue", outcome="counted",
                      detail={"code": code, "reason": "the bootstrap token has expired"})


def test_refusal_lines_are_rate_limited_per_source_and_code(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    oplog = OperationsLog(interval=60, clock=lambda: now[0], max_sources=3)
    caplog.set_level(logging.INFO, logger="trustyard.ca")
    for _ in range(100):
        oplog.record(_refusal("192.0.2.1"))
    oplog.record(_refusal("192.0.2.1", code="tokenExpired"))
    oplog.record(_refusal("2001:db8::1"))
    oplog.record(_refusal("2001:db8::2"))  # the same /64: the same source
    assert len(caplog.messages) == 3
    now[0] = 61
    oplog.record(_refusal("192.0.2.1"))
    assert caplog.messages[-1].endswith("client=192.0.2.1 unauthenticated=yes suppressed=99")
    # a flood from ever new sources shares one budget once the table is full
    now[0] = 62
    for i in range(50):
        oplog.record(_refusal(f"198.51.100.{i}"))
    # the two stale entries make room for two new sources; the 48 others share one line
    assert len(caplog.messages) == 4 + 2 + 1, caplog.messages
    assert caplog.messages[-1].endswith("client=198.51.100.2 unauthenticated=yes sources=many")


def test_a_client_chosen_text_stays_inside_its_field() -> None:
    text = logfmt(code="badToken", reason='x" client=10.0.0.1\nINFO trustyard.ca: issued serial=1', client="::1")
    assert "\n" not in text
    assert text == ('code=badToken reason="x\\" client=10.0.0.1\\nINFO trustyard.ca: issued serial=1" '
                    "client=::1")


def test_the_log_hears_of_an_event_once_it_is_committed(tmp_path: Path) -> None:
    """A line is written only for what the database kept: not before COMMIT, never for a rollback."""
    from trustyard.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'ledger.db'}")
    heard: list[str] = []
    store.observers.append(lambda event: heard.append(event.action))
    store.audit(AuditEvent(actor="a", action="kept", target="t"))
    with pytest.raises(RuntimeError), store.unit():
        store.audit(AuditEvent(actor="a", action="rolled-back", target="t"))
        raise RuntimeError
    with store.unit():
        # one step of the unit, undone by its SAVEPOINT
        with pytest.raises(RuntimeError), store.transaction() as conn:
            store.append_audit(conn, AuditEvent(actor="a", action="step-undone", target="t"))
            raise RuntimeError
        store.audit(AuditEvent(actor="a", action="in-unit", target="t"))
        assert heard == ["kept"]  # not before the unit commits
    assert heard == ["kept", "in-unit"]
    store.close()
