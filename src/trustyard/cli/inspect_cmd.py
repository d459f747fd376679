"""``trustyard inspect``: what a certificate file or a live endpoint actually holds."""

from __future__ import annotations

import select
import socket
import time
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
    from OpenSSL import SSL

    host, _, port_text = target.rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        raise BadRequest(f"{target!r} is neither a file nor HOST:PORT") from None
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_verify(SSL.VERIFY_NONE, lambda *_: True)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise BadRequest(f"cannot connect to {target}: {exc}") from None
    try:
        conn = SSL.Connection(context, sock)
        if not host.replace(".", "").isdigit() and ":" not in host:
            conn.set_tlsext_host_name(host.encode())
        conn.set_connect_state()
        deadline = time.monotonic() + timeout
        while True:  # pyOpenSSL on a socket with a timeout is non-blocking: wait for readiness
            try:
                conn.do_handshake()
                break
            except (SSL.WantReadError, SSL.WantWriteError):
                if not select.select([sock], [], [], max(deadline - time.monotonic(), 0))[0]:
                    raise BadRequest(f"TLS handshake with {target} timed out") from None
        chain = conn.get_peer_cert_chain(as_cryptography=True) or []
        conn.shutdown()
    except SSL.Error as exc:
        raise BadRequest(f"TLS handshake with {target} failed: {exc}") from None
    finally:
        sock.close()
    return list(chain)


@click.command()
@click.argument("target")
@json_option
def inspect(target: str, as_json: bool) -> None:
    """Show subject, issuer, SANs, serial, validity and time left, key type, fingerprints and chain
    order of TARGET: a certificate file (PEM bundle or DER) or a live HOST:PORT."""
    path = Path(target)
    certs = _load_file(path) if path.exists() else _fetch_chain(target)
    summaries = [summarize(c) for c in certs]
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
