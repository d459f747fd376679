"""The demo estate: services with self-signed certificates and clients that trust them the
usual wrong ways, written into one directory, with the commands that run and migrate it.

``build(root)`` writes, for each service, ``services/NAME/tls.crt`` and ``tls.key`` (a
self-signed certificate for ``NAME.internal``) and, for each client, ``clients/NAME/client.py``
(a module with ``fetch()``) beside its copy of the service's certificate: a PEM bundle for
curl's ``--cacert`` and for requests, a PKCS#12 truststore, none at all for the client with
``verify=False``. ``k8s/`` holds a Secret manifest with another copy. ``bin/`` holds the Python
HTTPS service (reloads on SIGHUP) and the loop running each client every 200 ms into
``logs/NAME.log``. ``estate.json`` records what was built, so a harness (the demo's printed
commands, or the end-to-end test, which adds nginx, Node.js and Java pieces) can run it.
"""

from __future__ import annotations

import base64
import json
import shlex
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from ..files import write_atomic, write_private
from ..x509.keys import private_key_pem
from ..x509.selfsigned import self_signed_certificate
from ..x509.truststore import PUBLIC_PASSWORD, render_p12
from . import scripts

DOMAIN = "internal"


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    runtime: str = "python"  # how it is run: the demo knows "python"; the test adds "nginx", "node"

    @property
    def host(self) -> str:
        return f"{self.name}.{DOMAIN}"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class Client:
    name: str
    service: str  # the Service.name it requests
    kind: str  # curl, requests, p12, insecure (demo); the test adds java
    trust: str | None = None  # its copy of the service's certificate, relative to the estate root


@dataclass
class Estate:
    root: Path
    services: list[Service] = field(default_factory=list)
    clients: list[Client] = field(default_factory=list)
    manifests: list[str] = field(default_factory=list)

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    def path(self, relative: str) -> Path:
        return self.root / relative

    def cert_dir(self, service: str) -> Path:
        return self.root / "services" / service

    def client_dir(self, client: str) -> Path:
        return self.root / "clients" / client

    def log(self, client: str) -> Path:
        return self.root / "logs" / f"{client}.log"

    def pid_file(self, service: str) -> Path:
        return self.root / "run" / f"{service}.pid"

    def save(self) -> None:
        doc = {"services": [asdict(s) for s in self.services], "clients": [asdict(c) for c in self.clients],
               "manifests": self.manifests}
        write_atomic(self.root / "estate.json", json.dumps(doc, indent=2).encode() + b"\n")


DEMO_PORTS = (8441, 8442)


def demo_services(ports: Sequence[int] = DEMO_PORTS) -> list[Service]:
    billing, ledger = ports
    return [Service("billing", billing), Service("ledger", ledger)]


# Which client trusts which service how: every kind of copy the demo knows.
DEMO_CLIENTS = (("reports", "billing", "requests"), ("ledger-poll", "ledger", "curl"),
                ("audit", "ledger", "p12"), ("dashboard", "billing", "insecure"))
SECRET_OF = "billing"  # the service whose certificate the Secret manifest copies


def build(root: Path, services: Sequence[Service] | None = None,
          clients: Sequence[tuple[str, str, str]] = DEMO_CLIENTS, secret_of: str | None = SECRET_OF) -> Estate:
    """Write the estate into ``root`` (created; it must be empty or absent) and return it."""
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    estate = Estate(root, list(services if services is not None else demo_services()))
    for sub in ("bin", "logs", "run", "k8s"):
        (root / sub).mkdir()
    write_atomic(root / "bin" / "https_service.py", scripts.SERVICE.encode())
    write_atomic(root / "bin" / "client_loop.py", scripts.LOOP.encode())
    pems: dict[str, bytes] = {}
    for service in estate.services:
        cert, key = self_signed_certificate([service.host], datetime.now(UTC).replace(microsecond=0))
        directory = estate.cert_dir(service.name)
        directory.mkdir(parents=True)
        pems[service.name] = cert.public_bytes(Encoding.PEM)
        write_atomic(directory / "tls.crt", pems[service.name])
        write_private(directory / "tls.key", private_key_pem(key))
    for name, of, kind in clients:
        estate.clients.append(write_client(estate, name, of, kind, pems[of]))
    if secret_of is not None:
        manifest = f"k8s/{secret_of}-ca-secret.yaml"
        secret = scripts.SECRET.format(name=f"{secret_of}-ca", data=base64.b64encode(pems[secret_of]).decode())
        write_atomic(root / manifest, secret.encode())
        estate.manifests.append(manifest)
    estate.save()
    return estate


TEMPLATES = {"curl": scripts.CURL_CLIENT, "requests": scripts.REQUESTS_CLIENT, "p12": scripts.P12_CLIENT,
             "insecure": scripts.INSECURE_CLIENT}


def write_client(estate: Estate, name: str, of: str, kind: str, cert_pem: bytes) -> Client:
    """clients/NAME/client.py of ``kind`` for service ``of``, with its copy of ``cert_pem``."""
    service = estate.service(of)
    directory = estate.client_dir(name)
    directory.mkdir(parents=True)
    trust: str | None = None
    if kind in ("curl", "requests"):
        trust = f"clients/{name}/ca-bundle.pem"
        write_atomic(estate.path(trust), cert_pem)
    elif kind == "p12":
        from cryptography import x509

        trust = f"clients/{name}/truststore.p12"
        write_atomic(estate.path(trust), render_p12([x509.load_pem_x509_certificate(cert_pem)], PUBLIC_PASSWORD))
    if kind in TEMPLATES:
        text = TEMPLATES[kind].format(service=service.name, host=service.host, port=service.port)
        write_atomic(directory / "client.py", text.encode())
    return Client(name, of, kind, trust)


# -- the commands a person runs --------------------------------------------------------------

def start_commands(estate: Estate) -> list[str]:
    """Shell lines (run from the estate root) that start its Python services (reloading their
    certificate when its files change) and client loops in the background, logging under logs/."""
    lines = []
    for s in estate.services:
        if s.runtime == "python":
            lines.append(f"python3 bin/https_service.py services/{s.name} {s.port} run/{s.name}.pid --watch "
                         f">logs/{s.name}-service.log 2>&1 &")
    python = [s for s in estate.services if s.runtime == "python"]
    if python:  # a service writes its pid file once it listens: no client starts before it
        ready = " && ".join(f"[ -s run/{s.name}.pid ]" for s in python)
        lines.append(f"until {ready}; do sleep 0.2; done")
    for c in estate.clients:
        if c.kind in TEMPLATES:
            lines.append(f"python3 bin/client_loop.py clients/{c.name}/client.py logs/{c.name}.log "
                         f"2>logs/{c.name}.err & echo $! >run/{c.name}.pid")
    return lines


def plan_command(estate: Estate) -> str:
    endpoints = " ".join(f"--endpoint {s.endpoint}" for s in estate.services)
    return f"trustyard migrate plan services clients k8s {endpoints} --save"


def insecure_fix(estate: Estate, client: Client) -> str:
    """The edit its owner makes to a verify=False client once its service has the CA's certificate."""
    return (f"sed -i \"s|verify=False|verify='$TRUSTYARD_HOME/ca/root.crt'|\" clients/{client.name}/client.py")


STATES = ("issued", "trusted", "switched", "verified", "retired", "done")


def step_commands() -> list[str]:
    """Moving one boundary ID from planned to done, one state per command."""
    return [f"trustyard migrate step ID --to {state}" for state in STATES]


def instructions(estate: Estate, shown: str | None = None) -> str:
    """What ``trustyard migrate demo`` prints: the commands, in order, from making the CA to done;
    ``shown`` is the directory as the person typed it (default: the estate's absolute path)."""
    root = shlex.quote(shown or str(estate.root))
    steps = step_commands()
    insecure = [c for c in estate.clients if c.kind == "insecure"]
    return "\n".join([
        f"Built a demo estate in {estate.root}:",
        *(f"  service {s.host} on {s.endpoint}: self-signed services/{s.name}/tls.crt" for s in estate.services),
        *(f"  client {c.name} -> {estate.service(c.service).host}: "
          + (f"trusts the copy {c.trust}" if c.trust else "verify=False") for c in estate.clients),
        *(f"  manifest {m}: a Secret holding another copy" for m in estate.manifests),
        "",
        "1. A CA, and the estate running (each client requests every 200 ms and logs it in logs/NAME.log):",
        f"    cd {root}",
        "    export TRUSTYARD_HOME=$PWD/ca",
        "    trustyard init --insecure-no-password --allow '*.internal'",
        *(f"    {line}" for line in start_commands(estate)),
        "",
        "2. What is wrong, and the plan (one boundary per self-signed certificate, with its ID):",
        "    trustyard scan services clients k8s",
        f"    {plan_command(estate)}",
        "    trustyard migrate status",
        "",
        "3. Each boundary ID, one state at a time (--dry-run shows what a step would do):",
        *(f"    {line}" for line in steps[:2]),
        f"    {steps[2]}    # replaces the service's files, waits until it serves them",
        "   (The demo's services reload by themselves. Yours: --reload-cmd 'nginx -s reload', or reload",
        "   it while the step waits, or reload it and run the step again.)",
        *(f"    {line}" for line in steps[3:]),
        *(line for c in insecure for line in (
            f"   The verified step of {estate.service(c.service).host} is refused, naming clients/{c.name}/client.py"
            " (verify=False).",
            "   Point it at the CA, as its owner would, and step again:",
            f"    {insecure_fix(estate, c)}",
            "    trustyard migrate step ID --to verified    # then retired and done as above",
        )),
        "   (trustyard migrate rollback ID goes back one state.)",
        "",
        "4. Not one request failed (every count 0), and the scan finds no self-signed certificate:",
        "    grep -c FAIL logs/*.log",
        "    trustyard scan services clients k8s",
        "   Stop it all:",
        "    kill $(cat run/*.pid)",
    ])
