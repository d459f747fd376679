"""Commands run where the CA lives: init, serve, token, audit."""

from __future__ import annotations

import copy
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from ..ca.config import DEFAULT_ALLOW, load_config, resolve_home
from ..errors import ExitCode
from ..units import format_time, humanize, parse_duration
from ..x509.keys import KeyType
from .connect import local_ca, password_for
from .output import DURATION, emit, home_option, json_option, password_file_option, table


@click.command()
@home_option
@password_file_option
@click.option("--insecure-no-password", is_flag=True,
              help="Store the CA keys unencrypted (mode 0600 still). For throwaway demo CAs only.")
@click.option("--key-type", type=click.Choice([k.value for k in KeyType]), default=KeyType.EC_P256.value,
              show_default=True, help="Key type of the root and intermediate.")
@click.option("--allow", "allow", multiple=True, metavar="PATTERN",
              help="Names the default provisioner may issue for (repeatable): orders.prod.internal, "
                   f"*.prod.internal, 10.0.0.0/8, spiffe://prod.internal/*. Default: {', '.join(DEFAULT_ALLOW)}. "
                   "Also becomes the intermediate's X.509 name constraints.")
@click.option("--dns", "dns", multiple=True, metavar="NAME",
              help="Extra DNS name for the CA server's TLS certificate (it always covers localhost, 127.0.0.1, ::1).")
@click.option("--root-ttl", type=DURATION, default="3650d", show_default=True, help="Root lifetime.")
@click.option("--intermediate-ttl", type=DURATION, default="365d", show_default=True, help="Intermediate lifetime.")
@click.option("--name", default="trustyard", show_default=True, help="Organization/CN prefix of the CA certificates.")
@click.option("--listen", default="127.0.0.1:8443", show_default=True, help="Address `serve` listens on.")
@click.option("--environment", default="", metavar="NAME",
              help="The environment this CA serves (a DNS label: staging, prod): names the root and intermediate "
                   "(\"trustyard staging Root CA\") and is recorded as [ca] environment.")
@click.option("--database-url", default="sqlite:///trustyard.db", show_default=True,
              help="SQLAlchemy URL: sqlite:///FILE (relative to the home) or postgresql://user@host/db.")
@json_option
def init(home: str | None, password_file: str | None, insecure_no_password: bool, key_type: str,
         allow: tuple[str, ...], dns: tuple[str, ...], root_ttl: str, intermediate_ttl: str, name: str,
         listen: str, environment: str, database_url: str, as_json: bool) -> None:
    """Create a CA in the home: root (self-signed), intermediate (name-constrained to the allowed
    names), the CA server's TLS certificate, a bootstrap-token provisioner key, trustyard.toml and the
    database. Refuses to touch an existing CA.

    The root key (ca/root.key) is needed only to make or rotate intermediates: after init you can
    move it offline and the CA keeps issuing with the intermediate alone.
    """
    from ..ca.home import InitOptions, init_home, read_password

    path = resolve_home(home)
    password = read_password(password_file, insecure_no_password)
    result = init_home(path, password, InitOptions(
        key_type=KeyType(key_type), allow=allow, dns=dns, root_ttl=root_ttl, intermediate_ttl=intermediate_ttl,
        name=name, listen=listen, database_url=database_url, environment=environment))
    cfg = result.config
    doc: dict[str, Any] = {"home": str(path), "root_fingerprint_sha256": result.root_fingerprint,
           "root_certificate": str(cfg.path(cfg.root_cert)), "root_key": str(cfg.path(cfg.root_key)),
           "intermediate_certificate": str(cfg.path(cfg.intermediate_cert)), "allow": list(result.allow),
           "allow_is_default": result.allow_is_default, "url": cfg.url, "encrypted_keys": cfg.encrypted_keys,
           "environment": cfg.environment or None}

    def text() -> str:
        lines = [f"Created a CA in {path}",
                 f"  root certificate:  {doc['root_certificate']}",
                 f"  root fingerprint:  SHA256 {result.root_fingerprint}",
                 *([f"  environment:       {cfg.environment}"] if cfg.environment else []),
                 f"  allowed names:     {', '.join(result.allow)}"
                 + ("  (the default; change with --allow or in trustyard.toml)" if result.allow_is_default else ""),
                 f"  admin token:       {path / 'admin.token'}"]
        if not cfg.encrypted_keys:
            lines.append("  WARNING: keys are NOT encrypted (--insecure-no-password): a demo CA only")
        lines += ["", f"The root key {doc['root_key']} may now be moved offline; serving needs only the intermediate.",
                  f"Next: trustyard serve --home {path}",
                  *first_certificate(path, cfg.url, Path(doc["root_certificate"]))]
        return "\n".join(lines)

    emit(as_json, doc, text)


@click.command()
@home_option
@password_file_option
@click.option("--init", "init_missing", is_flag=True,
              help="Create the CA first (with defaults) when the home has none.")
@click.option("--insecure-no-password", is_flag=True, help="With --init: keys unencrypted (demo only).")
@click.option("--listen", default=None, help="HOST:PORT to listen on [default: from trustyard.toml, 127.0.0.1:8443].")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Worker processes [default: from trustyard.toml; 0 = one per core].")
@click.option("--header-timeout", default=None, metavar="DURATION",
              help="Close a connection whose request line and headers are not complete this long after it "
                   "opened (or after a kept-alive request's first byte), answering 408 "
                   "[default: [server] header_timeout, 10s].")
@click.option("--body-timeout", default=None, metavar="DURATION",
              help="Close a connection whose request body is not complete this long after its headers, "
                   "answering 408 [default: [server] body_timeout, 30s].")
@click.option("--max-connections", type=click.IntRange(min=1), default=None,
              help="Open connections per worker; one more is answered 503 (Retry-After: 1) and closed "
                   "[default: [server] max_connections, 1000].")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default="info", show_default=True)
def serve(home: str | None, password_file: str | None, init_missing: bool, insecure_no_password: bool,
          listen: str | None, workers: int | None, header_timeout: str | None, body_timeout: str | None,
          max_connections: int | None, log_level: str) -> None:
    """Run the CA's HTTPS API: REST (/v1/roots, /v1/sign, /v1/renew, /v1/revoke, /v1/certificates,
    /healthz, /metrics, /openapi.json), the CRLs (/crl/ISSUER/SHARD.crl) and ACME (RFC 8555) at
    /acme/PROVISIONER/directory for certbot, lego, cert-manager and friends. Stops cleanly on SIGTERM/SIGINT.

    Slow and greedy clients: a request's headers must arrive within the header timeout and its
    body within the body timeout (else 408 and the connection is closed), and each worker keeps
    at most --max-connections open (one more gets 503 and is closed)."""
    import functools
    import shutil
    import tempfile
    from dataclasses import replace

    import uvicorn

    from ..api.protocol import CoalescingHttpToolsProtocol, ServerLimits
    from ..ca import bundle
    from ..ca.home import InitOptions, home_alerter, init_home, load_authority, read_password

    path = resolve_home(home)
    created = None
    if init_missing and not (path / "trustyard.toml").exists():
        password = read_password(password_file, insecure_no_password)
        # --listen is this run's: the new trustyard.toml gets the default, like `init` without --listen.
        created = init_home(path, password, InitOptions())
    config = load_config(path)
    overrides: dict[str, Any] = {key: value for key, value in (("header_timeout", header_timeout), ("body_timeout", body_timeout),
                                                ("max_connections", max_connections)) if value is not None}
    limits = ServerLimits(*replace(config, **overrides).server_limits())
    password = password_for(config, password_file)
    authority = load_authority(path, password, config=config)  # fail fast, and migrate once, here
    bundle.refresh(config, authority.store)  # the home's roots, published once before the workers start
    authority.store.close()
    configured = config.listen
    if listen:
        config = replace(config, listen=listen)  # this run only: trustyard.toml is not rewritten
    host, port = config.listen_host_port
    count = workers if workers is not None else config.workers
    count = count or os.cpu_count() or 1

    os.environ["TRUSTYARD_HOME"] = str(path.resolve())
    # The workers read trustyard.toml again: the address they serve on (--listen included) is
    # the one the ACME validation guard refuses as the CA's own.
    os.environ["TRUSTYARD_LISTEN"] = config.listen
    if password_file:
        os.environ["TRUSTYARD_PASSWORD_FILE"] = str(Path(password_file).resolve())
    elif password is not None:
        os.environ["TRUSTYARD_PASSWORD"] = password.decode()
    metrics_dir = None
    if count > 1:
        metrics_dir = tempfile.mkdtemp(prefix="trustyard-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    url = f"https://{host if ':' not in host else f'[{host}]'}:{port}"
    only_now = f" (--listen: this run only; trustyard.toml has {configured})" if config.listen != configured else ""
    if created is not None:
        click.echo("\n".join([
            f"Created a CA in {path} (root SHA256 {created.root_fingerprint}; allowed names: "
            f"{', '.join(created.allow)})",
            f"  trust bundle:  {config.path(config.root_cert)}",
            f"  admin token:   {path / 'admin.token'}  (for revoke and list; keep it secret)",
            *first_certificate(path, url, config.path(config.root_cert)),
            f"trustyard CA serving on {url}{only_now} with {count} worker(s)"]), err=True)
    else:
        click.echo(f"trustyard CA serving the existing CA in {path} on {url}{only_now} with {count} worker(s)",
                   err=True)
    # One per CA, not per worker: automatic rotation ([rotation] auto) and the renewal of the
    # server's own certificate, which every worker's reloading TLS context picks up.
    from ..ca.crl_job import CrlJob
    from ..ca.home import open_home_store
    from ..ca.rotation_watch import Autopilot

    store = open_home_store(config, migrate=False)
    # The CRLs, generated here (one thread per CA process; replicas share the work through the
    # database). A changed [crl] shards is refused before the workers start.
    crl_job = CrlJob(config, password, store)
    try:
        crl_job.load_issuers()
    except BaseException:
        store.close()
        raise
    crl_job.start()
    # Emergencies (`trustyard emergency`): the old certificates whose grace ran out are revoked here.
    from ..ca.emergency_job import EmergencyJob

    emergency_job = EmergencyJob(store).start()
    # Intents a crashed replica (or this CA's last run) left pending: released at start, then periodically.
    from ..ca.intent_sweep import IntentSweep

    intent_sweep = IntentSweep(store).start()
    # Expired nonces, abandoned ACME orders, old refusal counts and expired used tokens.
    from ..ca.purge_job import PurgeJob

    purge_job = PurgeJob(store, config.acme.purge_seconds).start()
    autopilot = Autopilot(config, password, store).start()
    # Webhook alerts run beside the server, in this process only (not once per worker), and
    # never on the issuance path.
    alerter = home_alerter(config, autopilot.store)
    if alerter is not None:
        alerter.start()
    try:
        uvicorn.run(
            "trustyard.api.app:app_from_env", factory=True, host=host, port=port, workers=count,
            ssl_context_factory=server_tls_context, log_level=log_level,
            log_config=serve_log_config(log_level),
            access_log=log_level == "debug", timeout_graceful_shutdown=10, server_header=False,
            # uvicorn calls whatever it is given to make a protocol; its hints only name classes
            http=functools.partial(CoalescingHttpToolsProtocol, limits=limits),  # type: ignore[arg-type]
            # uvicorn would believe X-Forwarded-* from loopback: any local process could then
            # choose the scheme of the ACME URLs and the address the audit log records.
            proxy_headers=False,
        )
    finally:
        crl_job.stop()
        emergency_job.stop()
        intent_sweep.stop()
        purge_job.stop()
        autopilot.stop()
        autopilot.store.close()
        if alerter is not None:
            alerter.stop()
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def server_tls_context(_config: Any, _default: Any) -> Any:
    """uvicorn's ``ssl_context_factory`` in every worker: the server certificate of the home
    (``TRUSTYARD_HOME``) in a context that loads a renewed one at the next handshake."""
    from ..api.app import PASSWORD_FILE_ENV
    from ..ca.home import read_password
    from ..tls.context import server_context

    config = load_config(resolve_home(None))
    password = (read_password(os.environ.get(PASSWORD_FILE_ENV), insecure_no_password=False)
                if config.encrypted_keys else None)
    return server_context(cert=config.path(config.tls_cert), key=config.path(config.tls_key), client_auth="none",
                          key_password=password)


def first_certificate(home: Path, url: str, root: Path) -> list[str]:
    """How to get the first certificate from a CA just created: lines for a person to follow."""
    return ["  first certificate:",
            f"    TOKEN=$(trustyard token --home {home} orders.internal)",
            f"    trustyard issue orders.internal --token \"$TOKEN\" --ca-url {url} --root {root} --out ./orders"]


def serve_log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging configuration, with one line format (``oplog.LINE_FORMAT``, UTC times)
    for its lines and the ``trustyard`` loggers' (``trustyard.ca``: what the CA did) in every
    worker, on stderr, at ``level``."""
    from uvicorn.config import LOGGING_CONFIG

    from ..ca import oplog

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["default"] = {"()": "trustyard.cli.output.utc_log_formatter", "fmt": oplog.LINE_FORMAT}
    config["handlers"]["trustyard"] = {"formatter": "default", "class": "logging.StreamHandler",
                                       "stream": "ext://sys.stderr"}
    config["loggers"]["trustyard"] = {"handlers": ["trustyard"], "level": level.upper(), "propagate": False}
    return config


@click.command()
@click.argument("name")
@click.option("--san", "sans", multiple=True, metavar="NAME",
              help="Subject alternative name the token allows (repeatable) [default: NAME].")
@click.option("--ttl", type=DURATION, default="5m", show_default=True,
              help="How long the token can be redeemed (at most 24h).")
@click.option("--cert-ttl", type=DURATION, default=None,
              help="Longest lifetime of the certificate it buys; a request for more is refused "
                   "[default: the provisioner's default_ttl, up to its max_ttl].")
@click.option("--provisioner", default="default", show_default=True)
@home_option
@password_file_option
@json_option
def token(name: str, sans: tuple[str, ...], ttl: str, cert_ttl: str | None, provisioner: str, home: str | None,
          password_file: str | None, as_json: bool) -> None:
    """Print a single-use bootstrap token for NAME, signed with the provisioner key.

    The names are checked against the provisioner's policy now, and again when redeemed.
    """
    ca = local_ca(home, password_file, minting=True, quick=True)  # an audit append: no SQLAlchemy on SQLite
    try:
        # DURATION checked the text; it becomes a timedelta here, at the edge, once
        value = ca.authority.mint_token(provisioner, name, list(sans), parse_duration(ttl),
                                        parse_duration(cert_ttl) if cert_ttl else None, actor=ca.actor)
    finally:
        ca.close()
    emit(as_json, {"token": value, "name": name, "sans": list(sans) or [name], "ttl": ttl}, value)


@click.group(invoke_without_command=True)
@home_option
@json_option
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the last N entries.")
@click.pass_context
def audit(ctx: click.Context, home: str | None, as_json: bool, limit: int | None) -> None:
    """List the audit log (token mints, issuances, renewals, revocations, denials).

    `trustyard audit verify` checks the hash chain: exit 1 when an entry was edited or deleted.
    """
    ctx.obj = {"home": home, "as_json": as_json}
    if ctx.invoked_subcommand is not None:
        return
    from ..ca.home import open_home_store
    from ..store import refusals

    store = open_home_store(load_config(resolve_home(home)), migrate=False)
    entries = [e.to_json() for e in store.audit_entries()]
    counted = [{**r, "interval_start": format_time(r["interval_start"]), "last_at": format_time(r["last_at"])}
               for r in refusals.rows(store)]  # unauthenticated refusals, in aggregate
    store.close()
    if limit:
        entries = entries[-limit:]

    emit(as_json, {"entries": entries, "refusals": counted}, lambda: audit_text(entries, counted))


def audit_text(entries: list[dict[str, Any]], counted: list[dict[str, Any]]) -> str:
    """The audit log as aligned tables (kubectl-style): its entries, with what each was about and
    why a refusal was refused; then the refusals counted in aggregate."""
    if not entries and not counted:
        return "No audit entries found."
    parts = []
    if entries:
        now = datetime.now(UTC)
        parts.append(table([("SEQ", "TIME", "AGE", "OUTCOME", "ACTION", "TARGET", "ACTOR", "DETAIL")] + [
            (str(e["seq"]), format_time(e["at"]), _age(now, e["at"]), e["outcome"], e["action"], e["target"],
             e["actor"], _detail(e)) for e in entries]))
    if counted:
        parts.append("Refused before authenticating (counted per hour, source and reason):\n" + table(
            [("INTERVAL", "SOURCE", "COUNT", "ACTION", "REASON", "LAST")] + [
                (format_time(r["interval_start"]), r["source"], str(r["count"]), *_split_reason(r["reason"]),
                 format_time(r["last_at"])) for r in counted]))
    return "\n\n".join(parts)


def _age(now: datetime, at: str) -> str:
    """How long ago, for the AGE column: ``3d 4h``, ``5m 2s``."""
    return humanize(now - datetime.fromisoformat(at))


def _split_reason(reason: str) -> tuple[str, str]:
    action, _, code = reason.rpartition(":")
    return (action, code) if action else ("", reason)


def _detail(entry: dict[str, Any]) -> str:
    """What an entry is about, in a few words: the names and lifetime of a certificate, the
    reason of a revocation, the code and message of a refusal."""
    d, action = entry["detail"], entry["action"]
    names = ", ".join(d.get("sans") or [])
    if action == "request.deny":
        reason = f"{d.get('code', '')}: {d.get('reason', '')}".strip(": ")
        return reason + (f" (rule {d['rule']})" if d.get("rule") else "")
    if action in ("certificate.issue", "certificate.renew"):
        text = ", ".join(filter(None, [names, d.get("lifetime") and f"lifetime {d['lifetime']}"]))
        if d.get("renewed_from"):
            text += f" (renews {d['renewed_from']})"
        return text + (" -- refused: revoked while being signed" if d.get("revoked_while_signing") else "")
    if action == "certificate.renew.retry":
        return f"the renewal of {d.get('renewed_from')} asked again: the same certificate"
    if action == "certificate.revoke":
        also = d.get("descendants") or []
        return ", ".join(filter(None, [d.get("reason"), names])) + (f" (and {', '.join(also)})" if also else "")
    if action == "token.mint":
        return ", ".join(filter(None, [names, d.get("provisioner") and f"provisioner {d['provisioner']}"]))
    return ", ".join(f"{k}={v}" for k, v in d.items())


@audit.command("verify")
@home_option
@json_option
@click.pass_context
def audit_verify(ctx: click.Context, home: str | None, as_json: bool) -> int:
    """Verify the audit log's hash chain. Exit 0 intact, 1 tampered.

    Entries are keyed with ca/audit.key (kept outside the database) and the newest one is
    recorded in the signed ca/audit.checkpoint: someone who can write the database but not
    read that key cannot edit, rehash, delete or truncate entries unseen. Whoever holds the
    key can. Entries older than the key are plain hashes and are reported as such.
    """
    from ..ca.home import open_home_store

    home = home or ctx.obj.get("home")
    as_json = as_json or ctx.obj.get("as_json")
    store = open_home_store(load_config(resolve_home(home)), migrate=False)
    report = store.verify_audit()
    store.close()

    def text() -> str:
        head = (f"audit log intact: {report.entries} entries" if report.ok else
                "audit log TAMPERED:\n  " + "\n  ".join(report.problems))
        return "\n".join([head, *(f"  note: {n}" for n in report.notes)])

    emit(as_json, report.to_json(), text)
    return ExitCode.OK if report.ok else ExitCode.FAILED


