"""``trustyard agent``: wires flags or a TOML file to :mod:`trustyard.agent`."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from ..x509.keys import KeyType
from .output import DURATION, THRESHOLD, emit, json_option, utc_log_formatter


class _JsonLines(logging.Formatter):
    _FIELDS = ("event", "certificate", "serial", "subject", "issuer", "sans", "not_after", "level_name",
               "consecutive_failures", "renew_at", "exit_status")

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
                               "level": record.levelname.lower(), "message": record.getMessage()}
        doc.update({k: getattr(record, k) for k in self._FIELDS if hasattr(record, k)})
        return json.dumps(doc)


def _setup_logging(as_json: bool, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines() if as_json else utc_log_formatter(
        "%(asctime)s trustyard-agent %(levelname)s %(message)s"))
    root = logging.getLogger("trustyard")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


@click.command(context_settings={"max_content_width": 100})
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="TOML file managing several certificates ([[certificate]] tables; see below).")
@click.option("--name", default=None, help="The certificate's name (subject), e.g. orders.internal.")
@click.option("--san", "sans", multiple=True, metavar="NAME", help="Subject alternative names [default: --name].")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help="File holding the one-time bootstrap token [else $TRUSTYARD_TOKEN].")
@click.option("--ca-url", envvar="TRUSTYARD_CA_URL", show_envvar=True, default=None,
              help="URL of the CA [default: from `roots --save`].")
@click.option("--root", type=click.Path(dir_okay=False), envvar="TRUSTYARD_ROOT", show_envvar=True, default=None,
              help="Trust bundle that verifies the CA server [default: from `roots --save`].")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Directory for tls.crt, tls.key (0600) and ca.crt.")
@click.option("--follow-symlinks", is_flag=True,
              help="Allow --out to be a symbolic link (refused by default: whoever can change the link "
                   "chooses where the private key goes).")
@click.option("--ttl", type=DURATION, default=None,
              help="Lifetime asked for at bootstrap, e.g. 1h [default: the CA's].")
@click.option("--key-type", type=click.Choice([k.value for k in KeyType]), default=KeyType.EC_P256.value,
              show_default=True)
@click.option("--renew-at", type=THRESHOLD, default=None,
              help="When to renew: a share of the lifetime elapsed (66%) or the time left (8h) [default: 66%].")
@click.option("--jitter", default=None, help="Random spread of the renewal point, +- share of the interval "
              "[default: 10%].")
@click.option("--outage-budget", type=DURATION, default=None,
              help="Renew early enough that the certificate survives a CA outage this long, e.g. 4h.")
@click.option("--error-before", type=THRESHOLD, default=None,
              help="While renewal fails: warning, then error once less than this is left [default: 10%].")
@click.option("--reload-cmd", default=None, help="Shell command run after new files are written.")
@click.option("--reload-signal", default=None, help="Signal (HUP, USR1, ...) sent after new files are written.")
@click.option("--pid-file", type=click.Path(dir_okay=False), default=None, help="Who gets --reload-signal.")
@click.option("--verify-endpoint", default=None, metavar="HOST:PORT",
              help="After reloading, confirm the service serves the new certificate.")
@click.option("--verify-grace", type=DURATION, default=None,
              help="How long the service may take to switch [default: 5s].")
@click.option("--metrics-listen", default=None, metavar="HOST:PORT",
              help="Serve /healthz and /metrics here, e.g. 127.0.0.1:9465.")
@click.option("--roots-interval", type=DURATION, default=None, help="How often to ask whether the trust bundle changed "
              "[default: 1m].")
@click.option("--checkin", type=DURATION, default=None,
              help="How often to check in with the CA (+-10%), which lists the agent in `trustyard fleet` "
                   "and may answer refresh-bundle, renew-now or retry-after N, obeyed at once; also at start "
                   "and after each renewal or bundle change [default: 60s].")
@click.option("--trust-formats", default=None, metavar="pem,p12,jks",
              help="Trust bundle files to write beside ca.crt (always written): p12 = truststore.p12 "
                   "(PKCS#12), jks = truststore.jks (Java KeyStore); all in the certificate's generation "
                   "[default: pem].")
@click.option("--trust-password-file", type=click.Path(dir_okay=False), default=None,
              help="File holding the p12/jks truststore password (read once at start, never logged).")
@click.option("--once", is_flag=True, help="Get or renew what is due, refresh ca.crt, then exit.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
@json_option
def agent(config_file: str | None, name: str | None, sans: tuple[str, ...], token_file: str | None,
          ca_url: str | None, root: str | None, out: str | None, follow_symlinks: bool, ttl: str | None,
          key_type: str,
          renew_at: str | None, jitter: str | None, outage_budget: str | None, error_before: str | None,
          reload_cmd: str | None, reload_signal: str | None, pid_file: str | None, verify_endpoint: str | None,
          verify_grace: str | None, metrics_listen: str | None, roots_interval: str | None, checkin: str | None,
          trust_formats: str | None, trust_password_file: str | None, once: bool,
          log_level: str, as_json: bool) -> int:
    """Keep certificates issued, renewed, written and reloaded.

    The agent bootstraps with a one-time token (--token-file, else $TRUSTYARD_TOKEN), then
    renews with the current certificate at --renew-at of its lifetime, +- --jitter. Files are
    replaced together (a new ..data generation swapped in by one rename); the reload action runs only after
    a successful write, and with --verify-endpoint the renewal counts only once the live
    service presents the new serial (one more reload after --verify-grace, then an error).
    The trust bundle is rewritten as soon as the CA's changes (a new version), in a new
    generation: ca.crt, the truststores asked for with --trust-formats, and bundle.json
    ({"version": N, "sha256": "...", "formats": [...]}); the log names the version written.

    \b
    Truststores (--trust-formats pem,p12,jks --trust-password-file FILE): truststore.p12 and
    truststore.jks hold only the CA's public certificates, mode 0644 like ca.crt; the password
    (first line of FILE) is their integrity password, the same for both. The CA serves them at
    /v1/roots?format=p12|jks with the well-known password "changeit"; the agent re-encodes
    them with yours.

    While the CA is unreachable the current files stay in place and attempts back off
    (jittered, at most a minute apart, never longer than a quarter of the time left), so an
    overdue renewal goes through within a minute of the CA's return; a 503/429 with
    Retry-After is retried after it plus jitter. The log says "expires in X, renewal failing
    since Y", a warning that turns into an error below --error-before. An expired
    certificate is renewed if the CA allows it ([renewal] allow_after_expiry); one the CA
    will not renew (expired, revoked, bootstrapRequired): the agent says to put a new token
    in place and picks it up without a restart.

    \b
    One certificate:
      trustyard agent --name orders.internal --token-file /run/secrets/token \\
        --ca-url https://ca.internal:8443 --root root.crt --out /run/certs \\
        --reload-signal HUP --pid-file /run/nginx.pid --metrics-listen 127.0.0.1:9465
    Several: trustyard agent --config agent.toml   (ca_url, root, metrics_listen,
      roots_interval, checkin, then [[certificate]] tables with name, sans, token_file or
      token_env, out, ttl, key_type, renew_at, jitter, outage_budget, error_before,
      reload_cmd or reload_signal + pid_file, verify_endpoint, verify_grace, follow_symlinks).

    \b
    The reload command runs with PATH, HOME, LANG, LC_ALL, LC_CTYPE, TZ and
    TRUSTYARD_CERT_DIR only: none of the agent's other variables (no token or password).
    A pid file must be a regular file owned by root or the agent's user, not writable by
    group or others, holding one pid > 1. --out may not be a symbolic link unless
    --follow-symlinks.

    \b
    After every issue or renewal the log says when the next renewal is and why; the reload
    command's exit status and last output lines are logged; on stopping, the log says which
    certificate (serial, notAfter) is in place on disk, or that none is.

    \b
    Exit status (--once): 0 every certificate valid and nothing failing; 1 an attempt
    failed (retry later); 3 a new bootstrap token is needed. Long-running: 0 after
    SIGTERM/SIGINT. Both: 2 for bad flags or configuration, and when the CA refuses what
    retrying cannot fix (a policy refusal such as a lifetime outside the provisioner's
    bounds or a name it does not allow, or another 400/403 problem), with the CA's message.
    """
    from .. import clientconfig
    from ..agent import config as cfg
    from ..agent.anchors import Anchors
    from ..agent.metrics import MetricsServer
    from ..agent.runner import Agent, ManagedCert
    from ..agent.seams import FileOutput, HTTPBackend, SystemClock
    from ..agent.trust import TrustOutput

    _setup_logging(as_json, log_level)
    top = {"ca_url": ca_url, "root": root, "metrics_listen": metrics_listen, "roots_interval": roots_interval,
           "checkin": checkin, "trust_formats": trust_formats, "trust_password_file": trust_password_file}
    saved = clientconfig.load()  # `roots --save`: used for what neither the flags nor --config give
    defaults = {"ca_url": saved.ca_url, "root": str(saved.root)} if saved else {}
    if config_file:
        if name or out or follow_symlinks:
            raise click.UsageError("give either --config or --name/--out/--follow-symlinks, not both "
                                   "(follow_symlinks = true goes in a [[certificate]] table)")
        config = cfg.load_config_file(Path(config_file), top, defaults)
    else:
        if not name or not out:
            raise click.UsageError("give --name and --out (or --config FILE)")
        spec = cfg.cert_spec({
            "name": name, "sans": list(sans), "token_file": token_file, "out": out, "ttl": ttl,
            "key_type": key_type, "renew_at": renew_at, "jitter": jitter, "outage_budget": outage_budget,
            "error_before": error_before, "reload_cmd": reload_cmd, "reload_signal": reload_signal,
            "pid_file": pid_file, "verify_endpoint": verify_endpoint, "verify_grace": verify_grace,
            "follow_symlinks": follow_symlinks,
        })
        config = cfg.build({**defaults, **{k: v for k, v in top.items() if v}}, (spec,))
    trust = TrustOutput.parse(config.trust_formats, config.trust_password_file)  # before anything is written
    clock = SystemClock()
    anchors = [Anchors.open(spec.out, config.root) for spec in config.certificates]
    # The CA's certificate is also checked against the agent's anchors in the bundles it wrote:
    # after a root rotation retires the --root it started with, that is where the new root is.
    backend = HTTPBackend(config.ca_url, config.root,
                          trust=[(spec.out / "ca.crt", a) for spec, a in zip(config.certificates, anchors, strict=True)])
    environ = dict(os.environ)
    managed = [ManagedCert(spec, backend, FileOutput(spec.out, spec.follow_symlinks, trust), clock, environ=environ,
                           anchors=a)
               for spec, a in zip(config.certificates, anchors, strict=True)]
    runner = Agent(config, backend, managed, clock)
    try:
        if once:
            code = runner.once()
            emit(as_json, {"exit_code": code, "certificates": [m.report() for m in managed]},
                 lambda: "\n".join(f"{m.spec.name}: {m.status().message}" for m in managed))
            return code
        metrics = None
        if config.metrics_listen:
            metrics = MetricsServer(runner, *config.metrics_listen).start()
            logging.getLogger("trustyard.agent").info("health and metrics on http://%s:%d/", *metrics.address)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: clock.stop())
        try:
            return runner.run()
        finally:
            if metrics is not None:
                metrics.stop()
    finally:
        backend.close()
