"""One interface, two ways to reach the authority: in-process from a CA home (``LocalCA``)
or over HTTPS (``trustyard.client.CAClient``). Commands don't care which."""

from __future__ import annotations

import builtins
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import click

from ..ca.config import Config, load_config, resolve_home
from ..errors import ConfigError, NotFound
from ..units import format_time

if TYPE_CHECKING:  # imported where used: a local command needs no HTTP client, a remote one no store
    from ..ca.authority import Authority, Issued
    from ..client import CAClient, IssuedFiles


class CA(Protocol):
    def sign(self, csr_pem: bytes | str, token: str, ttl: str | None = None) -> IssuedFiles: ...
    def renew(self, csr_pem: bytes | str, proof: str) -> IssuedFiles: ...
    def revoke(self, serial: str, reason: str = "unspecified", proof: str | None = None,
               admin_token: str | None = None) -> dict[str, Any]: ...
    def list(self, admin_token: str, status: str | None = None, limit: int = 1000) -> list[dict[str, Any]]: ...
    def certificate_status(self, serial: str) -> dict[str, Any]: ...
    def fleet(self, admin_token: str, stale: bool = False) -> builtins.list[dict[str, Any]]: ...
    def close(self) -> None: ...


class LocalCA:
    """The authority loaded from a home, acting as the administrator (local file access is the credential)."""

    def __init__(self, authority: Authority, actor: str) -> None:
        self.authority = authority
        self.actor = actor

    def mint(self, name: str, sans: list[str], cert_ttl: str | None, provisioner: str = "default") -> str:
        from ..ca.authority import duration_field

        lifetime = duration_field("cert_ttl", cert_ttl) if cert_ttl else None
        return self.authority.mint_token(provisioner, name, sans, cert_ttl=lifetime, actor=self.actor)

    def sign(self, csr_pem: bytes | str, token: str, ttl: str | None = None) -> IssuedFiles:
        from ..ca.authority import duration_field

        lifetime = duration_field("ttl", ttl) if ttl else None
        return issued_files(self.authority.issue_for_token(csr_pem, token, lifetime, actor=self.actor))

    def renew(self, csr_pem: bytes | str, proof: str) -> IssuedFiles:
        return issued_files(self.authority.renew(csr_pem, proof, actor=self.actor))

    def revoke(self, serial: str, reason: str = "unspecified", proof: str | None = None,
               admin_token: str | None = None) -> dict[str, Any]:
        return self.authority.revoke(serial, reason, admin=True, actor=self.actor).to_json()

    def list(self, admin_token: str, status: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        return [r.to_json() for r in self.authority.store.list(status, limit)]

    def certificate_status(self, serial: str) -> dict[str, Any]:
        record = self.authority.get(serial)
        if record is None:
            raise NotFound(f"no certificate with serial {serial}")
        return record.to_json()

    def fleet(self, admin_token: str, stale: bool = False) -> builtins.list[dict[str, Any]]:
        from ..ca.fleet import Fleet
        from ..store.fleet_store import FleetStore

        return Fleet(self.authority, FleetStore(self.authority.store)).view(stale)

    def close(self) -> None:
        self.authority.store.close()


def issued_files(issued: Issued) -> IssuedFiles:
    """What the authority issued, in the shape the HTTPS client returns and writes to disk."""
    from ..client import IssuedFiles

    return IssuedFiles(serial=issued.record.serial, not_before=format_time(issued.record.not_before),
                       not_after=format_time(issued.record.not_after), certificate_pem=issued.certificate_pem,
                       chain_pem=issued.chain_pem, roots_pem=issued.roots_pem)


def cli_user() -> str:
    """Who runs this command, for the audit log."""
    try:
        import getpass

        return getpass.getuser()
    except Exception:
        return str(os.getuid())


def password_for(config: Config, password_file: str | None) -> bytes | None:
    """The key password an existing CA needs (none when its keys are stored unencrypted)."""
    from ..ca.home import read_password

    return read_password(password_file, insecure_no_password=not config.encrypted_keys)


def local_ca(home: str | None, password_file: str | None, minting: bool = False, quick: bool = False) -> LocalCA:
    """The home's authority; ``quick`` for a command that only mints tokens or lists the ledger
    (on a SQLite home it runs on ``sqlite3`` alone, see ``store.lite``)."""
    from ..ca.home import load_authority

    path = resolve_home(home)
    config = load_config(path)
    authority = load_authority(path, password_for(config, password_file), minting=minting, config=config,
                               migrate=False, quick=quick)
    return LocalCA(authority, actor=f"cli:{cli_user()}")


def client_defaults(home: str | None, ca_url: str | None, root: str | None) -> tuple[str | None, str | None]:
    """``--ca-url`` / ``--root`` as given, else from the client config `roots --save` wrote.
    ``--home`` without ``--ca-url`` means the local CA: the saved config is not consulted."""
    if home and not ca_url:
        return ca_url, root
    from .. import clientconfig

    saved = clientconfig.load()
    if saved is None:
        return ca_url, root
    return ca_url or saved.ca_url, root or str(saved.root)


def remote_ca(ca_url: str | None, root: str | None) -> CAClient:
    if not ca_url or not root:
        raise click.UsageError("give --ca-url URL and --root FILE (the trust bundle), or set the client up once "
                               "with `trustyard roots --ca-url URL --fingerprint SHA256 --save`, or --home for "
                               "a local CA")
    if not Path(root).is_file():
        raise ConfigError(f"root {root}: no such file (fetch it with `trustyard roots --ca-url {ca_url} "
                          "--fingerprint SHA256 --save`)")
    from ..client import CAClient

    return CAClient(ca_url, verify=root)


def connect(home: str | None, ca_url: str | None, root: str | None, password_file: str | None = None,
            minting: bool = False, quick: bool = False) -> CA:
    ca_url, root = client_defaults(home, ca_url, root)
    if ca_url:
        return remote_ca(ca_url, root)
    return local_ca(home, password_file, minting=minting, quick=quick)


def admin_token_from(home: str | None, token_file: str | None) -> str:
    candidates = [Path(token_file)] if token_file else [resolve_home(home) / "admin.token"]
    for candidate in candidates:
        try:
            return candidate.read_text().strip()
        except OSError:
            continue
    raise ConfigError("administrator token not found: give --admin-token-file FILE")
