"""The ``trustyard`` command. Subcommands load lazily so ``trustyard --help`` stays fast.

This package is a composition root: it may build stores, signers and servers; nothing
else imports it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

import click

from .. import __version__
from ..errors import exit_table

# name -> (module, attribute, one-line help). The help is here so --help imports nothing.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "init": ("trustyard.cli.ca_cmds", "init",
             "Create a CA (root, intermediate, server cert, provisioner) in the home."),
    "serve": ("trustyard.cli.ca_cmds", "serve", "Run the CA's HTTPS API."),
    "token": ("trustyard.cli.ca_cmds", "token", "Mint a one-time bootstrap token bound to names."),
    "audit": ("trustyard.cli.ca_cmds", "audit", "List the audit log, or verify its hash chain."),
    "rotate": ("trustyard.cli.rotate_cmds", "rotate", "Rotate the intermediate or root, one audited state at a time."),
    "emergency": ("trustyard.cli.emergency_cmd", "emergency",
                  "Replace certificates now: new keys, renew-now to agents, old ones revoked."),
    "db": ("trustyard.cli.db", "db", "Database schema: `db upgrade` migrates it to this version's."),
    "roots": ("trustyard.cli.client_cmds", "roots",
              "Fetch the trust bundle pinned by fingerprint; --save sets the client up."),
    "issue": ("trustyard.cli.client_cmds", "issue", "Get a certificate: key made locally, CSR signed by the CA."),
    "renew": ("trustyard.cli.client_cmds", "renew", "Renew a certificate, authenticated by itself."),
    "revoke": ("trustyard.cli.client_cmds", "revoke", "Revoke a certificate (administrator or key holder)."),
    "list": ("trustyard.cli.client_cmds", "list_", "List issued certificates (administrator)."),
    "fleet": ("trustyard.cli.fleet_cmd", "fleet", "List the relying parties that check in, and which are stale."),
    "inspect": ("trustyard.cli.inspect_cmd", "inspect",
                "Show what a certificate, keystore, Secret, key or endpoint holds."),
    "scan": ("trustyard.cli.scan", "scan", "Inventory certificates and keys in files, keystores and endpoints."),
    "doctor": ("trustyard.cli.doctor", "doctor", "Connect to a TLS endpoint and name the failing layer."),
    "explain": ("trustyard.cli.doctor", "explain", "Map a TLS error message to its layer and cause."),
    "check": ("trustyard.cli.check", "check", "Startup validation of a certificate, key and trust bundle."),
    "agent": ("trustyard.cli.agent", "agent", "Keep certificates renewed, written and reloaded."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, (module, _, _) in COMMANDS.items() if _available(module)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None or not _available(entry[0]):
            return None
        from .output import with_duration_grammar

        return with_duration_grammar(getattr(importlib.import_module(entry[0]), entry[1]))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog=f"\b\nExit statuses (each command's help says which it uses):\n{exit_table()}")
@click.version_option(__version__, prog_name="trustyard")
def cli() -> None:
    """trustyard: an internal PKI for microservices.

    One trust anchor, short-lived certificates issued and renewed automatically.
    The CA home is --home DIR, else $TRUSTYARD_HOME, else ~/.trustyard.

    \b
    Start:   trustyard init && trustyard serve
    Token:   trustyard token orders.internal
    Issue:   trustyard issue orders.internal --token T --ca-url URL --root root.crt
    """


def main(argv: list[str] | None = None) -> Any:
    from .output import run

    return run(cli, argv if argv is not None else sys.argv[1:])
