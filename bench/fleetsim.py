"""The fleet simulation the agent benchmarks share (bench/rotate, bench/fleet).

N of the agent's own ``Agent``/``ManagedCert`` in this one process, against a real ``trustyard
serve`` over HTTPS: bootstrap with one-time tokens over /v1/sign, check-in proofs signed by each
leaf's key, renewals with a new key over /v1/renew, directives obeyed by the agent's code. Only
the files are in memory (:class:`MemoryOutput`), and the service each agent feeds is simulated:
it serves the certificate the moment it is written, and the agent's own verify-endpoint probe
reads that serial (``endpoint_serial`` in the check-in report comes from the agent's code path).
A pool of threads ticks the agents off a heap of wake times (:class:`Fleet`).

Also here: the CA's processes (``cli``, ``start_serve``, ``wait_healthy``), the CPU of a process
tree from /proc, and the machine's description.
"""

from __future__ import annotations

import heapq
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from cryptography import x509  # noqa: E402

from trustyard.agent import actions  # noqa: E402
from trustyard.agent.runner import Agent, ManagedCert  # noqa: E402
from trustyard.agent.seams import Current, HTTPBackend  # noqa: E402
from trustyard.client import IssuedFiles, TrustBundle  # noqa: E402
from trustyard.x509.keys import PrivateKey  # noqa: E402

PASSWORD = "bench-password-not-a-secret"
TICK = os.sysconf("SC_CLK_TCK")
SERVICE = "127.0.0.1:1"  # the simulated service's address: never dialled, the probe reads memory


class MemoryOutput:
    """The agent's ``Output`` in memory (certificate, key, trust bundle) and the simulated
    service behind it, which serves each certificate from the moment it is written.
    ``installs``: (wall time written, notAfter, serial) of every certificate, in order."""

    def __init__(self, name: str) -> None:
        self.name, self.current = name, None  # type: Current | None
        self.bundle: TrustBundle | None = None
        self.leaf: x509.Certificate | None = None
        self.installs: list[tuple[float, datetime, int]] = []
        self.on_write: Callable[[MemoryOutput], None] | None = None

    def describe(self) -> str:
        return f"memory:{self.name}"

    def load(self) -> Current | None:
        return None

    def write(self, issued: IssuedFiles, key: PrivateKey) -> None:
        self.leaf = x509.load_pem_x509_certificate(issued.certificate_pem.encode())
        self.bundle = issued.bundle
        self.installs.append((time.time(), self.leaf.not_valid_after_utc, self.leaf.serial_number))
        if self.on_write is not None:
            self.on_write(self)

    def read_ca(self) -> str | None:
        return self.bundle.pem if self.bundle else None

    def has_bundle(self, bundle: TrustBundle) -> bool:
        return self.bundle is not None and self.bundle.sha256 == bundle.sha256

    def write_ca(self, bundle: TrustBundle | str) -> None:
        self.bundle = bundle if isinstance(bundle, TrustBundle) else TrustBundle(bundle)

    def bundle_version(self) -> tuple[int | None, str | None]:
        return (self.bundle.version, self.bundle.sha256) if self.bundle else (None, None)

    def instance_id(self) -> str:
        return "bench"

    def probe(self, host: str, port: int, server_name: str | None, cert_file: object = None,
              key_file: object = None, timeout: float = 5.0) -> actions.Probe:
        """The agent's verify-endpoint probe, answered by the simulated service."""
        return actions.Probe(self.leaf.serial_number if self.leaf is not None else None)


class Stats:
    """Requests by kind, every failure with its message, directives seen, tick lag. Benchmarks
    subclass it and override ``renewed``/``checked_in`` to watch what they measure."""

    def __init__(self, n: int) -> None:
        self.lock = threading.Lock()
        self.requests: dict[str, int] = {"sign": 0, "renew": 0, "roots": 0, "checkin": 0}
        self.failures: list[str] = []
        self.directives: dict[str, int] = {}
        self.lag: list[float] = []  # how late each tick ran, seconds

    def failed(self, what: str, exc: BaseException, kind: str = "", index: int = -1, started: float = 0.0) -> None:
        with self.lock:
            self.failures.append(f"{what}: {type(exc).__name__}: {getattr(exc, 'detail', exc)}")

    def done(self, kind: str, index: int, started: float, ended: float) -> None:
        """A request answered without error (``started``/``ended``: wall times)."""

    def renewed(self, index: int, leaf: x509.Certificate) -> None:
        """Agent ``index`` got ``leaf`` from /v1/renew."""

    def checked_in(self, index: int, version: int | None, answer: dict[str, Any]) -> None:
        """Agent ``index`` checked in reporting bundle ``version`` and got ``answer``."""


class CountingBackend:
    """One agent's view of the shared HTTPS backend: every request counted and timed, every
    failure kept."""

    def __init__(self, http: HTTPBackend, stats: Stats, index: int, output: MemoryOutput) -> None:
        self.http, self.stats, self.index, self.output = http, stats, index, output

    def _call(self, kind: str, fn: Any, *args: Any) -> Any:
        with self.stats.lock:
            self.stats.requests[kind] += 1
        started = time.time()
        try:
            answer = fn(*args)
        except Exception as exc:
            self.stats.failed(f"agent {self.index} {kind}", exc, kind, self.index, started)
            raise
        self.stats.done(kind, self.index, started, time.time())
        return answer

    def sign(self, csr_pem: bytes, token: str, ttl: timedelta | None) -> IssuedFiles:
        return self._call("sign", self.http.sign, csr_pem, token, ttl)

    def renew(self, csr_pem: bytes, proof: str) -> IssuedFiles:
        issued = self._call("renew", self.http.renew, csr_pem, proof)
        self.stats.renewed(self.index, x509.load_pem_x509_certificate(issued.certificate_pem.encode()))
        return issued

    def roots(self, etag: str | None) -> TrustBundle | None:
        return self._call("roots", self.http.roots, etag)

    def checkin(self, proof: str) -> dict[str, Any]:
        version = self.output.bundle_version()[0]  # what the proof just made reports
        answer = self._call("checkin", self.http.checkin, proof)
        with self.stats.lock:
            for d in answer.get("directives") or []:
                self.stats.directives[d.get("name")] = self.stats.directives.get(d.get("name"), 0) + 1
        self.stats.checked_in(self.index, version, answer)
        return answer


class Fleet:
    """N agents on a heap of wake times, ticked by a pool of threads; the first ticks spread
    evenly over ``ramp`` seconds."""

    def __init__(self, agents: list[Agent], stats: Stats, threads: int, ramp: float) -> None:
        self.agents, self.stats = agents, stats
        self.cond = threading.Condition()
        start = time.time()
        self.heap = [(start + ramp * i / len(agents), i) for i in range(len(agents))]
        self.stopping = False
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(threads)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        for t in self.threads:
            t.join(timeout=30)

    def _work(self) -> None:
        while True:
            with self.cond:
                while True:
                    if self.stopping:
                        return
                    now = time.time()
                    if self.heap and self.heap[0][0] <= now:
                        at, i = heapq.heappop(self.heap)
                        break
                    self.cond.wait(timeout=min(self.heap[0][0] - now, 0.5) if self.heap else 0.5)
            lag = now - at
            try:
                wake = self.agents[i].tick()
            except Exception as exc:  # the agent catches what it expects; anything else is a failure
                self.stats.failed(f"agent {i} tick", exc)
                wake = datetime.now(UTC) + timedelta(seconds=5)
            with self.cond:
                self.stats.lag.append(lag)
                if wake is None:
                    self.stats.failures.append(f"agent {i}: refused: {self.agents[i].managed[0].refusal}")
                else:
                    heapq.heappush(self.heap, (wake.timestamp(), i))
                    self.cond.notify()


def managed_cert(spec: Any, backend: CountingBackend, out: MemoryOutput, clock: Any, **kwargs: Any) -> ManagedCert:
    """The agent's ``ManagedCert`` whose verify-endpoint probe reads the simulated service."""
    return ManagedCert(spec, backend, out, clock, probe=out.probe, **kwargs)


# -- the CA and its processes -------------------------------------------------------------------

def env() -> dict[str, str]:
    return {**os.environ, "TRUSTYARD_PASSWORD": PASSWORD, "PYTHONPATH": str(ROOT / "src")}


def cli(home: Path, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "trustyard", *args, "--home", str(home)], env=env(),
                            capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"trustyard {' '.join(args)} exited {result.returncode}: {result.stderr}{result.stdout}")
    return result


def start_serve(home: Path, workers: int, log: Path) -> subprocess.Popen[bytes]:
    """``trustyard serve`` in its own session (so its workers can be signalled as a group),
    appending to ``log``."""
    with log.open("ab") as log_file:
        return subprocess.Popen([sys.executable, "-m", "trustyard", "serve", "--home", str(home), "--workers",
                                 str(workers), "--log-level", "warning"], stdout=log_file,
                                stderr=subprocess.STDOUT, env=env(), start_new_session=True)


def stop_serve(serve: subprocess.Popen[bytes], kill: bool = False) -> None:
    """SIGTERM to serve (it stops its workers), or SIGKILL to its whole process group (a
    crash); then wait for it."""
    try:
        if kill:
            os.killpg(serve.pid, signal.SIGKILL)
        else:
            serve.terminate()
    except ProcessLookupError:
        pass
    try:
        serve.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(serve.pid, signal.SIGKILL)
        serve.wait(timeout=30)


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and every descendant, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
        except OSError:
            pass
        todo.extend(children.get(p, []))
    return total


def wait_healthy(url: str, root: Path, process: subprocess.Popen[bytes], log: Path, timeout: float = 60,
                 step: float = 0.2) -> float:
    """Poll /healthz until it answers 200; the wall time it did."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serve exited {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/healthz", verify=str(root), timeout=2).status_code == 200:
                return time.time()
        except httpx.HTTPError:
            pass
        time.sleep(step)
    raise RuntimeError(f"serve did not become healthy:\n{log.read_text()[-3000:]}")


def until(predicate: Any, timeout: float, what: str, step: float = 0.5) -> float:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(step)
    return time.time()


def percentile(values: list[float], p: float) -> float | None:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * (len(ordered) - 1) + 0.5))] if ordered else None


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": str(os.cpu_count()), "python": platform.python_version(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg())}
