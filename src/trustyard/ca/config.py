"""``trustyard.toml``: read into small value objects; every path is relative to the home.

    [ca]            root_cert, intermediate_cert, intermediate_key, encrypted_keys, backdate,
                    environment (the name ``init --environment`` gave the CA's root)
    [environments]  NAME = ["sha256:<root fingerprint>" | "PEM file", ...]  other environments' roots
    [alerts]        webhook, interval  (see ``ca/alerts.py``)
    [server]        listen, url, tls_cert, tls_key, workers, max_body_bytes,
                    header_timeout, body_timeout, max_connections, ocsp_url,
                    latency_target, max_pending  (signing admission per worker, ``api/admission.py``)
    [renewal]       allow_after_expiry  (see ``ca/renewal.py``)
    [database]      url  (sqlite:///trustyard.db relative to the home, or postgresql://...)
    [admin]         token_sha256
    [[provisioners]] name, type, key, public_key, allow, wildcards, default_ttl, min_ttl, max_ttl,
                    key_types, eku, ocsp
    [acme]          http_port, tls_port, resolver, allow_targets, validation_timeout,
                    validation_workers, validation_account_workers, validations_per_account,
                    validations_per_order, nonces_per_client, purge_interval, nonce_reject_percent
    [acme.eab.NAME] KID = "base64url HMAC key"  (External Account Binding required for provisioner NAME)
    [crl]           shards, period, next_update, delay  (see ``ca/crl.py``)
    [rotation]      auto, checkin_interval, dwell, renew_window, stall, poll_interval,
                    server_cert_renewal

Environment overrides for ACME: TRUSTYARD_ACME_HTTP_PORT, TRUSTYARD_ACME_TLS_PORT,
TRUSTYARD_ACME_RESOLVER (host:port), TRUSTYARD_ACME_NONCE_REJECT (percent of valid nonces refused).
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..environments import Environments, from_table
from ..errors import Code, ConfigError
from ..policy import Policy, parse_patterns
from ..units import parse_duration
from ..x509.keys import KeyType
from .alerts import AlertsConfig, load_alerts
from .crl import CrlConfig, load_crl
from .renewal import RenewalConfig, load_renewal
from .sections import check_type, duration, field_defaults, section

if TYPE_CHECKING:
    from .rotation import RotationSettings

CONFIG_NAME = "trustyard.toml"
DEFAULT_ALLOW = ("*.internal", "spiffe://trustyard.internal/*")
"""Without ``--allow``: names under the reserved ``.internal`` TLD and one SPIFFE trust domain;
no IP addresses (they must be allowed explicitly with a CIDR)."""


def resolve_home(home: str | os.PathLike[str] | None) -> Path:
    if home:
        return Path(home).expanduser()
    env = os.environ.get("TRUSTYARD_HOME")
    return Path(env).expanduser() if env else Path.home() / ".trustyard"


@dataclass(frozen=True)
class ProvisionerConfig:
    name: str
    type: str = "token"
    key: str | None = None
    public_key: str | None = None
    allow: tuple[str, ...] = DEFAULT_ALLOW
    default_ttl: str = "24h"
    min_ttl: str = "5m"
    max_ttl: str = "30d"
    key_types: tuple[str, ...] = tuple(k.value for k in KeyType)
    eku: tuple[str, ...] = ("serverAuth", "clientAuth")
    wildcards: bool = False
    ocsp: bool = False  # leaves carry the AIA OCSP URL ([server] ocsp_url, else <url>/ocsp)
    crl: bool = False  # its leaves name their CRL shard in a CRL Distribution Points extension

    def policy(self, backdate: str) -> Policy:
        where = f"[[provisioners]] {self.name!r}"
        durations = {key: _duration(f"{where} {key}", getattr(self, key))
                     for key in ("default_ttl", "min_ttl", "max_ttl")}
        if not durations["min_ttl"] <= durations["default_ttl"] <= durations["max_ttl"]:
            raise ConfigError(f"{where}: min_ttl <= default_ttl <= max_ttl does not hold "
                              f"({self.min_ttl}, {self.default_ttl}, {self.max_ttl})")
        if not isinstance(self.wildcards, bool):
            raise ConfigError(f"{where}: wildcards must be true or false")
        try:
            return Policy(
                provisioner=self.name,
                allow=parse_patterns(self.allow),
                key_types=tuple(KeyType.parse(k) for k in self.key_types),
                eku=tuple(self.eku),
                backdate=_duration("[ca] backdate", backdate, allow_zero=True),
                default_ttl=durations["default_ttl"], min_ttl=durations["min_ttl"], max_ttl=durations["max_ttl"],
                wildcards=self.wildcards,
            )
        except ValueError as exc:
            raise ConfigError(f"provisioner {self.name!r}: {exc}") from None


def _duration(key: str, text: Any, allow_zero: bool = False) -> timedelta:
    """A duration from trustyard.toml; a ConfigError naming the key when it is not one."""
    return duration(f"{CONFIG_NAME}: {key}", text, allow_zero)


DEFAULT_ACME_TARGETS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
"""Where ACME validation may connect without configuration: private networks only (an internal PKI)."""


@dataclass(frozen=True)
class AcmeConfig:
    """The ACME server's validation authority and test knobs.

    ``allow_targets``: CIDRs (``10.0.0.0/8``) and domain suffixes (``.internal``) validation may
    connect to; link-local and cloud-metadata addresses and the CA's own port are refused whatever
    this says. ``nonce_reject_percent`` refuses that share of valid nonces with badNonce, like
    Pebble's PEBBLE_WFE_NONCEREJECT, so clients' retry paths get exercised (tests only): only
    nonces carried over from a successful response are refused, never one from newNonce or from
    a refusal, so a client that retries a badNonce once always gets through.

    Fairness (per worker process): ``validation_workers`` probes run at once, at most
    ``validation_account_workers`` of one account; a challenge answered while its account has
    ``validations_per_account`` challenges in flight, or its order ``validations_per_order``, is
    refused with ``rateLimited`` and Retry-After and stays pending. ``nonces_per_client``: unspent
    nonces kept per client address (IPv6: per /64); minting one more drops that client's oldest.
    ``purge_interval``: how often expired nonces and expired unfinished orders (with their
    authorizations and challenges), old refusal counts and expired used tokens are deleted
    (``ca.purge_job``).
    """

    http_port: int = 80
    tls_port: int = 443
    resolver: str = ""  # host:port of a DNS server; empty = the system resolver
    allow_targets: tuple[str, ...] = DEFAULT_ACME_TARGETS
    validation_timeout: float = 10.0
    validation_workers: int = 8
    validation_account_workers: int = 4
    validations_per_account: int = 100
    validations_per_order: int = 100  # an order has at most 100 identifiers: one is never refused whole
    nonces_per_client: int = 32
    purge_interval: str = "10m"
    nonce_reject_percent: float = 0.0
    eab: dict[str, dict[str, str]] = field(default_factory=dict)  # provisioner -> {kid: base64url key}

    @property
    def purge_seconds(self) -> float:
        """``purge_interval`` in seconds (ValueError when it is not a duration from 1s to 1d)."""
        try:
            seconds = parse_duration(self.purge_interval).total_seconds() if isinstance(self.purge_interval, str) else 0
        except OverflowError:
            seconds = 0
        if not 1 <= seconds <= 86400:
            raise ValueError(f"a duration from 1s to 1d, like 10m, not {self.purge_interval!r}")
        return seconds

    def to_toml(self) -> dict[str, Any]:
        doc = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self).items() if k != "eab"}
        if self.eab:
            doc["eab"] = {p: dict(keys) for p, keys in self.eab.items()}
        return doc

    def with_env(self, environ: Mapping[str, str]) -> AcmeConfig:
        changes: dict[str, Any] = {}
        try:
            if environ.get("TRUSTYARD_ACME_HTTP_PORT"):
                changes["http_port"] = int(environ["TRUSTYARD_ACME_HTTP_PORT"])
            if environ.get("TRUSTYARD_ACME_TLS_PORT"):
                changes["tls_port"] = int(environ["TRUSTYARD_ACME_TLS_PORT"])
            if environ.get("TRUSTYARD_ACME_NONCE_REJECT"):
                changes["nonce_reject_percent"] = float(environ["TRUSTYARD_ACME_NONCE_REJECT"])
        except ValueError as exc:
            raise ConfigError(f"ACME environment override: {exc}") from None
        if environ.get("TRUSTYARD_ACME_RESOLVER"):
            changes["resolver"] = environ["TRUSTYARD_ACME_RESOLVER"]
        return replace(self, **changes) if changes else self


@dataclass(frozen=True)
class RotationConfig:
    """``[rotation]``: how the CA rotates its material (``ca/rotation.py``).

    ``auto``: the server prepares a new intermediate at 2/3 of the current one's life and
    advances it through the same gates by itself. ``checkin_interval``: how often relying
    parties check in; ``dwell`` (at least two intervals; empty for exactly two) must pass
    between publishing new material and adopting it; ``renew_window`` spreads the renew-now
    requests at ``active``; a state older than ``stall`` is past its deadline.
    ``poll_interval``: how often every worker looks for a rotation that switched the signer,
    and the server for its own certificate's renewal (at 2/3 of its life,
    ``server_cert_renewal``)."""

    auto: bool = False
    checkin_interval: str = "60s"  # the agents' --checkin default
    dwell: str = ""
    renew_window: str = "1h"
    stall: str = "7d"
    poll_interval: str = "5s"
    server_cert_renewal: bool = True

    def settings(self) -> RotationSettings:
        """The journal's ``RotationSettings``; ConfigError naming the key that is wrong."""
        from .rotation import RotationSettings

        values = {}
        for key in ("checkin_interval", "renew_window", "stall"):
            values[key] = _rotation_duration(key, getattr(self, key))
        values["dwell"] = (_rotation_duration("dwell", self.dwell) if self.dwell
                           else 2 * values["checkin_interval"])
        try:
            return RotationSettings(**values).checked()
        except Exception as exc:
            raise ConfigError(getattr(exc, "detail", str(exc))) from None

    @property
    def poll_seconds(self) -> float:
        return _rotation_duration("poll_interval", self.poll_interval).total_seconds()


def _rotation_duration(key: str, text: str) -> timedelta:
    return duration(f"[rotation] {key}", text)


@dataclass(frozen=True)
class Config:
    home: Path
    root_cert: str = "ca/root.crt"
    root_key: str = "ca/root.key"
    intermediate_cert: str = "ca/intermediate.crt"
    intermediate_key: str = "ca/intermediate.key"
    encrypted_keys: bool = True
    backdate: str = "1m"
    environment: str = ""  # this CA's environment (init --environment); "" when it has none
    environments: dict[str, list[str]] = field(default_factory=dict)  # other environment -> its roots
    alerts: AlertsConfig = field(default_factory=lambda: AlertsConfig())
    listen: str = "127.0.0.1:8443"
    url: str = "https://127.0.0.1:8443"
    tls_cert: str = "server/tls.crt"
    tls_key: str = "server/tls.key"
    workers: int = 0
    max_body_bytes: int = 64 * 1024
    header_timeout: str = "10s"  # a request's line and headers must arrive within this
    body_timeout: str = "30s"  # and its body within this once the headers are in
    max_connections: int = 1000  # open connections per worker; past it, 503 and close
    max_checkins_per_second: int = 0  # per worker; past it, check-ins are told retry-after (0: no limit)
    latency_target: str = "1s"  # per worker: refuse signing (503) when the expected wait exceeds this
    max_pending: int = 64  # per worker: signing requests admitted and not finished, at most
    ocsp_url: str = ""  # the AIA OCSP URL of provisioners with ocsp = true ("": <url>/ocsp)
    database_url: str = "sqlite:///trustyard.db"
    admin_token_sha256: str = ""
    provisioners: tuple[ProvisionerConfig, ...] = field(default_factory=tuple)
    acme: AcmeConfig = field(default_factory=AcmeConfig)
    rotation: RotationConfig = field(default_factory=RotationConfig)
    crl: CrlConfig = field(default_factory=CrlConfig)
    renewal: RenewalConfig = field(default_factory=RenewalConfig)

    def path(self, relative: str) -> Path:
        p = Path(relative).expanduser()
        return p if p.is_absolute() else self.home / p

    @property
    def db_url(self) -> str:
        """Relative SQLite paths are resolved against the home."""
        prefix = "sqlite:///"
        if self.database_url.startswith(prefix) and not self.database_url.startswith(prefix + "/"):
            rest = self.database_url[len(prefix):]
            if rest and rest != ":memory:":
                return prefix + str(self.path(rest))
        return self.database_url

    def server_limits(self) -> tuple[float, float, int]:
        """(header timeout s, body timeout s, max connections per worker), checked."""
        seconds = []
        for key in ("header_timeout", "body_timeout"):
            text = getattr(self, key)
            try:
                value = parse_duration(text).total_seconds()
            except (ValueError, OverflowError) as exc:
                raise ConfigError(f"[server] {key}: {exc}") from None
            if not 0 < value <= 3600:
                raise ConfigError(f"[server] {key} = {text!r}: must be more than 0s and at most 1h")
            seconds.append(value)
        count = self.max_connections
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(f"[server] max_connections = {count!r}: must be a whole number of at least 1")
        return seconds[0], seconds[1], count

    def admission_limits(self) -> tuple[float, int]:
        """(latency target s, max pending signing requests per worker), checked."""
        text = self.latency_target
        try:  # "250ms" too: a target is often below a second
            target = (int(text[:-2]) / 1000 if isinstance(text, str) and text[:-2].isdigit() and text.endswith("ms")
                      else parse_duration(text).total_seconds())
        except (ValueError, OverflowError, TypeError) as exc:
            raise ConfigError(f"[server] latency_target: {exc} (or milliseconds, e.g. 250ms)") from None
        if not 0 < target <= 600:
            raise ConfigError(f"[server] latency_target = {self.latency_target!r}: must be more than 0s and at "
                              "most 10m")
        count = self.max_pending
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100_000:
            raise ConfigError(f"[server] max_pending = {count!r}: must be a whole number from 1 to 100000")
        return target, count

    @property
    def listen_host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        try:
            return host.strip("[]") or "127.0.0.1", int(port)
        except ValueError:
            raise ConfigError(f"[server] listen = {self.listen!r}: expected HOST:PORT") from None

    @property
    def ocsp_responder_url(self) -> str:
        """Where leaves of a provisioner with ``ocsp = true`` send OCSP requests (AIA)."""
        return self.ocsp_url or self.url.rstrip("/") + "/ocsp"

    def provisioner(self, name: str) -> ProvisionerConfig:
        for p in self.provisioners:
            if p.name == name:
                return p
        names = ", ".join(p.name for p in self.provisioners)
        raise ConfigError(f"no provisioner named {name!r} (configured: {names})")

    def to_toml(self) -> dict[str, Any]:
        return {
            "ca": {"root_cert": self.root_cert, "root_key": self.root_key, "intermediate_cert": self.intermediate_cert,
                   "intermediate_key": self.intermediate_key, "encrypted_keys": self.encrypted_keys,
                   "backdate": self.backdate, **({"environment": self.environment} if self.environment else {})},
            "server": {"listen": self.listen, "url": self.url, "tls_cert": self.tls_cert,
                       "tls_key": self.tls_key, "workers": self.workers, "max_body_bytes": self.max_body_bytes,
                       "header_timeout": self.header_timeout, "body_timeout": self.body_timeout,
                       "max_connections": self.max_connections,
                       **({"latency_target": self.latency_target} if self.latency_target != "1s" else {}),
                       **({"max_pending": self.max_pending} if self.max_pending != 64 else {}),
                       **({"ocsp_url": self.ocsp_url} if self.ocsp_url else {})},
            "database": {"url": self.database_url},
            "admin": {"token_sha256": self.admin_token_sha256},
            "provisioners": [
                {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(p).items()
                 if v is not None and not (k == "ocsp" and v is False)}
                for p in self.provisioners
            ],
            **({"acme": self.acme.to_toml()} if self.acme != AcmeConfig() else {}),
            **({"rotation": dict(vars(self.rotation))} if self.rotation != RotationConfig() else {}),
            **({"environments": dict(self.environments)} if self.environments else {}),
            **({"alerts": vars(self.alerts)} if self.alerts != AlertsConfig() else {}),
            **({"crl": vars(self.crl)} if self.crl != CrlConfig() else {}),
            **({"renewal": vars(self.renewal)} if self.renewal != RenewalConfig() else {}),
        }

    def environments_view(self) -> Environments:
        """This CA's environment and the other environments' roots (``trustyard.environments``)."""
        return from_table({"environments": self.environments}, str(self.home / CONFIG_NAME), self.home,
                          current=self.environment or None)


_SECTIONS = {
    "ca": {"root_cert", "root_key", "intermediate_cert", "intermediate_key", "encrypted_keys", "backdate",
           "environment"},
    "server": {"listen", "url", "tls_cert", "tls_key", "workers", "max_body_bytes", "header_timeout",
               "body_timeout", "max_connections", "max_checkins_per_second", "ocsp_url", "latency_target",
               "max_pending"},
    "database": {"url"},
    "admin": {"token_sha256"},
}
_PROVISIONER_KEYS = set(ProvisionerConfig.__dataclass_fields__)


def load_config(home: Path) -> Config:
    path = home / CONFIG_NAME
    if not path.exists():
        raise ConfigError(f"no CA in {home}: {path} does not exist (run `trustyard init --home {home}`)",
                          code=Code.NO_CA)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    values: dict[str, Any] = {}
    for name, allowed in _SECTIONS.items():
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{name}] must be a table")
        unknown = set(table) - allowed
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) in [{name}]: {', '.join(sorted(unknown))}")
        for key, value in table.items():
            field_name = ("database_url" if name == "database" else "admin_token_sha256" if name == "admin"
                          else key)
            check_type(path, f"[{name}] {key}", value, _DEFAULTS[field_name])
            values[field_name] = value
    unknown_sections = set(data) - set(_SECTIONS) - {"provisioners", "acme", "rotation", "environments", "alerts",
                                                                      "crl", "renewal"}
    if unknown_sections:
        raise ConfigError(f"{path}: unknown section(s): {', '.join(sorted(unknown_sections))}")
    provisioners = []
    entries = data.get("provisioners", [])
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise ConfigError(f"{path}: provisioners must be [[provisioners]] tables")
    for entry in entries:
        unknown = set(entry) - _PROVISIONER_KEYS
        if unknown or "name" not in entry:
            raise ConfigError(f"{path}: provisioner entry {entry.get('name', '?')!r}: "
                              f"unknown key(s) {sorted(unknown)} or missing name")
        for key, value in entry.items():
            check_type(path, f"provisioner {entry['name']!r}: {key}", value, _PROVISIONER_DEFAULTS[key])
        settings: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()}
        provisioners.append(ProvisionerConfig(**settings))
    if os.environ.get("TRUSTYARD_DATABASE_URL"):
        values["database_url"] = os.environ["TRUSTYARD_DATABASE_URL"]
    acme = _load_acme(path, data.get("acme", {})).with_env(os.environ)
    if acme.resolver:
        try:
            acme = replace(acme, resolver=dns_server(acme.resolver))
        except ValueError as exc:
            raise ConfigError(f"{path}: [acme] resolver (or TRUSTYARD_ACME_RESOLVER): {exc}") from None
    rotation = _load_rotation(path, data.get("rotation", {}))
    environments = data.get("environments", {})
    config = Config(home=home, provisioners=tuple(provisioners), acme=acme, rotation=rotation,
                    alerts=load_alerts(path, data.get("alerts", {})), crl=load_crl(path, data.get("crl", {})),
                    renewal=load_renewal(path, data.get("renewal", {})),
                    environments=environments if isinstance(environments, dict) else {}, **values)
    if not isinstance(environments, dict):
        raise ConfigError(f"{path}: [environments] must be a table of environment = [root fingerprints]")
    config.environments_view()  # a wrong name or fingerprint fails here, at load time
    _duration("[ca] backdate", config.backdate, allow_zero=True)
    for p in config.provisioners:
        p.policy(config.backdate)  # fail at load time, not at the first request
    config.server_limits()
    config.admission_limits()
    return config


_ACME_KEYS = set(AcmeConfig.__dataclass_fields__)


def _load_rotation(path: Path, table: Any) -> RotationConfig:
    config = RotationConfig(**section(path, "rotation", table, RotationConfig))
    config.settings()  # fail at load time, naming the key
    _checked = config.poll_seconds
    return config


_DEFAULTS = field_defaults(Config) | {"database_url": "", "admin_token_sha256": ""}
_PROVISIONER_DEFAULTS = field_defaults(ProvisionerConfig) | {"name": "", "key": "", "public_key": ""}
_ACME_DEFAULTS = field_defaults(AcmeConfig)


def dns_server(text: str) -> str:
    """A DNS server's ``IP:port`` or ``[IPv6]:port``, written the one way; ValueError when
    ``text`` is not one. An IPv6 address needs its brackets (``fd00::1:53`` is itself an
    address), and link-local ones, which need an interface, are refused."""
    wrong = f"a DNS server is IP:port or [IPv6]:port, not {text!r}"
    if not isinstance(text, str):
        raise ValueError(wrong)
    host, sep, port = text.strip().rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        address = ipaddress.ip_address(host[1:-1] if bracketed else host)
        number = int(port)
    except ValueError:
        raise ValueError(wrong) from None
    if not sep or not 0 < number < 65536 or bracketed != (address.version == 6) or "%" in host:
        raise ValueError(wrong)  # "%": an IPv6 zone, which c-ares does not take
    if address.is_link_local:
        raise ValueError(f"a link-local DNS server needs an interface, which cannot be given: {text!r}")
    return f"[{address}]:{number}" if address.version == 6 else f"{address}:{number}"


def _load_acme(path: Path, table: Any) -> AcmeConfig:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [acme] must be a table")
    unknown = set(table) - _ACME_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) in [acme]: {', '.join(sorted(unknown))}")
    for key, value in table.items():
        if key != "resolver":  # dns_server says what a resolver looks like
            check_type(path, f"[acme] {key}", value, _ACME_DEFAULTS[key])
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in table.items()}
    eab = values.get("eab", {})
    if not isinstance(eab, dict) or not all(isinstance(v, dict) for v in eab.values()):
        raise ConfigError(f"{path}: [acme.eab.PROVISIONER] tables map key ids to base64url HMAC keys")
    try:
        config = AcmeConfig(**values)
    except TypeError as exc:
        raise ConfigError(f"{path}: [acme]: {exc}") from None
    for name in _ACME_COUNTS:
        value = getattr(config, name)
        if type(value) is not int or not 1 <= value <= 1_000_000:
            raise ConfigError(f"{path}: [acme] {name} must be a whole number from 1 to 1000000, not {value!r}")
    try:
        _checked = config.purge_seconds
    except ValueError as exc:
        raise ConfigError(f"{path}: [acme] purge_interval: {exc}") from None
    return config


_ACME_COUNTS = ("validation_workers", "validation_account_workers", "validations_per_account",
                "validations_per_order", "nonces_per_client")
