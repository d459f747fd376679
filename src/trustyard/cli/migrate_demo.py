"""``trustyard migrate demo DIR``: a small estate of self-signed services and the clients that
trust them the usual wrong ways (``migrate/demo.py`` builds it), and the commands that run it
and migrate every boundary. Needs Python (and curl for one client); no Java, no Node.js."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import click

from ..errors import Conflict
from .output import emit, json_option


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--ports", default="8441,8442", show_default=True, metavar="BILLING,LEDGER",
              help="The loopback ports of the two services.")
@json_option
def demo(directory: Path, ports: str, as_json: bool) -> None:
    """Build a demo estate in DIRECTORY (new or empty) and print the commands that migrate it.

    Two Python HTTPS services with self-signed certificates (billing.internal, ledger.internal);
    clients trusting a copied PEM bundle (curl, requests), a PKCS#12 truststore, and one with
    verify=False; a Kubernetes Secret holding another copy. Each client runs in a loop that
    requests every 200 ms and logs each failure, so a migration shows it failed nothing.
    """
    from ..migrate import demo as estate_demo

    try:
        numbers = tuple(int(p) for p in ports.split(","))
    except ValueError:
        numbers = ()
    if len(numbers) != 2 or not all(0 < p < 65536 for p in numbers) or numbers[0] == numbers[1]:
        raise click.BadParameter(f"two different TCP ports, BILLING,LEDGER; got {ports!r}", param_hint="--ports")
    if directory.exists() and any(directory.iterdir()):
        raise Conflict(f"{directory} is not empty: the demo builds its estate in a new or empty directory")
    estate = estate_demo.build(directory.resolve(), estate_demo.demo_services(numbers))
    doc = {"directory": str(estate.root), "services": [asdict(s) for s in estate.services],
           "clients": [asdict(c) for c in estate.clients], "manifests": estate.manifests,
           "start": estate_demo.start_commands(estate), "plan": estate_demo.plan_command(estate)}
    emit(as_json, doc, lambda: estate_demo.instructions(estate, str(directory)))
