"""A CA outage with real agents and a real ``trustyard serve``: the server is stopped, the
agents' renewal points pass while it is down, and once it answers again every overdue agent
renews within seconds (its retries are at most a minute apart, and much closer with little
time left), instead of waiting out a share of its time left."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .helpers import AgentProcess, agent_args, mint, serial_of, serve, short_ttl_home, wait_for

AGENTS = 4
TTL = 40  # seconds; renewal at 25% (10 s +- 1 s)


@pytest.mark.slow
def test_every_overdue_agent_renews_within_seconds_of_the_ca_answering_again(tmp_path: Path) -> None:
    home = short_ttl_home(tmp_path / "ca")
    server = serve(home)
    agents, outs = [], []
    try:
        for i in range(AGENTS):
            name, out, token = f"a{i}.internal", tmp_path / f"out{i}", tmp_path / f"token{i}"
            token.write_text(mint(home, name))
            outs.append(out)
            agents.append(AgentProcess(agent_args(server, out, name, token, "--ttl", f"{TTL}s", "--renew-at", "25%",
                                                  "--roots-interval", "1h"), tmp_path / f"agent{i}.log"))
        firsts = wait_for(lambda: all(serial_of(o) for o in outs) and [serial_of(o) for o in outs], timeout=30,
                          what="every agent bootstrapped")
        bootstrapped = time.monotonic()
        server.stop()
        # every renewal point (at most 11 s after issuance) passes while the CA is down
        time.sleep(max(0.0, bootstrapped + 13 - time.monotonic()))
        assert [serial_of(o) for o in outs] == firsts
        server = serve(home, port=server.port)
        answered = time.monotonic()
        renewed_after = {}
        while len(renewed_after) < AGENTS and time.monotonic() < answered + 20:
            for i, out in enumerate(outs):
                if i not in renewed_after and serial_of(out) != firsts[i]:
                    renewed_after[i] = time.monotonic() - answered
            time.sleep(0.05)
        logs = "\n".join(a.text() for a in agents)
        assert len(renewed_after) == AGENTS, logs
        # The former after-outage wait (90-100% of the ~25 s left, short of 5% of the lifetime)
        # would have put these renewals 20 s or more after the CA's return.
        assert max(renewed_after.values()) < 8, (renewed_after, logs)
        assert "renewal failing since" in logs
    finally:
        for agent in agents:
            agent.stop()
        server.stop()
