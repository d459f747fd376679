"""The client's one-time setup: which CA to talk to and the root that verifies it.

``trustyard roots --ca-url URL --fingerprint SHA256 --save`` writes it (like ``step ca
bootstrap``); ``issue``, ``renew``, ``revoke``, ``list`` and ``agent`` read it when
``--ca-url`` / ``--root`` are not given. Flags and environment variables always win.

    $TRUSTYARD_CONFIG_DIR, else $XDG_CONFIG_HOME/trustyard, else ~/.config/trustyard:
      client.toml   ca_url = "https://ca.internal:8443"
                    root = "root.crt"              # relative to this directory
                    fingerprint = "<sha256 of the pinned root>"
                    environment = "production"     # optional: this machine's environment
                    [environments]                 # optional: other environments' roots
                    staging = ["sha256:..."]       # (see trustyard.environments)
      root.crt      the CA's trust bundle, fetched over TLS verified against the pinned root
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .environments import Environments, from_table, load_file
from .errors import ConfigError
from .files import write_atomic

CONFIG_FILE = "client.toml"
ROOT_FILE = "root.crt"


@dataclass(frozen=True)
class ClientConfig:
    path: Path  # the client.toml it came from
    ca_url: str
    root: Path
    fingerprint: str = ""


def config_dir() -> Path:
    explicit = os.environ.get("TRUSTYARD_CONFIG_DIR")
    if explicit:
        return Path(explicit).expanduser().absolute()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser().absolute() / "trustyard"


def load() -> ClientConfig | None:
    """The saved client config, or None when there is none (a malformed one is an error)."""
    path = config_dir() / CONFIG_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the client config {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    ca_url, root = data.get("ca_url"), data.get("root")
    if not isinstance(ca_url, str) or not isinstance(root, str) or not ca_url or not root:
        raise ConfigError(f"{path}: needs ca_url and root (rewrite it with `trustyard roots --ca-url URL "
                          "--fingerprint SHA256 --save`)")
    root_path = Path(root).expanduser()
    if not root_path.is_absolute():
        root_path = path.parent / root_path
    return ClientConfig(path=path, ca_url=ca_url, root=root_path, fingerprint=str(data.get("fingerprint", "")))


def save(ca_url: str, fingerprint: str, bundle_pem: str, environment: str | None = None) -> ClientConfig:
    """Write ``root.crt`` then ``client.toml`` (each atomically) in :func:`config_dir`; the
    ``[environments]`` table of a previous client.toml is kept."""
    directory = config_dir()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        others = tomllib.loads((directory / CONFIG_FILE).read_text()).get("environments")
    except (OSError, tomllib.TOMLDecodeError):
        others = None
    write_atomic(directory / ROOT_FILE, bundle_pem)
    # JSON strings are valid TOML basic strings for these values (URL, file name, hex, names).
    text = (f"# written by `trustyard roots --save`; flags (--ca-url, --root) win over it\n"
            f"ca_url = {json.dumps(ca_url)}\nroot = {json.dumps(ROOT_FILE)}\n"
            f"fingerprint = {json.dumps(fingerprint)}\n"
            + (f"environment = {json.dumps(environment)}\n" if environment else ""))
    if isinstance(others, dict) and others:
        text += "\n[environments]\n" + "".join(f"{json.dumps(name)} = {json.dumps(entries)}\n"
                                                for name, entries in others.items())
    write_atomic(directory / CONFIG_FILE, text)
    return ClientConfig(path=directory / CONFIG_FILE, ca_url=ca_url, root=directory / ROOT_FILE,
                        fingerprint=fingerprint)


def load_environments(extra: str | os.PathLike[str] | None = None) -> Environments:
    """This machine's environment and the other environments' roots: a CA home's
    (``$TRUSTYARD_HOME/trustyard.toml``: ``[ca] environment``, ``[environments]``), then
    ``client.toml``'s, then ``extra`` (``--environments FILE``) on top."""
    found = _ca_home_environments()
    found = found.merged(load_file(config_dir() / CONFIG_FILE, missing_ok=True))
    return found.merged(load_file(Path(extra))) if extra else found


def _ca_home_environments() -> Environments:
    home = os.environ.get("TRUSTYARD_HOME")
    path = Path(home).expanduser() / "trustyard.toml" if home else Path.home() / ".trustyard" / "trustyard.toml"
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return Environments()
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the CA configuration {path}: {exc}") from None
    ca = data["ca"] if isinstance(data.get("ca"), dict) else {}
    return from_table({"environments": data.get("environments", {})}, str(path), path.parent,
                      current=ca.get("environment") or None)
