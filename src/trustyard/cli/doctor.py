"""``trustyard doctor`` and ``trustyard explain``: name the failing TLS layer."""

from __future__ import annotations

import sys

import click

from ..clientconfig import load_environments
from ..diagnose.doctor import diagnose, render_text
from ..diagnose.explain import explain as explain_text
from ..errors import ExitCode
from ..units import parse_duration
from .output import DURATION, emit, environments_option, json_option


@click.command(context_settings={"max_content_width": 100})
@click.argument("target")
@click.option("--ca", "ca_files", multiple=True, type=click.Path(exists=True, dir_okay=False), metavar="BUNDLE",
              help="Trust bundle the client uses (repeatable) [default: the system bundle].")
@click.option("--name", default=None, help="Name the client expects in the certificate [default: TARGET's host].")
@click.option("--cert", "cert_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Client certificate (PEM, leaf then intermediates) for mTLS.")
@click.option("--key", "key_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Client private key (PEM) for --cert.")
@click.option("--timeout", type=DURATION, default="5s", show_default=True, help="Connect and handshake timeout.")
@environments_option
@json_option
def doctor(target: str, ca_files: tuple[str, ...], name: str | None, cert_file: str | None, key_file: str | None,
           timeout: str, environments_file: str | None, as_json: bool) -> int:
    """Connect to TARGET (HOST:PORT or https://HOST[:PORT]) and name the first failing layer.

    \b
    Layers and codes, in the order a client meets them:
      network      refused, timeout, dns
      protocol     not_tls, no_shared_protocol, handshake_failure
      client_auth  client_cert_required, client_cert_rejected
      trust        self_signed_leaf, unknown_issuer, missing_intermediate, root_in_chain_untrusted,
                   wrong_environment (the chain leads to another environment's root: --environments)
      identity     hostname_mismatch, ip_not_in_san, cn_only, wildcard_mismatch
      validity     expired, not_yet_valid, clock_skew

    The chain the server actually sends is shown even when verification fails.

    \b
    Exit status: 0 a client configured like this one would succeed, 1 it would fail,
    2 usage error.
    """
    if key_file and not cert_file:
        raise click.UsageError("--key needs --cert")
    try:
        seconds = parse_duration(timeout).total_seconds()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--timeout") from None
    verdict = diagnose(target, ca_files=ca_files, name=name, cert_file=cert_file, key_file=key_file,
                       timeout=seconds, environments=load_environments(environments_file) or None)
    emit(as_json, verdict.to_json(), lambda: render_text(verdict))
    return ExitCode.OK if verdict.ok else ExitCode.FAILED


@click.command(context_settings={"max_content_width": 100})
@click.argument("text")
@json_option
def explain(text: str, as_json: bool) -> int:
    """Map a TLS error message or log excerpt (TEXT, or - for stdin) to its layer and cause.

    Knows curl, OpenSSL 1.1.1 and 3.x, Python (ssl, requests, urllib3, httpx), Go, Java,
    Node.js, rustls/reqwest and gRPC messages; the layers and codes are those of
    `trustyard doctor`.

    \b
    Names, addresses and bundles the message mentions are filled into the answer, which
    ends with the `trustyard doctor HOST:PORT` command that confirms it against the
    endpoint (<host>, <port> where the message does not say).

    \b
    Exit status: 0 explained, 4 unknown text (layer "unknown").
    """
    if text == "-":
        text = sys.stdin.read()
    result = explain_text(text)

    def render() -> str:
        if result.code is None:
            return f"unknown: {result.explanation}\n  probe: {result.confirm}"
        lines = [f"layer: {result.layer}   code: {result.code}   client: {result.client or 'unknown'}",
                 f"  matched: {result.matched}", f"  {result.explanation}"]
        if result.also:
            lines.append(f"  the same text may also mean: {', '.join(result.also)}")
        lines += [f"  inspect: {i}" for i in result.inspect]
        if result.fix:
            lines.append(f"  fix: {result.fix}")
        lines.append(f"  confirm: {result.confirm}")
        return "\n".join(lines)

    emit(as_json, result.to_json(), render)
    return ExitCode.OK if result.code is not None else ExitCode.UNKNOWN
