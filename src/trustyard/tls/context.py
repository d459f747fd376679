"""``ssl.SSLContext``s that pick up rotated certificate files for new handshakes.

How the reload works, and why this way:

- The context handed to a server (uvicorn, asyncio, ``socketserver``) or a client
  (httpx, requests/urllib3) is a *front* ``ssl.SSLContext`` subclass that is never
  mutated after it is built. Every connection it wraps (``wrap_socket`` for blocking
  sockets, ``wrap_bio`` for asyncio/uvloop transports) is created from the front, so
  everything the caller configured on it (ALPN, verify mode, hostname checking, ciphers)
  applies; then, before the first handshake byte, the connection is moved onto the
  *inner* context that holds the newest certificate, key and trust bundle
  (``SSLObject.context = inner``, i.e. ``SSL_set_SSL_CTX``, the same thing an SNI
  callback does). OpenSSL copies the certificate and key into the connection at that
  moment and verifies the peer against the inner context's store, so open connections
  keep what they were built with and new ones get the new files.
- Loading certificates into a live context is not safe: ``load_cert_chain`` releases the
  GIL between the certificate and the key, leaves a context that failed half-way with
  the new certificate and the old key, and ``load_verify_locations`` can only add trust,
  never remove it. So each rotation builds a fresh inner context and swaps one reference.
- Rotation is noticed by a ``stat`` of the files (inode, size, mtime) when a connection
  is wrapped: three syscalls against a handshake's milliseconds of CPU. Atomic renames
  (``trustyard.files.write_atomic``) change the inode. (Two rotations within one
  filesystem timestamp tick that reuse the first inode and keep the size would look
  unchanged; agents rotate hours apart, and ``reload()`` forces a load.)
- A half-rotated pair (new certificate, old key) never gets loaded: OpenSSL's key check
  refuses it, the old inner context stays in use, and the load is retried as soon as
  the files change again (the agent's second rename). Files that change while they are
  being read are detected by a second ``stat`` and retried at the next connection.
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography import x509

from ..errors import ConfigError
from ..units import format_time
from ..x509.summary import serial_text

log = logging.getLogger("trustyard.tls")

ClientAuth = Literal["none", "optional", "required"]
# trustyard: allow-insecure client_auth="none" means no client certificate is asked for
_VERIFY_MODES = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}

CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
CA_FILE = "ca.crt"


@dataclass(frozen=True)
class TLSFiles:
    """Where the certificate chain, its key and the trust bundle live.

    ``from_dir`` uses the Kubernetes TLS secret names the agent writes: ``tls.crt``
    (leaf then intermediates), ``tls.key`` and ``ca.crt``.
    """

    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None

    @classmethod
    def from_dir(cls, directory: str | os.PathLike[str], *, identity: bool = True) -> TLSFiles:
        base = Path(directory)
        if identity:
            return cls(base / CERT_FILE, base / KEY_FILE, base / CA_FILE)
        return cls(None, None, base / CA_FILE)

    @classmethod
    def resolve(
        cls, directory: str | os.PathLike[str] | None, cert: str | os.PathLike[str] | None,
        key: str | os.PathLike[str] | None, ca: str | os.PathLike[str] | None,
    ) -> TLSFiles:
        """Explicit paths win over the directory's conventional names."""
        base = cls.from_dir(directory) if directory is not None else cls()
        return cls(
            Path(cert) if cert is not None else base.cert,
            Path(key) if key is not None else base.key,
            Path(ca) if ca is not None else base.ca,
        )

    def paths(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.cert, self.key, self.ca) if p is not None)

    def stamp(self) -> tuple[tuple[int, int, int, int], ...]:
        """What changes when any file is replaced: (device, inode, size, mtime_ns) per file."""
        out = []
        for path in self.paths():
            try:
                st = os.stat(path)
            except FileNotFoundError:
                out.append((0, 0, -1, 0))
                continue
            out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(out)


@dataclass(frozen=True)
class Loaded:
    """One generation of material: the inner context and what is in it."""

    context: ssl.SSLContext
    stamp: tuple[tuple[int, int, int, int], ...]
    serial: int | None
    not_after: str | None
    bundle_sha256: str | None = None  # SHA-256 of the ca.crt bytes loaded (what the CA's fleet compares)


class ReloadingContext(ssl.SSLContext):
    """An ``ssl.SSLContext`` whose connections use the newest files (see the module doc).

    Build it with :func:`server_context` or :func:`client_context`. ``serial`` is the
    serial number of the certificate new connections present; ``last_error`` says why
    the newest files were not loaded (for example a certificate that does not match
    the key yet), or is ``None``.
    """

    # Set by the builders right after __new__; SSLContext forbids extra __init__ arguments.
    _files: TLSFiles
    _password: bytes | None
    _purpose_server: bool
    _lock: threading.Lock
    _current: Loaded
    _attempted: tuple[tuple[int, int, int, int], ...]
    last_error: str | None

    @property
    def files(self) -> TLSFiles:
        return self._files

    @property
    def serial(self) -> int | None:
        return self._current.serial

    @property
    def bundle_sha256(self) -> str | None:
        """SHA-256 of the trust bundle (``ca.crt``) new connections verify peers with."""
        return self._current.bundle_sha256

    @property
    def inner(self) -> ssl.SSLContext:
        """The context new connections are moved onto (checks the files first)."""
        return self._refresh().context

    def reload(self) -> bool:
        """Load the files now; True when a new generation is in use."""
        with self._lock:
            return self._load_locked(force=True)

    def _refresh(self) -> Loaded:
        stamp = self._files.stamp()
        if stamp != self._current.stamp and stamp != self._attempted:
            with self._lock:
                if stamp != self._current.stamp and stamp != self._attempted:
                    self._load_locked(force=False)
        return self._current

    def _load_locked(self, force: bool) -> bool:
        before = self._files.stamp()
        try:
            loaded = _build_inner(self._files, self._purpose_server, self, before, self._password)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._attempted = before
            self.last_error = f"kept the previous certificate: {exc}"
            log.warning("trustyard.tls: %s", self.last_error)
            return False
        if self._files.stamp() != before:
            # A file was replaced while we read it: do not trust the mix; retry next time.
            self._attempted = ()
            self.last_error = "files changed while loading; will retry"
            return False
        if not force and loaded.serial == self._current.serial and loaded.stamp == self._current.stamp:
            return False
        self._current = loaded
        self._attempted = before
        self.last_error = None
        log.info("trustyard.tls: loaded certificate serial %s (not after %s)",
                 serial_text(loaded.serial) if loaded.serial is not None else "-", loaded.not_after)
        return True

    # Every connection is created from the front, then moved onto the newest inner context.
    # These two hooks are where ssl.SSLSocket (wrap_socket, and connect() of a socket
    # wrapped before it was connected) and ssl.SSLObject (wrap_bio: asyncio, uvloop,
    # anyio) create the OpenSSL connection, so one override covers every path.

    def _wrap_socket(self, *args: Any, **kwargs: Any) -> Any:
        inner = self.inner
        sslobj = super()._wrap_socket(*args, **kwargs)  # type: ignore[misc]
        sslobj.context = inner
        return sslobj

    def _wrap_bio(self, *args: Any, **kwargs: Any) -> Any:
        inner = self.inner
        sslobj = super()._wrap_bio(*args, **kwargs)  # type: ignore[misc]
        sslobj.context = inner
        return sslobj


def _first_certificate(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    try:
        return x509.load_pem_x509_certificates(data)[0]
    except ValueError as exc:
        raise ValueError(f"{path}: no PEM certificate: {exc}") from None


def _build_inner(files: TLSFiles, server: bool, front: ssl.SSLContext,
                 stamp: tuple[tuple[int, int, int, int], ...], password: bytes | None = None) -> Loaded:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = front.minimum_version
    ctx.maximum_version = front.maximum_version
    serial = not_after = bundle = None
    if files.cert is not None:
        assert files.key is not None
        # OpenSSL checks that the key belongs to the certificate and raises
        # "KEY_VALUES_MISMATCH" for a half-rotated pair: that is what keeps it out.
        ctx.load_cert_chain(files.cert, files.key, password=password)
        leaf = _first_certificate(files.cert)
        serial, not_after = leaf.serial_number, format_time(leaf.not_valid_after_utc)
    if files.ca is not None:
        ca_bytes = files.ca.read_bytes()
        ctx.load_verify_locations(cadata=ca_bytes.decode("ascii"))
        bundle = hashlib.sha256(ca_bytes).hexdigest()
    # The connection keeps the front's verify mode; the inner one only lends keys and trust.
    if server:
        ctx.verify_mode = front.verify_mode
    return Loaded(ctx, stamp, serial, not_after, bundle)


def _new_front(files: TLSFiles, server: bool, minimum_version: ssl.TLSVersion,
               password: bytes | None = None) -> ReloadingContext:
    front = ReloadingContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    front.minimum_version = minimum_version
    front._files = files
    front._password = password
    front._purpose_server = server
    front._lock = threading.Lock()
    front._attempted = ()
    front.last_error = None
    return front


def _first_load(front: ReloadingContext) -> ReloadingContext:
    for path in front.files.paths():
        if not path.is_file():
            raise ConfigError(f"TLS file {path} does not exist")
    stamp = front.files.stamp()
    try:
        front._current = _build_inner(front.files, front._purpose_server, front, stamp, front._password)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"cannot load TLS files {', '.join(map(str, front.files.paths()))}: {exc}") from exc
    front._attempted = stamp
    return front


def server_context(
    directory: str | os.PathLike[str] | None = None, *,
    cert: str | os.PathLike[str] | None = None,
    key: str | os.PathLike[str] | None = None,
    ca: str | os.PathLike[str] | None = None,
    client_auth: ClientAuth = "required",
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
    key_password: bytes | None = None,
) -> ReloadingContext:
    """A server context from an agent's output directory or explicit paths.
    ``key_password``: for an encrypted key (the CA server's own, ``server/tls.key``).

    ``client_auth``: ``"required"`` (mTLS: the handshake fails without a client
    certificate chaining to ``ca.crt``), ``"optional"`` (a certificate is verified when
    sent; let :class:`~trustyard.tls.IdentityMiddleware` answer 401 when it is not) or
    ``"none"`` (``ca.crt`` is then not needed). Raises ``ConfigError`` when the files
    cannot be loaded at all.
    """
    if client_auth not in _VERIFY_MODES:
        raise ValueError(f"client_auth must be one of {', '.join(_VERIFY_MODES)}, not {client_auth!r}")
    files = TLSFiles.resolve(directory, cert, key, ca)
    if files.cert is None or files.key is None:
        raise ValueError("a server context needs a certificate and its key (directory or cert=/key=)")
    if client_auth == "none":
        files = TLSFiles(files.cert, files.key, Path(ca) if ca is not None else None)
    elif files.ca is None:
        raise ValueError("verifying client certificates needs a trust bundle (directory or ca=)")
    front = _new_front(files, server=True, minimum_version=minimum_version, password=key_password)
    front.verify_mode = _VERIFY_MODES[client_auth]
    return _first_load(front)


def client_context(
    directory: str | os.PathLike[str] | None = None, *,
    cert: str | os.PathLike[str] | None = None,
    key: str | os.PathLike[str] | None = None,
    ca: str | os.PathLike[str] | None = None,
    present_certificate: bool = True,
    check_hostname: bool = True,
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
) -> ReloadingContext:
    """A client context that trusts ``ca.crt`` and presents ``tls.crt``/``tls.key``.

    Give ``present_certificate=False`` (or only ``ca=``) for one-way TLS. Pass the result
    as ``httpx.Client(verify=ctx)`` or mount :class:`trustyard.tls.requests.ContextAdapter`
    on a ``requests.Session``. The server is always verified against the bundle.
    """
    files = TLSFiles.resolve(directory, cert, key, ca)
    if files.ca is None:
        raise ValueError("a client context needs a trust bundle (directory or ca=)")
    if not present_certificate or (directory is None and cert is None and key is None):
        files = TLSFiles(None, None, files.ca)
    elif (files.cert is None) != (files.key is None):
        raise ValueError("give both the certificate and its key, or neither")
    front = _new_front(files, server=False, minimum_version=minimum_version)
    front.check_hostname = check_hostname
    front.verify_mode = ssl.CERT_REQUIRED
    return _first_load(front)
