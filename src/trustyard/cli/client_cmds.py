"""Commands a service owner or operator runs against a CA: roots, issue, renew, revoke, list."""

from __future__ import annotations

import fnmatch
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..environments import check_name
from ..errors import Code, ConfigError, Conflict, Forbidden
from ..units import format_time, humanize
from ..x509.keys import KeyType, generate_private_key, key_type_of
from ..x509.revocation import REVOCATION_REASONS
from ..x509.summary import fingerprint_sha256, serial_text
from .connect import LocalCA, admin_token_from, client_defaults, connect
from .output import DURATION, emit, home_option, json_option, password_file_option, table

if TYPE_CHECKING:  # the HTTP client is imported by the commands that use it, not by `list --home`
    from ..client import IssuedFiles

ca_url_option = click.option("--ca-url", envvar="TRUSTYARD_CA_URL", show_envvar=True, default=None,
                             help="URL of the CA, e.g. https://ca.internal:8443 [default: from `roots --save`].")
root_option = click.option("--root", type=click.Path(dir_okay=False), envvar="TRUSTYARD_ROOT", show_envvar=True,
                           default=None,
                           help="Trust bundle to verify the CA server with [default: from `roots --save`].")
admin_token_file_option = click.option(
    "--admin-token-file", type=click.Path(dir_okay=False), default=None,
    help="Administrator token file, for --ca-url [default: HOME/admin.token].")


class _AnyCaseChoice(click.Choice):
    """Accepts any case, answers in the canonical one; a bad value lists the choices as spelt."""

    def __init__(self, choices: tuple[str, ...]) -> None:
        super().__init__(choices, case_sensitive=False)

    def get_invalid_choice_message(self, value: Any, ctx: click.Context | None) -> str:
        return f"{value!r} is not one of {', '.join(map(str, self.choices))}."


def _issued_doc(issued: IssuedFiles, paths: dict[str, str]) -> dict[str, object]:
    return {"serial": issued.serial, "not_before": issued.not_before, "not_after": issued.not_after,
            "files": paths}


def _issued_text(issued: IssuedFiles, paths: dict[str, str]) -> str:
    return (f"serial    {issued.serial}\n"
            f"valid     {format_time(issued.not_before)} .. {format_time(issued.not_after)}\n"
            f"wrote     {paths['certificate']} (leaf + intermediate), {paths['key']} (0600), {paths['ca']}")


@click.command()
@ca_url_option
@click.option("--fingerprint", required=True, help="SHA-256 fingerprint of the root, as `init` printed it.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the bundle here (else stdout).")
@click.option("--save", is_flag=True,
              help="Set this client up once: save the bundle as root.crt and the URL in client.toml in "
                   "$TRUSTYARD_CONFIG_DIR (else ~/.config/trustyard); issue, renew, revoke, list and agent "
                   "then use them when --ca-url / --root are not given.")
@json_option
def roots(ca_url: str | None, fingerprint: str, out: str | None, save: bool, as_json: bool) -> None:
    """Bootstrap the trust bundle safely: fetch it, keep it only if it contains the root with the
    given fingerprint, then fetch it again over TLS verified against that root alone."""
    import httpx

    from .. import clientconfig
    from ..client import UntrustedServer, transport_reason
    from ..files import write_atomic

    if not ca_url:
        saved = clientconfig.load()
        ca_url = saved.ca_url if saved else None
    if not ca_url:
        raise click.UsageError("give --ca-url")
    wanted = fingerprint.replace(":", "").strip().lower().removeprefix("sha256").strip("= ")
    try:
        # trustyard: allow-insecure the roots are fetched unverified, then pinned by the fingerprint given
        first = httpx.get(ca_url.rstrip("/") + "/v1/roots", verify=False, timeout=10)
        first.raise_for_status()
        pinned = [c for c in x509.load_pem_x509_certificates(first.content) if fingerprint_sha256(c) == wanted]
    except httpx.HTTPStatusError as exc:
        raise ConfigError(f"cannot fetch the trust bundle from {ca_url}: it answered "
                          f"{exc.response.status_code} (is it a trustyard CA?)") from None
    except httpx.HTTPError as exc:
        raise ConfigError(f"cannot fetch the trust bundle from {ca_url}: {transport_reason(exc)}") from None
    except ValueError:
        raise ConfigError(f"cannot fetch the trust bundle from {ca_url}: no PEM certificate in its answer") from None
    if not pinned:
        raise Forbidden(f"no root with fingerprint {wanted} at {ca_url}: refusing the bundle",
                        code=Code.FINGERPRINT_MISMATCH)
    context = ssl.create_default_context(cadata=pinned[0].public_bytes(Encoding.PEM).decode())
    try:
        answer = httpx.get(ca_url.rstrip("/") + "/v1/roots", verify=context, timeout=10)
        bundle = answer.text
    except httpx.HTTPError as exc:
        raise UntrustedServer(f"the CA server's certificate does not chain to the pinned root "
                              f"{pinned[0].subject.rfc4514_string()}: {transport_reason(exc)}") from None
    certs = x509.load_pem_x509_certificates(bundle.encode())
    try:  # the CA's environment (init --environment), told over the verified connection
        environment = check_name(answer.headers["trustyard-environment"]) \
            if answer.headers.get("trustyard-environment") else None
    except ValueError:
        environment = None
    if out:
        write_atomic(out, bundle)
    saved_to = clientconfig.save(ca_url, wanted, bundle, environment) if save else None
    doc = {"roots": [fingerprint_sha256(c) for c in certs], "out": out, "pem": bundle, "environment": environment,
           "config": str(saved_to.path) if saved_to else None, "root": str(saved_to.root) if saved_to else None}

    def text() -> str:
        if saved_to is None:
            where = f"wrote {len(certs)} root(s) to {out}" if out else bundle.rstrip()
            return where + (f"\n(environment {environment})" if environment and out else "")
        lines = [f"wrote {len(certs)} root(s) to {out}"] if out else []
        return "\n".join([
            *lines,
            f"The root certificate has been saved in {saved_to.root} "
            f"({pinned[0].subject.rfc4514_string()}, sha256 {wanted}).",
            *([f"The CA's environment is {environment} (saved as this machine's)."] if environment else []),
            f"The client configuration has been saved in {saved_to.path} (ca_url {ca_url}).",
            "issue, renew, revoke, list and agent use them when --ca-url and --root are not given."])

    emit(as_json, doc, text)


@click.command()
@click.argument("name")
@click.option("--san", "sans", multiple=True, metavar="NAME", help="Subject alternative names [default: NAME].")
@click.option("--ttl", type=DURATION, default=None, help="Certificate lifetime, e.g. 24h [default: the provisioner's].")
@click.option("--token", envvar="TRUSTYARD_TOKEN", show_envvar=True, default=None, help="One-time bootstrap token.")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None, help="Read the token from a file.")
@ca_url_option
@root_option
@home_option
@password_file_option
@click.option("--provisioner", default="default", show_default=True,
              help="With --home: the provisioner whose policy and key issue the certificate.")
@click.option("--key-type", type=click.Choice([k.value for k in KeyType]), default=KeyType.EC_P256.value,
              show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Directory for tls.crt, tls.key (0600) and ca.crt.")
@json_option
def issue(name: str, sans: tuple[str, ...], ttl: str | None, token: str | None, token_file: str | None,
          ca_url: str | None, root: str | None, home: str | None, password_file: str | None, provisioner: str,
          key_type: str, out: str, as_json: bool) -> None:
    """Get a certificate for NAME. The key is generated here and never sent.

    Remote: --token T --ca-url URL --root FILE. Local (on the CA host): --home H, which mints and
    redeems a token through the same authority, policy and audit log.
    """
    from ..client import new_key_and_csr

    ca_url, root = client_defaults(home, ca_url, root)
    if token_file:
        token = Path(token_file).read_text().strip()
    names = list(sans) or [name]
    key, csr = new_key_and_csr(KeyType(key_type), names)
    ca = connect(home, ca_url, root, password_file, minting=not ca_url)
    try:
        if isinstance(ca, LocalCA) and not token:
            token = ca.mint(name, names, ttl, provisioner)
        if not token:
            raise click.UsageError("give --token (or --token-file, or $TRUSTYARD_TOKEN)")
        issued = ca.sign(csr, token, ttl)
    finally:
        ca.close()
    paths = issued.write(Path(out), key)
    emit(as_json, _issued_doc(issued, paths), lambda: _issued_text(issued, paths))


@click.command()
@click.option("--cert", "cert_file", type=click.Path(dir_okay=False, exists=True), required=True,
              help="The current certificate (tls.crt: leaf then intermediates).")
@click.option("--key", "key_file", type=click.Path(dir_okay=False, exists=True), required=True,
              help="Its private key (tls.key).")
@click.option("--keep-key", is_flag=True, help="Reuse the current key instead of generating a new one.")
@ca_url_option
@root_option
@home_option
@password_file_option
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Where to write the new files [default: the certificate's directory].")
@json_option
def renew(cert_file: str, key_file: str, keep_key: bool, ca_url: str | None, root: str | None, home: str | None,
          password_file: str | None, out: str | None, as_json: bool) -> None:
    """Renew a certificate, authenticated by itself (a proof signed with its key). Same identity,
    same lifetime; a new key unless --keep-key. A revoked or expired certificate cannot be renewed."""
    from ..ca import proofs
    from ..client import load_cert_chain_file, load_key_file, make_csr

    ca_url, root = client_defaults(home, ca_url, root)
    chain = load_cert_chain_file(Path(cert_file))
    current_key = load_key_file(Path(key_file))
    new_key = current_key if keep_key else generate_private_key(key_type_of(current_key) or KeyType.EC_P256)
    csr = make_csr(new_key, [])
    csr_der = x509.load_pem_x509_csr(csr).public_bytes(Encoding.DER)
    proof = proofs.make(current_key, chain, proofs.RENEW, csr_sha256=proofs.csr_digest(csr_der))
    ca = connect(home, ca_url, root, password_file)
    try:
        issued = ca.renew(csr, proof)
    finally:
        ca.close()
    paths = issued.write(Path(out) if out else Path(cert_file).parent, new_key)
    emit(as_json, _issued_doc(issued, paths), lambda: _issued_text(issued, paths))


@click.command()
@click.argument("serial", required=False)
@click.option("--serial", "serial_option", default=None, hidden=True)  # before SERIAL was positional
@click.option("--cert", "cert_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="The certificate file (its serial is used).")
@click.option("--key", "key_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Revoke as the key holder: the certificate's private key (with --cert).")
@click.option("--reason", type=_AnyCaseChoice(REVOCATION_REASONS), default="unspecified", metavar="REASON",
              show_default=True, help=f"Why (RFC 5280, any case): {', '.join(REVOCATION_REASONS)}. "
                                      "keyCompromise also revokes every certificate renewed from it.")
@admin_token_file_option
@ca_url_option
@root_option
@home_option
@password_file_option
@json_option
def revoke(serial: str | None, serial_option: str | None, cert_file: str | None, key_file: str | None, reason: str,
           admin_token_file: str | None, ca_url: str | None, root: str | None, home: str | None,
           password_file: str | None, as_json: bool) -> None:
    """Revoke the certificate with serial number SERIAL (hex), or the one in --cert.

    The CA refuses to renew it from then on. Revoking it again changes nothing and says when
    it was revoked (except that keyCompromise still reaches the certificates renewed from it).
    """
    from ..ca import proofs
    from ..client import load_cert_chain_file, load_key_file

    serial = serial or serial_option
    ca_url, root = client_defaults(home, ca_url, root)
    chain = load_cert_chain_file(Path(cert_file)) if cert_file else []
    if chain:
        serial = serial_text(chain[0].serial_number)
    if not serial:
        raise click.UsageError("give SERIAL or --cert")
    proof = admin_token = None
    if key_file:
        if not chain:
            raise click.UsageError("--key needs --cert")
        proof = proofs.make(load_key_file(Path(key_file)), chain, proofs.REVOKE, serial=serial)
    elif ca_url:
        admin_token = admin_token_from(home, admin_token_file)
    ca = connect(home, ca_url, root, password_file)
    try:
        try:
            record = ca.revoke(serial, reason, proof=proof, admin_token=admin_token)
            already = False
        except Conflict as exc:
            if exc.code != Code.ALREADY_REVOKED:
                raise
            record, already = ca.certificate_status(serial), True
    finally:
        ca.close()
    emit(as_json, {**record, "already_revoked": already}, lambda: _revoked_text(record, already))


def _revoked_text(record: dict[str, Any], already: bool) -> str:
    """What happened, who is told and who is not, and what to do next."""
    serial, reason = record["serial"], record.get("revocation_reason") or "unspecified"
    when = format_time(record["revoked_at"]) if record.get("revoked_at") else "an unknown time"
    if already:
        return f"{serial} was already revoked at {when} ({reason}); nothing changed"
    not_after = datetime.fromisoformat(record["not_after"])
    left = not_after - datetime.now(UTC)
    name = (record.get("sans") or [record.get("subject") or "NAME"])[0]
    lines = [f"revoked   {serial} at {when} ({reason})"]
    if reason == "keyCompromise":
        lines.append("          and every certificate renewed from it")
    lines += [
        "told      the CA: it refuses to renew this certificate from now on; its OCSP responder answers "
        "revoked at once, and its CRL shard lists it within [crl] delay",
        "not told  services that check neither OCSP nor the CRL, or when the certificate names no OCSP or CRL URL "
        f"(its provisioner's ocsp / crl = true): they accept it until it expires at {format_time(not_after)}"
        + (f" (in {humanize(left)})" if left.total_seconds() > 0 else ""),
        f"next      replace it where it is used: trustyard token {name}, then trustyard issue {name} --token T",
    ]
    return "\n".join(lines)


@click.command("list")
@click.option("--status", type=click.Choice(["pending", "issued", "failed", "revoked"]), default=None)
@click.option("--name", default=None, help="Only certificates with this name (a SAN or the subject; * globs).")
@admin_token_file_option
@ca_url_option
@root_option
@home_option
@password_file_option
@json_option
def list_(status: str | None, name: str | None, admin_token_file: str | None, ca_url: str | None,
          root: str | None, home: str | None, password_file: str | None, as_json: bool) -> None:
    """List certificates in the CA's ledger (administrator)."""
    ca_url, root = client_defaults(home, ca_url, root)
    token = admin_token_from(home, admin_token_file) if ca_url else ""
    ca = connect(home, ca_url, root, password_file, quick=True)  # a read: no SQLAlchemy on SQLite
    try:
        records = ca.list(token, status)
    finally:
        ca.close()
    if name is not None:
        records = [r for r in records if _has_name(r, name)]
    emit(as_json, {"certificates": records}, lambda: _list_text(records))


def _has_name(record: dict[str, Any], pattern: str) -> bool:
    names = [*record.get("sans", []), record.get("subject") or ""]
    return any(fnmatch.fnmatchcase(n.lower(), pattern.lower()) for n in names if n)


def _list_text(records: list[dict[str, Any]], now: datetime | None = None) -> str:
    """An aligned table, kubectl-style; a renewed certificate shows as superseded."""
    if not records:
        return "No certificates found."
    now = now or datetime.now(UTC)
    rows: list[tuple[str, ...]] = [("SERIAL", "STATUS", "EXPIRES IN", "NOT AFTER", "SANS")]
    for r in records:
        state = "superseded" if r["status"] == "issued" and r.get("superseded_by") else r["status"]
        left = datetime.fromisoformat(r["not_after"]) - now
        expires = humanize(left) if left.total_seconds() > 0 else f"expired {humanize(-left)} ago"
        rows.append((r["serial"], state, expires, format_time(r["not_after"]), ", ".join(r["sans"])))
    return table(rows)
