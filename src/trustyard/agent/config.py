"""What the agent manages: one :class:`CertSpec` per certificate, from flags or a TOML file.

    ca_url = "https://ca.internal:8443"
    root = "/etc/trustyard/root.crt"        # verifies the CA server
    metrics_listen = "127.0.0.1:9465"       # optional
    roots_interval = "1m"                   # how often to ask whether the trust bundle changed
    checkin = "60s"                         # how often to check in with the CA (+-10%)
    trust_formats = "pem,p12,jks"           # trust files beside ca.crt (default: pem alone)
    trust_password_file = "/run/secrets/truststore.pass"  # for p12/jks

    [[certificate]]
    name = "orders.internal"
    sans = ["orders.internal", "spiffe://prod.internal/orders"]
    token_file = "/run/secrets/orders.token"  # or token_env = "ORDERS_TOKEN"
    out = "/run/certs/orders"
    ttl = "24h"                # bootstrap only: a renewal keeps the lifetime
    renew_at = "66%"
    jitter = "10%"
    outage_budget = "4h"
    reload_cmd = "systemctl reload orders"   # or reload_signal = "HUP" + pid_file / pid
    follow_symlinks = false    # true: out may be a symbolic link (refused by default)
    verify_endpoint = "127.0.0.1:8443"
    verify_grace = "5s"

Paths in the file are relative to the file's directory.
"""

from __future__ import annotations

import re
import signal
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from ..errors import Code, ConfigError
from ..units import Threshold, parse_duration
from ..x509.keys import KeyType
from .schedule import DEFAULT_ERROR_BEFORE, DEFAULT_JITTER, DEFAULT_RENEW_AT, Schedule

DEFAULT_TOKEN_ENV = "TRUSTYARD_TOKEN"
DEFAULT_CHECKIN = timedelta(seconds=60)
T = TypeVar("T")
PID_MAX = 2**22  # Linux's largest pid_max


def parse_pid(text: str) -> int:
    """A process id that a reload signal may go to. ``kill(2)`` reads 0 as the agent's own
    process group, -1 as every process it may signal and -N as process group N, and pid 1
    is init: none of those is a service to reload. Raises ValueError saying why."""
    value = str(text).strip()
    if not re.fullmatch(r"[+-]?[0-9]{1,20}", value):
        raise ValueError(f"{value[:40]!r} is not a process id (a positive number)")
    pid = int(value)
    if pid < 0:
        raise ValueError(f"pid {pid} is negative: kill() would signal a whole process group")
    if pid in (0, 1):
        raise ValueError(f"pid {pid} refused: " + ("0 is the agent's own process group" if pid == 0 else
                                                    "1 is init, not the service to reload"))
    if pid > PID_MAX:
        raise ValueError(f"pid {pid} is larger than any process id")
    return pid


@dataclass(frozen=True)
class ReloadAction:
    """Run after new files are written: a shell command, or a signal to a pid / pid file."""

    command: str | None = None
    signal: signal.Signals | None = None
    pid: int | None = None
    pid_file: Path | None = None

    def __post_init__(self) -> None:
        if self.pid is not None:
            try:
                parse_pid(str(self.pid))
            except ValueError as exc:
                raise ConfigError(f"pid: {exc}") from None
        if self.command and self.signal:
            raise ConfigError("give a reload command or a reload signal, not both")
        if self.signal and self.pid is None and self.pid_file is None:
            raise ConfigError("a reload signal needs --pid-file (or pid = N in the config)")
        if not self.signal and (self.pid is not None or self.pid_file is not None):
            raise ConfigError("--pid-file needs --reload-signal")

    @property
    def configured(self) -> bool:
        return bool(self.command or self.signal)

    def describe(self) -> str:
        if self.command:
            return f"command {self.command!r}"
        if self.signal:
            target = f"pid file {self.pid_file}" if self.pid_file else f"pid {self.pid}"
            return f"SIG{self.signal.name.removeprefix('SIG')} to {target}"
        return "none"


@dataclass(frozen=True)
class CertSpec:
    name: str
    out: Path
    sans: tuple[str, ...] = ()
    token_file: Path | None = None
    token_env: str = DEFAULT_TOKEN_ENV
    ttl: timedelta | None = None  # parsed here, once; sent to the CA as format_duration text
    key_type: KeyType = KeyType.EC_P256
    schedule: Schedule = field(default_factory=Schedule)
    error_before: Threshold = DEFAULT_ERROR_BEFORE
    reload: ReloadAction = ReloadAction()
    verify_endpoint: tuple[str, int] | None = None
    verify_grace: timedelta = timedelta(seconds=5)
    follow_symlinks: bool = False  # may ``out`` be a symbolic link?

    @property
    def names(self) -> list[str]:
        return list(self.sans) or [self.name]


@dataclass(frozen=True)
class AgentConfig:
    ca_url: str
    root: Path
    certificates: tuple[CertSpec, ...]
    metrics_listen: tuple[str, int] | None = None
    roots_interval: timedelta = timedelta(minutes=1)
    checkin_interval: timedelta | None = None  # how often to check in with the CA (the CLI: 60s)
    trust_formats: str | None = None  # --trust-formats (None: pem)
    trust_password_file: Path | None = None


def parse_signal(text: str) -> signal.Signals:
    name = str(text).strip().upper()
    try:
        if name.isdigit():
            return signal.Signals(int(name))
        return signal.Signals[name if name.startswith("SIG") else "SIG" + name]
    except (KeyError, ValueError):
        raise ConfigError(f"unknown signal {text!r} (e.g. HUP, USR1, TERM)") from None


def parse_host_port(text: str, what: str) -> tuple[str, int]:
    host, sep, port = str(text).rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not host:
        raise ConfigError(f"{what} {text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def parse_fraction(text: str) -> float:
    text = str(text).strip()
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ConfigError(f"invalid jitter {text!r}: write a percentage such as 10%") from None


def _named(key: str, parse: Callable[[Any], T], value: Any) -> T:
    """``parse(value)``, its ValueError prefixed with the setting's name."""
    try:
        return parse(value)
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None


def make_schedule(renew_at: str | None, jitter: str | None, outage_budget: str | None) -> Schedule:
    try:
        return Schedule(renew_at=_named("renew_at", Threshold.parse, renew_at) if renew_at else DEFAULT_RENEW_AT,
                        jitter=parse_fraction(jitter) if jitter else DEFAULT_JITTER,
                        outage_budget=_named("outage_budget", parse_duration, outage_budget) if outage_budget else None)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


_CERT_KEYS = {"name", "sans", "token_file", "token_env", "out", "ttl", "key_type", "renew_at", "jitter",
              "outage_budget", "error_before", "reload_cmd", "reload_signal", "pid_file", "pid",
              "verify_endpoint", "verify_grace", "follow_symlinks"}
_TEXT_KEYS = _CERT_KEYS - {"sans", "pid", "follow_symlinks"}  # TOML lets any key hold any type
_TOP_KEYS = {"ca_url", "root", "metrics_listen", "roots_interval", "checkin", "trust_formats", "trust_password_file",
             "certificate"}


def cert_spec(values: dict[str, Any], base: Path | None = None) -> CertSpec:
    """A CertSpec from a flat mapping (the CLI flags and a TOML table share this)."""
    unknown = set(values) - _CERT_KEYS
    if unknown:
        raise ConfigError(f"unknown certificate setting(s): {', '.join(sorted(unknown))}")
    for key, value in values.items():
        if value is None or key not in _TEXT_KEYS | {"sans"}:  # pid and follow_symlinks are checked below
            continue
        if key == "sans":
            ok, wanted = isinstance(value, (list, tuple)) and all(isinstance(s, str) for s in value), "a list of names"
        else:
            ok, wanted = isinstance(value, str), "a string"
        if not ok:
            raise ConfigError(f"certificate {values.get('name')!r}: {key} must be {wanted}, not {value!r:.60}")

    def path(value: Any) -> Path | None:
        if value in (None, ""):
            return None
        p = Path(str(value)).expanduser()
        return p if p.is_absolute() or base is None else base / p

    name = values.get("name")
    if not name:
        raise ConfigError("every certificate needs a name")
    out = path(values.get("out"))
    if out is None:
        raise ConfigError(f"certificate {name!r}: give out (the directory for tls.crt, tls.key, ca.crt)")
    try:
        key_type = KeyType.parse(values["key_type"]) if values.get("key_type") else KeyType.EC_P256
        ttl = _named("ttl", parse_duration, values["ttl"]) if values.get("ttl") else None
        error_before = (_named("error_before", Threshold.parse, values["error_before"]) if values.get("error_before")
                        else DEFAULT_ERROR_BEFORE)
        grace = (_named("verify_grace", parse_duration, values["verify_grace"]) if values.get("verify_grace")
                 else timedelta(seconds=5))
    except ValueError as exc:
        raise ConfigError(f"certificate {name!r}: {exc}") from None
    follow = values.get("follow_symlinks", False)
    if not isinstance(follow, bool):
        raise ConfigError(f"certificate {name!r}: follow_symlinks must be true or false")
    check_out_dir(out, follow, f"certificate {name!r}")
    sig = values.get("reload_signal")
    pid = values.get("pid")
    if pid is not None:
        try:
            pid = parse_pid(pid if not isinstance(pid, bool) else "")
        except ValueError as exc:
            raise ConfigError(f"certificate {name!r}: pid: {exc}") from None
    reload = ReloadAction(command=values.get("reload_cmd") or None, signal=parse_signal(sig) if sig else None,
                          pid=pid, pid_file=path(values.get("pid_file")))
    endpoint = values.get("verify_endpoint")
    return CertSpec(
        name=str(name), out=out, sans=tuple(values.get("sans") or ()), token_file=path(values.get("token_file")),
        token_env=values.get("token_env") or DEFAULT_TOKEN_ENV, ttl=ttl, key_type=key_type,
        schedule=make_schedule(values.get("renew_at"), values.get("jitter"), values.get("outage_budget")),
        error_before=error_before, reload=reload,
        verify_endpoint=parse_host_port(endpoint, "verify_endpoint") if endpoint else None, verify_grace=grace,
        follow_symlinks=follow,
    )


def check_out_dir(out: Path, follow_symlinks: bool, what: str = "the output directory") -> None:
    """Refuse an output directory that is a symbolic link: whoever can change the link would
    choose where the private key is written. Checked at start and before every write."""
    if not follow_symlinks and out.is_symlink():
        try:
            target = f" (to {out.readlink()})"
        except OSError:
            target = ""
        raise ConfigError(f"{what}: the output directory {out} is a symbolic link{target}: refused. "
                          "Give the real directory, or --follow-symlinks (follow_symlinks = true) "
                          "if the link and where it points are yours", code=Code.SYMLINK_REFUSED)


def load_config_file(path: Path, overrides: dict[str, Any], defaults: dict[str, Any] | None = None) -> AgentConfig:
    """The TOML file; ``overrides`` (non-empty CLI flags) win for the top-level settings, and
    ``defaults`` (the saved client config) fill what neither gives."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read agent config {path}: {exc}") from None
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s): {', '.join(sorted(unknown))}")
    for key in _TOP_KEYS - {"certificate"}:
        if key in data and not isinstance(data[key], str):
            raise ConfigError(f"{path}: {key} must be a string, not {data[key]!r:.60}")
    base = path.parent
    tables = data.get("certificate", [])
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{path}: no [[certificate]] tables")
    specs = tuple(cert_spec(t, base) for t in tables)
    names = [s.out for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: two certificates write to the same directory")
    merged = {**data, **{k: v for k, v in overrides.items() if v}}
    merged.update({k: v for k, v in (defaults or {}).items() if not merged.get(k)})  # absolute paths
    return build(merged, specs, base)


def build(values: dict[str, Any], specs: tuple[CertSpec, ...], base: Path | None = None) -> AgentConfig:
    setup = "or set the client up once: trustyard roots --ca-url URL --fingerprint SHA256 --save"
    if not values.get("ca_url"):
        raise ConfigError(f"give --ca-url (or ca_url in the config), {setup}")
    if not values.get("root"):
        raise ConfigError(f"give --root: the trust bundle that verifies the CA server, {setup}")
    root = Path(str(values["root"])).expanduser()
    if base is not None and not root.is_absolute():
        root = base / root
    listen = values.get("metrics_listen")
    try:
        interval = (_named("roots_interval", parse_duration, values["roots_interval"]) if values.get("roots_interval")
                    else timedelta(minutes=1))
        checkin = (_named("checkin", parse_duration, values["checkin"]) if values.get("checkin")
                   else DEFAULT_CHECKIN)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if checkin <= timedelta(0):
        raise ConfigError("checkin: the interval must be positive")
    password_file = Path(str(values["trust_password_file"])).expanduser() if values.get("trust_password_file") else None
    if password_file is not None and base is not None and not password_file.is_absolute():
        password_file = base / password_file
    return AgentConfig(ca_url=str(values["ca_url"]), root=root, certificates=specs,
                       metrics_listen=parse_host_port(listen, "metrics_listen") if listen else None,
                       roots_interval=interval, checkin_interval=checkin,
                       trust_formats=values.get("trust_formats") or None, trust_password_file=password_file)
