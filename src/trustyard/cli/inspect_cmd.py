"""``trustyard inspect``: what a certificate file, keystore, Secret, key or live endpoint holds.

Files are read by the scanner's readers (``inventory.sources``) and judged by its rules
(``inventory.findings``), so inspect reads what scan reads and warns about what scan flags.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from cryptography import x509

from ..errors import BadRequest, Code
from ..inventory.model import CertItem, Inventory
from ..units import humanize
from ..x509.extensions import extension_lines, extension_summary
from ..x509.summary import chain_order, pem_bundle, summarize
from .output import emit, json_option


class LocalFileProblem(BadRequest):
    """A problem with a local file: exit 1, and no HTTP-style code in the line a person reads."""

    code = Code.LOCAL_FILE
    code_shown = False


def _local(detail: str) -> BadRequest:
    return LocalFileProblem(detail)


def _read_target(target: str, password: str | None) -> Inventory | None:
    """``FILE`` or ``FILE#namespace/name`` (one Secret or ConfigMap of a manifest) through the
    scanner's readers; None when TARGET is not a file (then it is an endpoint)."""
    from ..inventory.sources import DEFAULT_PASSWORDS, ReadOptions, read_file

    path, selector = Path(target), ""
    if not path.exists() and "#" in target:
        file, _, selector = target.partition("#")
        path = Path(file)
    if not path.exists():
        return None
    if path.is_dir():
        raise _local(f"{target} is a directory: give a file (or `trustyard scan {target}` for a whole tree)")
    passwords = ((password.encode(),) if password else ()) + DEFAULT_PASSWORDS
    inv = read_file(path, ReadOptions(passwords=passwords))
    if selector:
        groups = {c.group for c in inv.certificates} | {k.group for k in inv.keys}
        wanted = {g for g in groups if g.split("#", 1)[-1].split("/", 1)[-1] == selector}
        if not wanted:
            found = sorted({g.split("#", 1)[-1] for g in groups})
            raise _local(f"{path}: no Secret or ConfigMap {selector}"
                         + (f" (found: {', '.join(found)})" if found else ""))
        inv.certificates = [c for c in inv.certificates if c.group in wanted]
        inv.keys = [k for k in inv.keys if k.group in wanted]
    if not inv.certificates and not inv.keys:
        why = "; ".join(e.detail for e in inv.errors) or "no certificate or private key found"
        raise _local(f"{target}: {why}")
    return inv


def _fetch_chain(target: str, timeout: float = 10.0) -> list[x509.Certificate]:
    """The chain the server actually sends (verification off: this is for looking, not trusting)."""
    from ..diagnose.probe import probe
    from ..inventory.endpoints import Endpoint

    if ":" not in target:
        raise _local(f"{target}: no such file (an endpoint is written HOST:PORT)")
    try:
        endpoint = Endpoint.parse(target)
    except ValueError:
        raise _local(f"{target!r} is neither a file nor HOST:PORT[/SNI]") from None
    result = probe(endpoint.host, endpoint.port, sni=endpoint.sni, timeout=timeout)
    if result.network_error:
        raise BadRequest(f"cannot connect to {target}: {result.network_error} ({result.network_detail})")
    if not result.chain:
        raise BadRequest(f"TLS handshake with {target} failed: {result.tls_error or 'no certificate served'}")
    return result.chain


def _served(target: str) -> Inventory:
    chain = _fetch_chain(target)
    inv = Inventory()
    inv.certificates = [CertItem(c, target if len(chain) == 1 else f"{target}#{i}", target, served=True, position=i)
                        for i, c in enumerate(chain)]
    return inv


def _key_doc(key: Any, certs: list[CertItem]) -> dict[str, Any]:
    from ..x509.keys import describe_key

    matches = [c.location for c in certs if key.spki and c.spki == key.spki]
    kind = key.description or next((describe_key(c.cert.public_key()) for c in certs if c.spki == key.spki), "")
    return {**key.to_json(), "key_type": kind or None, "matches": matches}


def _key_text(doc: dict[str, Any], any_certs: bool) -> str:
    if doc["spki_sha256"] is None:
        return f"key {doc['location']}: encrypted, and no given password opens it (use --password)"
    match = (f"matches {', '.join(doc['matches'])}" if doc["matches"] else
             "matches none of the certificates given" if any_certs else "give its certificate too to match them")
    return f"key {doc['location']}: {doc['key_type'] or 'private key'}, SPKI sha256 {doc['spki_sha256']}, {match}"


@click.command()
@click.argument("targets", nargs=-1, required=True, metavar="TARGET...")
@click.option("--password", default=None, envvar="TRUSTYARD_STORE_PASSWORD",
              help="Password of a PKCS#12 or JKS store or an encrypted key (after none and 'changeit').")
@click.option("--format", "fmt", type=click.Choice(["text", "pem"]), default="text", show_default=True,
              help="pem: write the certificates (e.g. the chain HOST:PORT serves) as PEM to stdout.")
@json_option
def inspect(targets: tuple[str, ...], password: str | None, fmt: str, as_json: bool) -> None:
    """Show what each TARGET holds: subject, issuer, SANs, serial, validity and time left, key type,
    fingerprints, chain order, Basic Constraints, Key Usage, Extended Key Usage, Name Constraints,
    Subject/Authority Key Identifiers, and `warn:` lines for what `trustyard scan` would flag.

    \b
    TARGET is a certificate file (PEM bundle, DER, PKCS#7), a PKCS#12 or JKS store
    (--password), a Kubernetes manifest (FILE.yaml#namespace/name picks one Secret or
    ConfigMap), a private key (given with its certificate: says whether they match),
    or a live HOST:PORT[/SNI] (the chain it serves).
    """
    from ..inventory.findings import Rules, evaluate

    inv = Inventory()
    for target in targets:
        inv.extend(_read_target(target, password) or _served(target))
    if fmt == "pem":
        if not inv.certificates:
            raise _local("no certificate to write")
        click.echo(pem_bundle(c.cert for c in inv.certificates), nl=False)
        return
    now = datetime.now(UTC)
    try:
        summaries = [{"location": c.location, **summarize(c.cert, now), **extension_summary(c.cert)}
                     for c in inv.certificates]
    except Exception as exc:  # parsed, but e.g. a key on a curve cryptography does not support
        raise _local(f"{', '.join(targets)}: cannot read a certificate: {type(exc).__name__}: {exc}") from None
    groups: dict[str, list[CertItem]] = {}
    for c in inv.certificates:
        groups.setdefault(c.group, []).append(c)
    order = [note for items in groups.values()
             for note in chain_order([c.cert for c in sorted(items, key=lambda i: i.position)])]
    keys = [_key_doc(k, inv.certificates) for k in inv.keys]
    findings = evaluate(inv, Rules(now=now))
    doc = {"target": targets[0] if len(targets) == 1 else list(targets), "certificates": summaries,
           "chain_order": order, "keys": keys, "findings": [f.to_json() for f in findings],
           "errors": [e.to_json() for e in inv.errors]}

    def text() -> str:
        out = []
        for i, s in enumerate(summaries):
            out += [f"[{i}] {s['location']}",
                    f"    subject      {s['subject'] or '(empty)'}",
                    f"    issuer       {s['issuer']}",
                    f"    SANs         {', '.join(s['sans']) or '(none)'}",
                    f"    serial       {s['serial']}",
                    f"    valid        {s['not_before']} .. {s['not_after']}",
                    f"    time left    {_left(s['seconds_left'])}",
                    f"    key          {s['key_type']}{'  CA' if s['is_ca'] else ''}"
                    f"{'  self-signed' if s['self_signed'] else ''}",
                    f"    sha256       {s['fingerprint_sha256']}",
                    f"    spki sha256  {s['spki_sha256']}"]
            out += [f"    {name:<26}{value}" for name, value in extension_lines(s)]
        out += [f"chain: {note}" for note in order if note != "ok"]
        out += [_key_text(k, bool(summaries)) for k in keys]
        out += [f"warn: cannot read {e.location}: {e.detail}" for e in inv.errors]
        for f in findings:
            out.append(f"warn: {f.code}: {f.detail}")
            fix = getattr(f, "fix", "")
            if fix:
                out.append(f"  fix: {fix}")
        return "\n".join(out)

    emit(as_json, doc, text)


def _left(seconds: int) -> str:
    from datetime import timedelta

    text = humanize(timedelta(seconds=seconds))
    return f"EXPIRED {text.lstrip('-')} ago" if seconds < 0 else text
