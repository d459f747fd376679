"""The agent says its plan and stops on what retrying cannot fix. A real
``trustyard serve`` on loopback and the real agent process; the assertions read the log lines
a person reads."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w

from trustyard.units import format_time
from trustyard.x509.summary import serial_text

from ..support import Server
from .helpers import AgentProcess, agent_args, leaf, mint, serial_of, serve, wait_for

TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def _lines(text: str, needle: str) -> list[str]:
    return [ln for ln in text.splitlines() if needle in ln]


@pytest.mark.slow  # waits for a 20 s certificate's renewal
def test_plan_after_each_issue_and_renewal_reload_output_and_what_stays_in_place(tmp_path: Path, ca: Server) -> None:
    token = tmp_path / "token"
    token.write_text(mint(ca.home, "plan.internal"))
    out = tmp_path / "certs"
    reload_cmd = 'echo "reloading $TRUSTYARD_CERT_DIR"; echo "warning: old worker busy" >&2; echo done'
    agent = AgentProcess(agent_args(ca, out, "plan.internal", token, "--ttl", "20s", "--renew-at", "50%",
                                    "--reload-cmd", reload_cmd), tmp_path / "agent.log")
    try:
        first = wait_for(lambda: serial_of(out), what="the bootstrap")
        wait_for(lambda: serial_of(out) not in (None, first) and len(_lines(agent.text(), "renewing at")) >= 2,
                 timeout=45, what="a renewal and its plan")
    finally:
        code = agent.stop()
    log = agent.text()
    assert code == 0, log
    # after the issue and after the renewal: when, and why
    plans = _lines(log, "renewing at")
    assert len(plans) >= 2, log
    for line in plans:
        assert re.search(rf"plan\.internal: renewing at {TIME} \(in \d+s\): 50% of the 20s lifetime, "
                         r"jitter [+-]\d+s$", line), line
    issued = log.index("issued certificate serial")
    renewed = log.index("renewed certificate serial")
    assert issued < log.index("renewing at", issued) < renewed < log.index("renewing at", renewed)
    # the reload command: exit status and the tail of stdout and stderr, interleaved
    reloads = _lines(log, "reload: command")
    assert reloads and all(f"exited 0; output (last 3 of 3 lines): reloading {out} | warning: old worker busy | done"
                           in ln for ln in reloads), log
    # stopping says what is on disk, not how many certificates were managed
    on_disk = leaf(out)
    assert on_disk is not None
    stop = _lines(log, "stopping")
    assert len(stop) == 1, log
    assert re.search(rf"stopping \(asked to stop\): plan\.internal: serial {serial_text(on_disk.serial_number)} "
                     rf"in place in {re.escape(str(out))}, notAfter {format_time(on_disk.not_valid_after_utc)} "
                     r"\((expires in|EXPIRED)", stop[0]), stop[0]


def test_failing_reload_logs_exit_status_and_last_lines(tmp_path: Path, ca: Server) -> None:
    token = tmp_path / "token"
    token.write_text(mint(ca.home, "reload.internal"))
    out = tmp_path / "certs"
    cmd = "for i in 1 2 3 4 5 6 7; do echo line$i; done; echo 'nginx: [emerg] cannot load certificate' >&2; exit 7"
    done = subprocess.run([sys.executable, "-m", "trustyard", "agent",
                           *agent_args(ca, out, "reload.internal", token, "--reload-cmd", cmd), "--once"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert (f"reload command {cmd!r} exited 7; output (last 5 of 8 lines): line4 | line5 | line6 | line7 | "
            "nginx: [emerg] cannot load certificate") in done.stderr, done.stderr


def test_policy_refusal_stops_with_exit_2_and_the_policys_message(tmp_path: Path, ca: Server) -> None:
    """A lifetime below the provisioner's minimum (10s): one attempt, the rule and message, exit 2."""
    token = tmp_path / "token"
    token.write_text(mint(ca.home, "short.internal"))
    out = tmp_path / "certs"
    agent = AgentProcess(agent_args(ca, out, "short.internal", token, "--ttl", "5s"), tmp_path / "agent.log")
    try:
        code = agent.process.wait(30)
    finally:
        agent.stop()
    log = agent.text()
    assert code == 2, log
    refused = _lines(log, "refused by policy")
    assert len(refused) == 1, log  # no retry every few seconds
    assert ("short.internal: the CA refused by policy (rule ttl_bounds, value 5s): lifetime 5s is outside [10s, "
            in refused[0]), log
    assert "Retrying cannot fix this: give a --ttl" in refused[0]
    assert "retry in" not in log
    assert _lines(log, "stopping")[-1].endswith(f"short.internal: no certificate in place in {out}"), log
    # the same for a one-shot run
    once = subprocess.run([sys.executable, "-m", "trustyard", "agent",
                           *agent_args(ca, out, "short.internal", token, "--ttl", "5s"), "--once"],
                          capture_output=True, text=True, timeout=60)
    assert once.returncode == 2, once.stderr
    assert "rule ttl_bounds" in once.stderr


def test_a_name_the_policy_no_longer_allows_stops_with_exit_2(tmp_path: Path, short_home: Path) -> None:
    """The token was minted while the name was allowed; the CA's allow list changed since."""
    token = tmp_path / "token"
    token.write_text(mint(short_home, "legacy.internal"))
    path = short_home / "trustyard.toml"
    doc = tomllib.loads(path.read_text())
    for prov in doc["provisioners"]:
        prov["allow"] = ["*.prod.internal"]
    path.write_text(tomli_w.dumps(doc))
    server = serve(short_home)
    try:
        out = tmp_path / "certs"
        done = subprocess.run([sys.executable, "-m", "trustyard", "agent",
                               *agent_args(server, out, "legacy.internal", token)],
                              capture_output=True, text=True, timeout=60)
    finally:
        server.stop()
    assert done.returncode == 2, done.stderr
    assert "the CA refused by policy (rule names_allowed, value legacy.internal): 'legacy.internal' is not " \
           "allowed by provisioner 'default' (allowed: *.prod.internal)" in done.stderr, done.stderr
    assert "Retrying cannot fix this: request names the provisioner allows" in done.stderr
    assert len(_lines(done.stderr, "refused by policy")) == 1


def test_a_refused_token_is_reported_as_refused_with_the_reason(tmp_path: Path, ca: Server) -> None:
    used = tmp_path / "used-token"
    used.write_text(mint(ca.home, "once.internal"))
    first = subprocess.run([sys.executable, "-m", "trustyard", "agent",
                            *agent_args(ca, tmp_path / "first", "once.internal", used), "--once"],
                           capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    wrong = tmp_path / "wrong-token"
    wrong.write_text(mint(ca.home, "billing.internal"))
    replayed = AgentProcess(agent_args(ca, tmp_path / "a", "once.internal", used), tmp_path / "replayed.log")
    mismatched = AgentProcess(agent_args(ca, tmp_path / "b", "orders.internal", wrong), tmp_path / "wrong.log")
    try:
        for agent in (replayed, mismatched):  # the first refusal, and the retry that finds the same token
            wait_for(lambda a=agent: len(_lines(a.text(), "ERROR")) >= 2, timeout=30, what="two attempts")
    finally:
        replayed.stop()
        mismatched.stop()
    for agent, reason in ((replayed, "this token was already used: bootstrap tokens are single-use [tokenReplayed]"),
                          (mismatched, "the token does not cover orders.internal (it is bound to billing.internal) "
                                       "[tokenNameMismatch]")):
        log = agent.text()
        assert "no bootstrap token" not in log, log
        errors_ = _lines(log, "ERROR")
        for line in errors_[:2]:
            assert f"the CA refused the bootstrap token in {agent.log.parent}" in line, log
            assert reason in line, log
            assert "put a new one-time token there" in line
        assert _lines(log, "stopping")[-1].endswith("no certificate in place in " + str(agent.log.parent /
                                                    ("a" if agent is replayed else "b"))), log


def test_a_bad_request_stops_the_run_loop_after_one_attempt(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    """A 400 problem on renewal (the same request would be refused again): exit 2, no retry."""
    import logging
    from datetime import timedelta

    from trustyard import errors
    from trustyard.agent.config import build
    from trustyard.agent.runner import EXIT_REFUSED, Agent

    from .test_recovery import one_agent

    with one_agent(tmp_path, "bad.internal", seed=1) as (m, ca, _out, clock):
        m.start()
        m.step()
        assert m.current is not None and m.renew_point is not None

        def refuse(csr_pem: bytes, proof: str) -> None:
            ca.renewals += 1
            raise errors.BadRequest("the CSR's signature does not verify", code="badCSR")

        ca.renew = refuse  # type: ignore[method-assign]
        clock.advance(m.renew_point - clock.now() + timedelta(seconds=1))
        config = build({"ca_url": "https://ca.invalid", "root": str(tmp_path / "root.pem")}, (m.spec,))
        with caplog.at_level(logging.INFO, logger="trustyard.agent"):
            assert Agent(config, ca, [m], clock).run() == EXIT_REFUSED
    assert ca.renewals == 1
    messages = [r.getMessage() for r in caplog.records]
    assert ("bad.internal: the CA refused the request (400 badCSR): the CSR's signature does not verify. "
            "Retrying cannot fix this: fix the agent's settings or the CA's policy, then start the agent again"
            ) in messages, messages
    assert not any("retry in" in text for text in messages)
