"""contrib/prometheus/trustyard-rules.yml: valid for Prometheus, each alert fires and stays quiet
when it should (promtool's unit tests), and every metric it reads from an agent or the CA is
one they really export."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import yaml

from trustyard.testing import free_port, need

from .agent.helpers import AgentProcess, agent_args, mint, serve, short_ttl_home, wait_for
from .support import Server

RULES_DIR = Path(__file__).resolve().parent.parent / "contrib" / "prometheus"
RULES = RULES_DIR / "trustyard-rules.yml"
RULE_TESTS = RULES_DIR / "trustyard-rules.test.yml"
AGENT_DIR = Path(__file__).parent / "agent"

# Exported by work that is not in this tree yet (the fleet table, CA rotations): their rules are
# unit-tested on synthetic series only.
NOT_YET_EXPORTED = {"trustyard_fleet_parties", "trustyard_fleet_last_checkin_timestamp_seconds",
                    "trustyard_rotation_state_deadline_timestamp_seconds"}


def rule_metric_names() -> set[str]:
    doc = yaml.safe_load(RULES.read_text())
    exprs = [rule["expr"] for group in doc["groups"] for rule in group["rules"]]
    return {name for expr in exprs for name in re.findall(r"\b((?:x509|trustyard)_[a-zA-Z0-9_]+)\b", expr)}


def exported(text: str) -> dict[str, list[str]]:
    """metric name -> its sample lines, from the text exposition format."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            found.setdefault(re.split(r"[{ ]", line, maxsplit=1)[0], []).append(line)
    return found


def test_promtool_accepts_the_rules() -> None:
    promtool = need("promtool", package="prometheus")
    done = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 8 rules found" in done.stdout


def test_each_alert_fires_and_stays_quiet_as_promtool_unit_tests_expect() -> None:
    promtool = need("promtool", package="prometheus")
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    alerts = {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}
    firing = {case["alertname"] for t in tests for case in t["alert_rule_test"] if case["exp_alerts"]}
    quiet = {case["alertname"] for t in tests for case in t["alert_rule_test"] if not case["exp_alerts"]}
    assert firing == alerts and quiet == alerts  # every alert is shown firing and not firing
    done = subprocess.run([promtool, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                          timeout=120, cwd=RULES_DIR)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_fail_when_a_threshold_moves(tmp_path: Path) -> None:
    """The unit tests pin the lifetime fractions: 75% moved to 90% makes them fail."""
    promtool = need("promtool", package="prometheus")
    (tmp_path / RULES.name).write_text(RULES.read_text().replace("> 0.75", "> 0.90"))
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    done = subprocess.run([promtool, "test", "rules", RULE_TESTS.name], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode != 0 and "TrustyardCertificateNotRenewed" in done.stdout + done.stderr


def test_every_metric_the_rules_read_is_exported_by_a_real_agent_or_ca(tmp_path: Path) -> None:
    names = rule_metric_names()
    assert {"x509_cert_not_after", "x509_cert_not_before", "trustyard_agent_served_matches_issued",
            "trustyard_agent_failures_total", "trustyard_agent_consecutive_failures"} <= names
    home = short_ttl_home(tmp_path / "ca")
    ca: Server = serve(home)
    try:
        with ca.client() as c:
            ca_metrics = exported(c.get("/metrics").text)
        token = tmp_path / "token"
        token.write_text(mint(ca.home, "metrics.internal", "metrics.internal", "127.0.0.1"))
        out, pid_file, port, mport = tmp_path / "certs", tmp_path / "server.pid", free_port(), free_port()
        once = subprocess.run([sys.executable, "-m", "trustyard", "agent",
                               *agent_args(ca, out, "metrics.internal", token), "--once"],
                              capture_output=True, text=True, timeout=60)
        assert once.returncode == 0, once.stderr
        service = subprocess.Popen([sys.executable, str(AGENT_DIR / "tls_server.py"), str(out), str(port),
                                    str(pid_file)])
        try:
            wait_for(pid_file.exists, what="the TLS server")
            agent = AgentProcess(agent_args(ca, out, "metrics.internal", token, "--renew-at", "40%",
                                            "--reload-signal", "HUP", "--pid-file", str(pid_file),
                                            "--verify-endpoint", f"127.0.0.1:{port}",
                                            "--metrics-listen", f"127.0.0.1:{mport}"), tmp_path / "agent.log")
            try:
                def scraped() -> dict[str, list[str]] | None:
                    try:
                        found = exported(httpx.get(f"http://127.0.0.1:{mport}/metrics", timeout=5).text)
                    except httpx.HTTPError:
                        return None
                    return found if "trustyard_agent_served_matches_issued" in found else None
                agent_metrics = wait_for(scraped, timeout=45, what="a verified renewal")
            finally:
                agent.stop()
        finally:
            service.terminate()
            service.wait(10)
    finally:
        ca.stop()
    missing = {n for n in names - NOT_YET_EXPORTED if n not in agent_metrics and n not in ca_metrics}
    assert not missing, f"the rules read metrics nobody exports: {sorted(missing)}"
    # The CA's own certificates carry the role the CA rules select; the agent's carry the file.
    roles = {re.search(r'role="(\w+)"', line).group(1) for line in ca_metrics["x509_cert_not_after"]}  # type: ignore[union-attr]
    assert roles == {"root", "intermediate"}
    leaf_line = agent_metrics["x509_cert_not_after"][0]
    assert 'subject_CN="metrics.internal"' in leaf_line and f'filepath="{out / "tls.crt"}"' in leaf_line
    assert "role=" not in leaf_line
    assert agent_metrics["trustyard_agent_served_matches_issued"][0].endswith(" 1")
