"""The README's five-minute walk-through runs as written and says what it shows.

The ```sh blocks of the section are run in order, unchanged, by one bash in an empty
directory (HOME there too), with only the two ports the README reads from the environment
(``APP_PORT``, ``CA_PORT``) chosen free. A marker line between the blocks splits what they
print, and each step's output is checked against what the section says it shows, including
the lines of its sample output that do not change from run to run.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## Five minutes: from the self-signed mess to renewed certificates"
MARK = "@@walkthrough-step"

pytestmark = pytest.mark.slow  # a CA, two TLS servers and a dozen CLI runs: about 15 s


def section() -> str:
    text = (ROOT / "README.md").read_text()
    assert HEADING in text, "the walk-through section is missing"
    quickstart = text.index("## Quickstart")
    start = text.index(HEADING)
    assert quickstart < start and "\n## " not in text[quickstart + 3:start], "it comes right after the Quickstart"
    return text[start:].split("\n## ", 1)[0]


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", section(), re.S)


def samples() -> dict[int, str]:
    """The ```text block shown after the Nth ```sh block, by N."""
    found: dict[int, str] = {}
    step = -1
    for kind, body in re.findall(r"```(sh|text)\n(.*?)```", section(), re.S):
        if kind == "sh":
            step += 1
        else:
            found[step] = body
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Walk:
    dir: Path  # where the README's `mkdir tour && cd tour` ran
    steps: list[str]  # what each ```sh block printed (stdout and stderr)
    app: str
    ca: str

    def step(self, n: int) -> str:
        return self.steps[n]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walk]:
    sh = blocks("sh")
    assert len(sh) == 7, f"expected the six steps and the clean-up, found {len(sh)} sh blocks"
    script = "".join(f"echo {MARK} {n}\n{block}" for n, block in enumerate(sh)) + f"echo {MARK} end\n"
    base = tmp_path_factory.mktemp("walkthrough")
    app_port, ca_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TRUSTYARD_") and k not in ("XDG_CONFIG_HOME", "SSL_CERT_FILE", "SSL_CERT_DIR")}
    env.update(HOME=str(base), APP_PORT=str(app_port), CA_PORT=str(ca_port), TRUSTYARD_NO_PROGRESS="1")
    log = base / "walkthrough.out"
    with log.open("wb") as out:  # a file, not a pipe: the background servers must not hold our reader open
        process = subprocess.Popen(["bash", "-c", script], cwd=base, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            process.wait(timeout=120)
        finally:
            # whatever the README's own clean-up did not stop (it failed before, or a server lingers)
            for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
                deadline = time.monotonic() + grace
                if _group_alive(process.pid):
                    os.killpg(process.pid, sig)
                while _group_alive(process.pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
            process.wait(timeout=5)
    text = log.read_text(errors="replace")
    parts = re.split(rf"^{MARK} (\d+|end)\n", text, flags=re.M)
    steps = [parts[i + 1] for i in range(1, len(parts) - 2, 2)]
    assert parts[-2:] == ["end", ""] and len(steps) == len(sh), f"the walk-through did not run to its end:\n{text}"
    yield Walk(base / "tour", steps, f"127.0.0.1:{app_port}", f"127.0.0.1:{ca_port}")


def test_it_starts_from_the_openssl_mess_and_uses_only_its_own_home() -> None:
    first = blocks("sh")[0]
    assert ('openssl req -x509 -newkey rsa:2048 -nodes -days 1 -keyout key.pem -out cert.pem '
            '-subj "/CN=service-a.internal"') in first
    assert "export TRUSTYARD_HOME=$PWD/ca TRUSTYARD_CONFIG_DIR=$PWD/client" in first  # never the reader's ~/.trustyard
    assert "${APP_PORT:-4433}" in first and "${CA_PORT:-9443}" in first  # not the Quickstart CA's 8443


def test_nothing_prints_a_python_warning_or_traceback(walk: Walk) -> None:
    for n, out in enumerate(walk.steps):
        assert "Traceback" not in out and "Warning:" not in out, f"step {n}:\n{out}"
    assert "Traceback" not in (walk.dir / "ca.log").read_text()


def test_step1_makes_the_mess(walk: Walk) -> None:
    for copy in ("srv/service-a/cert.pem", "srv/worker/cert.pem", "srv/web/ca-bundle.pem"):
        assert (walk.dir / copy).read_bytes() == (walk.dir / "cert.pem").read_bytes()


def test_step2_scan_finds_it(walk: Walk) -> None:
    out = walk.step(1)
    for code in ("self_signed_leaf", "no_san", "shared_cert", "leaf_in_trust_store", "shared_key"):
        assert re.search(rf"^warning\s+{code}\b|^info\s+{code}\b", out, re.M), f"{code} missing:\n{out}"
    row = re.search(r"^([0-9a-f]{16})  CN=service-a\.internal  service ", out, re.M)
    assert row, out  # one row, a service certificate, not a root
    assert len(re.findall(r"^[0-9a-f]{16}  ", out, re.M)) == 1
    assert "    srv/web/ca-bundle.pem  (trust store)\n" in out
    assert "fix: trustyard token service-a.internal; trustyard issue service-a.internal --token TOKEN" in out
    summary = "1 distinct certificate in 3 locations, 1 private key in 2 locations, 5 findings (4 warning, 1 info)"
    assert summary in out
    assert summary in samples()[1]


def test_step3_doctor_names_the_failing_layer(walk: Walk) -> None:
    out = walk.step(2)
    trust = f"{walk.app}: FAIL  layer=trust  code=self_signed_leaf"
    identity = f"{walk.app}: FAIL  layer=identity  code=cn_only"
    assert trust in out and identity in out and out.index(trust) < out.index(identity), out
    sample = samples()[2]
    assert "127.0.0.1:4433: FAIL  layer=trust  code=self_signed_leaf" in sample
    assert "127.0.0.1:4433: FAIL  layer=identity  code=cn_only" in sample
    for line in ("  the certificate is self-signed and not in the trust bundle",
                 "  the certificate has no subject alternative names; clients ignore its CN service-a.internal"):
        assert line in out and line in sample


def test_step4_serve_token_issue_replace_it(walk: Walk) -> None:
    out = walk.step(3)
    assert re.search(r"^The root certificate has been saved in .*/tour/client/root\.crt ", out, re.M), out
    assert f"(ca_url https://{walk.ca})" in out
    assert "wrote     service-a/tls.crt (leaf + intermediate), service-a/tls.key (0600), service-a/ca.crt" in out
    for name in ("tls.crt", "tls.key", "ca.crt"):
        assert (walk.dir / "service-a" / name).is_file()
    assert stat.S_IMODE((walk.dir / "service-a/tls.key").stat().st_mode) == 0o600
    assert (walk.dir / "client/client.toml").is_file()
    assert "Created a CA in" in (walk.dir / "ca.log").read_text()
    sample = samples()[3]
    assert "wrote     service-a/tls.crt (leaf + intermediate), service-a/tls.key (0600), service-a/ca.crt" in sample


def test_step5_check_gates_the_service_on_the_new_certificate(walk: Walk) -> None:
    out = walk.step(4)
    assert "SANs:       service-a.internal" in out
    assert re.search(r"^ok   ledger:\s+issued, not revoked$", out, re.M), out
    assert "result: healthy" in out and "FAIL" not in out
    # the service came back on the new certificate, and a client that trusts only the root accepts it
    assert f"{walk.app}: OK" in out
    assert "OK: chain trusted by client/root.crt, service-a.internal matches, all certificates valid" in out
    assert "[1] subject=CN=trustyard Intermediate CA" in out and "[2]" not in out  # leaf + intermediate, once each
    sample = samples()[4]
    for line in ("result: healthy", "  OK: chain trusted by client/root.crt, service-a.internal matches, "
                 "all certificates valid"):
        assert line in sample


def test_step6_agent_keeps_it_renewed(walk: Walk) -> None:
    out = walk.step(5)
    assert re.search(r"^service-a\.internal: expires in 23h \d+m$", out, re.M), out
    assert "using the existing certificate in service-a (serial " in out  # takes over what issue wrote
    # its plan: when it renews and why (2/3 of a 24 h lifetime, +- 10% jitter of the interval)
    assert re.search(r"service-a\.internal: renewing at \S+Z \(in 1\dh \d+m\): 66% of the 1d lifetime, jitter ", out), out
    sample = samples()[5]
    assert "service-a.internal: expires in 23h 59m" in sample
    assert re.search(r"service-a\.internal: renewing at \S+Z \(in 1\dh \d+m\): 66% of the 1d lifetime, jitter ", sample)


def test_the_clean_up_stops_what_the_walk_through_started(walk: Walk) -> None:
    assert "kill $(cat service-a.pid ca.pid)" in blocks("sh")[6]
    assert walk.step(6) == ""  # both were still running, so kill had nothing to complain about
