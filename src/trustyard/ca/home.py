"""The CA home: creating it (``init``) and loading an Authority from it.

    trustyard.toml            configuration
    trustyard.db              SQLite ledger and audit log (default)
    ca/root.crt, root.key     the root (the key may be moved offline after init)
    ca/intermediate.*         the issuing CA
    ca/roots.pem              the roots the trust bundle is composed of (ca/bundle.py; its
                              versions are in the database, table bundle_versions)
    ca/rotations/N/           rotation N's material (ca/rotation_material.py); the newest one that
                              reached ``active`` issues instead of ca/intermediate.*
    ca/audit.key              the audit log's HMAC key (not in the database), ca/audit.checkpoint
    server/tls.crt, tls.key   the CA server's own TLS certificate (issued by the root)
    provisioners/NAME.key     bootstrap-token signing key (and NAME.pub)
    admin.token               the administrator's bearer token (only its hash is in the config)
    migrate/backups/ID/SEQ/   `trustyard migrate`'s backups of every file a step wrote (0600)
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding

from ..environments import check_name
from ..errors import Code, ConfigError, Conflict
from ..files import write_atomic, write_exclusive, write_private
from ..policy.patterns import name_limits, parse_patterns
from ..store import version
from ..store.lite import LiteStore, sqlite_file
from ..store.seal import AuditSeal, create_key
from ..units import parse_duration
from ..x509.keys import KeyType, PrivateKey, generate_private_key, load_private_key_pem, private_key_pem, public_key_pem
from ..x509.names import parse_names
from ..x509.profiles import LeafSpec, intermediate_builder, leaf_builder, new_serial, root_builder, sign
from ..x509.summary import fingerprint_sha256, load_pem_bundle
from . import bundle
from .alerts import Alerter, ca_lifetime, fleet_stale, rotation_stuck
from .authority import Authority, Provisioner
from .config import CONFIG_NAME, DEFAULT_ALLOW, Config, ProvisionerConfig, load_config
from .crl import CrlScheme

if TYPE_CHECKING:  # the SQL engine is imported where a store is opened on it
    from ..store import SqlStore

PASSWORD_ENV = "TRUSTYARD_PASSWORD"


def read_password(password_file: str | None, insecure_no_password: bool) -> bytes | None:
    if password_file:
        try:
            password = Path(password_file).read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise ConfigError(f"cannot read password file {password_file}: {exc.strerror}") from None
        if not password:
            raise ConfigError(f"password file {password_file} is empty")
        return password
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV].encode()
    if insecure_no_password:
        return None
    raise ConfigError("the CA keys need a password: give --password-file FILE or set TRUSTYARD_PASSWORD "
                      "(or --insecure-no-password for a throwaway demo CA)", code=Code.NO_PASSWORD)


@dataclass(frozen=True)
class InitOptions:
    key_type: KeyType = KeyType.EC_P256
    allow: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    root_ttl: str = "3650d"
    intermediate_ttl: str = "365d"
    name: str = "trustyard"
    listen: str = "127.0.0.1:8443"
    database_url: str = "sqlite:///trustyard.db"
    environment: str = ""  # names the root and intermediate ("trustyard staging Root CA") and is recorded


@dataclass(frozen=True)
class InitResult:
    config: Config
    root_fingerprint: str
    allow: tuple[str, ...]
    allow_is_default: bool


def init_home(home: Path, password: bytes | None, options: InitOptions = InitOptions()) -> InitResult:
    """Create a CA in ``home``; refuses when one is there. Nothing is half-written on failure
    that a second ``init`` would trip over: the config file, written last, marks a complete CA."""
    if (home / CONFIG_NAME).exists() or (home / "ca" / "root.key").exists() or (home / "ca" / "root.crt").exists():
        raise Conflict(f"a CA already exists in {home}: refusing to overwrite it (use another --home)",
                       code=Code.CA_EXISTS)
    allow = tuple(options.allow) or DEFAULT_ALLOW
    try:
        patterns = parse_patterns(allow)
        server_names = parse_names(["localhost", "127.0.0.1", "::1", *options.dns])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    try:
        environment = check_name(options.environment) if options.environment else ""
    except ValueError as exc:
        raise ConfigError(f"--environment: {exc}") from None
    try:
        root_ttl = parse_duration(options.root_ttl)
    except ValueError as exc:
        raise ConfigError(f"root_ttl: {exc}") from None
    try:
        intermediate_ttl = parse_duration(options.intermediate_ttl)
    except ValueError as exc:
        raise ConfigError(f"intermediate_ttl: {exc}") from None
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    config = Config(home=home, encrypted_keys=password is not None, database_url=options.database_url,
                    listen=options.listen, url=f"https://{_url_host(options.listen)}", environment=environment)
    prefix = f"{options.name} {environment}" if environment else options.name
    now = datetime.now(UTC) - timedelta(minutes=1)

    root_key = generate_private_key(options.key_type)
    root = sign(root_builder(root_key.public_key(), f"{prefix} Root CA", now, root_ttl,
                             organization=options.name), root_key)
    inter_key = generate_private_key(options.key_type)
    inter = sign(intermediate_builder(inter_key.public_key(), root, f"{prefix} Intermediate CA", now,
                                      intermediate_ttl, limits=name_limits(patterns), organization=options.name),
                 root_key)
    # The CA server's certificate comes from the root: the intermediate may be name-constrained
    # away from localhost, and the server must stay reachable through an intermediate rotation.
    tls_key = generate_private_key(KeyType.EC_P256)
    tls = sign(leaf_builder(LeafSpec(public_key=tls_key.public_key(), names=tuple(server_names),
                                     not_before=now, not_after=inter.not_valid_after_utc, serial=new_serial(),
                                     eku=("serverAuth",), common_name="localhost"), root), root_key)
    prov_key = generate_private_key(KeyType.EC_P256)
    admin_token = secrets.token_urlsafe(32)

    pem = Encoding.PEM
    write_exclusive(config.path(config.root_key), private_key_pem(root_key, password))
    write_exclusive(config.path(config.intermediate_key), private_key_pem(inter_key, password))
    write_exclusive(config.path(config.tls_key), private_key_pem(tls_key, password))
    write_exclusive(config.path("provisioners/default.key"), private_key_pem(prov_key, password))
    write_atomic(config.path("provisioners/default.pub"), public_key_pem(prov_key.public_key()))
    write_atomic(config.path(config.root_cert), root.public_bytes(pem))
    write_atomic(config.path(bundle.ROOTS_FILE), root.public_bytes(pem))
    write_atomic(config.path(config.intermediate_cert), inter.public_bytes(pem))
    write_atomic(config.path(config.tls_cert), tls.public_bytes(pem))
    write_private(home / "admin.token", admin_token + "\n")

    provisioners = (
        ProvisionerConfig(name="default", type="token", key="provisioners/default.key",
                          public_key="provisioners/default.pub", allow=allow),
        ProvisionerConfig(name="acme", type="acme", allow=allow),
    )
    config = replace(config, provisioners=provisioners,
                     admin_token_sha256=hashlib.sha256(admin_token.encode()).hexdigest())
    create_key(config.path("ca"))
    store = open_home_store(config)
    bundle.publish(store, [root])  # version 1
    store.close()
    if config.db_url.startswith("sqlite:///"):
        db_file = Path(config.db_url[len("sqlite:///"):])
        for path in (db_file, Path(f"{db_file}-wal"), Path(f"{db_file}-shm")):
            if path.exists():
                os.chmod(path, 0o600)
    write_private(home / CONFIG_NAME, tomli_w.dumps(config.to_toml()))
    return InitResult(config=config, root_fingerprint=fingerprint_sha256(root), allow=allow,
                      allow_is_default=not options.allow)


def _url_host(listen: str) -> str:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"{host}:{port}"


def open_home_store(config: Config, migrate: bool = True) -> SqlStore:
    """The home's database, its audit log keyed with the home's ``ca/audit.key``. ``migrate``
    brings its schema to the newest revision (``init``, ``serve``, ``db upgrade``); without it
    an old schema is refused with the command to run (``store.version.check``)."""
    from ..store import open_store

    if not migrate:
        version.check(config.db_url, config.home)
    return open_store(config.db_url, migrate=migrate, seal=AuditSeal(config.path("ca")))


def open_quick_store(config: Config) -> SqlStore | LiteStore:
    """The home's database for a command that only mints a token or reads the ledger: a SQLite
    file on the standard library's ``sqlite3`` (``store.lite``, no SQLAlchemy to import), any
    other database as ``open_home_store`` opens it. The schema must be the newest already."""
    path = sqlite_file(config.db_url)
    if path is None:
        return open_home_store(config, migrate=False)
    version.check(config.db_url, config.home)
    return LiteStore(path, seal=AuditSeal(config.path("ca")))


def load_key(config: Config, relative: str, password: bytes | None) -> PrivateKey:
    path = config.path(relative)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read key {path}: {exc.strerror}") from None
    try:
        return load_private_key_pem(data, password if config.encrypted_keys else None)
    except ValueError as exc:
        raise ConfigError(f"cannot load key {path}: {exc}", code=Code.BAD_PASSWORD) from None


def load_certs(config: Config, relative: str) -> list[x509.Certificate]:
    path = config.path(relative)
    try:
        return load_pem_bundle(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read certificates from {path}: {exc}") from None


@overload
def load_authority(home: Path, password: bytes | None, *, minting: bool = False, config: Config | None = None,
                   migrate: bool = True, quick: Literal[False] = False) -> Authority[SqlStore]: ...


@overload
def load_authority(home: Path, password: bytes | None, *, minting: bool = False, config: Config | None = None,
                   migrate: bool = True, quick: bool) -> Authority[Any]: ...


def load_authority(home: Path, password: bytes | None, *, minting: bool = False,
                   config: Config | None = None, migrate: bool = True, quick: bool = False) -> Authority[Any]:
    """Everything the authority needs: the intermediate's key, never the root's. ``migrate``:
    as in ``open_home_store``; ``quick``: on ``open_quick_store``, for an authority that only
    mints tokens (``store.audit``, ``store.note_refusal``) and lists the ledger (``store.list``):
    on a SQLite home its store is a ``LiteStore``, which keeps no other part of the ledger."""
    config = config or load_config(home)
    if config.encrypted_keys and password is None:
        raise ConfigError("the CA keys are encrypted: give --password-file or TRUSTYARD_PASSWORD",
                          code=Code.NO_PASSWORD)
    roots = bundle.roots_of(config)
    provisioners = {}
    for pc in config.provisioners:
        public_key = private_key = None
        if pc.public_key:
            try:
                public_key = serialization.load_pem_public_key(config.path(pc.public_key).read_bytes())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"provisioner {pc.name!r}: cannot load public key: {exc}") from None
        if minting and pc.key:
            private_key = load_key(config, pc.key, password)
        provisioners[pc.name] = Provisioner(name=pc.name, policy=pc.policy(config.backdate),
                                            public_key=public_key, private_key=private_key,  # type: ignore[arg-type]
                                            ocsp_url=config.ocsp_responder_url if pc.ocsp else None, crl=pc.crl)
    if quick:  # mints tokens, reads the ledger: the home's own intermediate, no rotation lookup
        from .signer import KeySigner

        inter = load_certs(config, config.intermediate_cert)[0]
        signer = KeySigner(inter, load_key(config, config.intermediate_key, password))
        return Authority(signer, [inter], roots, open_quick_store(config), provisioners)
    store = open_home_store(config, migrate=migrate)
    # The issuing material: the home's intermediate, or the one the newest active rotation made.
    from ..store.rotations import RotationStore
    from .rotation_material import HomeMaterial

    try:
        material = HomeMaterial(config, password, RotationStore(store)).issuing(roots)
    except BaseException:
        store.close()
        raise
    authority = Authority(material.signer, list(material.chain), roots, store, provisioners)
    authority.use(material)
    authority.crl = CrlScheme.of(config.url, config.crl)
    from .emergency import Emergencies

    authority.guard = Emergencies(store, clock=authority.clock, renewable_for=config.renewal.after_expiry,
                                  listeners=authority.listeners)
    authority.renew_after_expiry = config.renewal.after_expiry
    return authority


def home_alerter(config: Config, store: SqlStore) -> Alerter | None:
    """The webhook alerter of ``[alerts]`` (None without a webhook): the CA's roots and the
    intermediate that issues now (a rotation's, once active), the fleet's stale parties, and a
    rotation past its state's deadline, each read afresh at every evaluation."""
    if not config.alerts.webhook:
        return None
    from ..store.fleet_store import FleetStore
    from ..store.rotations import RotationStore
    from .fleet import party_state
    from .rotation_material import HomeMaterial

    rotations, fleet = RotationStore(store), FleetStore(store)

    def certs() -> list[tuple[str, x509.Certificate]]:
        issuing = HomeMaterial(config, None, rotations).issuing_paths()[0]
        return [*(("root", c) for c in bundle.roots_of(config) if c.subject == c.issuer),
                ("intermediate", load_certs(config, issuing)[0])]

    def stale(now: datetime) -> list[str]:
        return [p.party for p in fleet.parties() if party_state(p, now) == "stale"]

    def deadline() -> tuple[str, str, datetime] | None:
        row = rotations.unfinished()
        return (f"{row.kind}-{row.id}", row.state, row.deadline_at) if row and row.deadline_at else None

    return Alerter.from_config(config.alerts, [
        ca_lifetime(certs, config.alerts.ca_warning_left, config.alerts.ca_critical_left),
        fleet_stale(stale), rotation_stuck(deadline)])
