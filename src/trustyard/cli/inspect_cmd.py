"""``trustyard inspect``: what a certificate file or a live endpoint actually holds."""

from __future__ import annotations

from pathlib import Path

import click
from cryptography import x509

from ..errors import BadRequest
from ..units import humanize
from ..x509.summary import chain_order, summarize
from .output import emit, json_option


def _load_file(path: Path) -> list[x509.Certificate]:
    data = path.read_bytes()
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise BadRequest(f"{path}: no certificate found ({exc})") from None


def _fetch_chain(target: str, timeout: float = 10.0) -> list[x509.Certificate]:
    """The chain the server actually sends (verification off: this is for looking, not trusting)."""
    from ..diagnose.probe import probe
    from ..inventory.endpoints import Endpoint

    if ":" not in target:
        raise BadRequest(f"{target}: no such file (an endpoint is written HOST:PORT)")
    try:
        endpoint = Endpoint.parse(target)
    except ValueError:
        raise BadRequest(f"{target!r} is neither a file nor HOST:PORT[/SNI]") from None
    result = probe(endpoint.host, endpoint.port, sni=endpoint.sni, timeout=timeout)
    if result.network_error:
        raise BadRequest(f"cannot connect to {target}: {result.network_error} ({result.network_detail})")
    if not result.chain:
        raise BadRequest(f"TLS handshake with {target} failed: {result.tls_error or 'no certificate served'}")
    return result.chain


@click.command()
@click.argument("target")
@json_option
def inspect(target: str, as_json: bool) -> None:
    """Show subject, issuer, SANs, serial, validity and time left, key type, fingerprints and chain
    order of TARGET: a certificate file (PEM bundle or DER) or a live HOST:PORT."""
    path = Path(target)
    certs = _load_file(path) if path.exists() else _fetch_chain(target)
    try:
        summaries = [summarize(c) for c in certs]
    except Exception as exc:  # parsed, but e.g. a key on a curve cryptography does not support
        raise BadRequest(f"{target}: cannot read a certificate: {type(exc).__name__}: {exc}") from None
    order = chain_order(certs)
    doc = {"target": target, "certificates": summaries, "chain_order": order}

    def text() -> str:
        out = []
        for i, s in enumerate(summaries):
            out += [f"[{i}] subject      {s['subject'] or '(empty)'}",
                    f"    issuer       {s['issuer']}",
                    f"    SANs         {', '.join(s['sans']) or '(none)'}",
                    f"    serial       {s['serial']}",
                    f"    valid        {s['not_before']} .. {s['not_after']}",
                    f"    time left    {_left(s['seconds_left'])}",
                    f"    key          {s['key_type']}{'  CA' if s['is_ca'] else ''}"
                    f"{'  self-signed' if s['self_signed'] else ''}",
                    f"    sha256       {s['fingerprint_sha256']}",
                    f"    spki sha256  {s['spki_sha256']}"]
        out += [f"chain: {note}" for note in order if note != "ok"]
        return "\n".join(out)

    emit(as_json, doc, text)


def _left(seconds: int) -> str:
    from datetime import timedelta

    text = humanize(timedelta(seconds=seconds))
    return f"EXPIRED {text.lstrip('-')} ago" if seconds < 0 else text
