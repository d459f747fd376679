"""The three things the run loop talks to, behind narrow interfaces so the fleet benchmark
and the tests can swap them: the CA (:class:`CABackend`), where files go
(:class:`Output`) and time (:class:`Clock`)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..client import CAClient, IssuedFiles, TrustBundle
from ..files import kept_id, swap_generation, write_atomic
from ..units import format_duration
from ..x509.keys import PrivateKey, load_private_key_pem, private_key_pem, same_public_key
from ..x509.summary import fingerprint_sha256, is_self_signed, load_pem_bundle
from .anchors import Anchors
from .config import check_out_dir
from .trust import TrustOutput

# -- the CA ------------------------------------------------------------------------------------


class CABackend(Protocol):
    def sign(self, csr_pem: bytes, token: str, ttl: timedelta | None) -> IssuedFiles: ...

    def renew(self, csr_pem: bytes, proof: str) -> IssuedFiles: ...

    def roots(self, etag: str | None) -> TrustBundle | None:
        """The bundle (with its version and ETag), or None when it has not changed since ``etag``."""
        ...

    def checkin(self, proof: str) -> dict[str, Any]:
        """The CA's answer to a check-in (``{"accepted", "directives": [{"name", "seconds"?}]}``)."""
        ...


class HTTPBackend:
    """The CA's REST API (``CAClient``); ``/v1/roots`` is polled with If-None-Match. A 503/429
    with Retry-After is not retried here (``retries=0``): it reaches the run loop as
    ``CAUnavailable.retry_after``, which schedules the next attempt.

    The CA's server certificate is verified against the bootstrap ``root`` and the agent's
    anchors (``anchors.py``) found in the bundles it accepted and wrote (``trust``: each
    certificate's ``ca.crt`` with that certificate's anchors). After a root rotation has retired
    the bootstrap root, the CA's certificate chains only to the new root, which became an anchor
    through its cross-certificate. A root merely listed in a bundle, or a file someone put there,
    is not an anchor and is not trusted. When that set changes, the connection is made anew from
    it (a root that left the bundle is trusted no more)."""

    def __init__(self, url: str, root: Path, timeout: float = 10.0,
                 trust: Sequence[tuple[Path, Anchors]] = ()) -> None:
        self.url, self.root, self.timeout = url, root, timeout
        self.trust = list(trust)
        self.client = CAClient(url, verify=str(root), timeout=timeout, retries=0)
        self._trusted = ""  # the anchors' PEM the client trusts beyond --root
        self._stamps: tuple[object, ...] = ()
        self._replaced: list[CAClient] = []  # closed with this backend: other threads may still use them
        self._lock = threading.Lock()

    def _stamp(self) -> tuple[object, ...]:
        stamps: list[object] = []
        for path, anchors in self.trust:
            try:
                stat = path.stat()
                stamps.append((stat.st_mtime_ns, stat.st_size))
            except OSError:
                stamps.append(None)  # not written yet (before the bootstrap)
            stamps.append(frozenset(anchors.fingerprints))
        return tuple(stamps)

    def _anchors_written(self) -> str:
        """The anchors found in the ``ca.crt`` files, as PEM (each once)."""
        seen: dict[str, x509.Certificate] = {}
        for path, anchors in self.trust:
            try:
                bundle = load_pem_bundle(path.read_bytes())
            except (OSError, ValueError):
                continue
            for cert in bundle:
                fingerprint = fingerprint_sha256(cert)
                if fingerprint in anchors.fingerprints and is_self_signed(cert):
                    seen.setdefault(fingerprint, cert)
        return "".join(c.public_bytes(Encoding.PEM).decode() for _, c in sorted(seen.items()))

    def _trust_anchors(self) -> None:
        if not self.trust:
            return
        with self._lock:
            stamp = self._stamp()
            if stamp == self._stamps:
                return
            self._stamps = stamp
            trusted = self._anchors_written()
            if trusted == self._trusted:
                return
            client = CAClient(self.url, verify=str(self.root), timeout=self.timeout, retries=0)
            if trusted:
                client.add_trust(trusted)
            self._replaced.append(self.client)
            self.client, self._trusted = client, trusted

    def sign(self, csr_pem: bytes, token: str, ttl: timedelta | None) -> IssuedFiles:
        self._trust_anchors()
        return self.client.sign(csr_pem, token, format_duration(ttl) if ttl is not None else None)

    def renew(self, csr_pem: bytes, proof: str) -> IssuedFiles:
        self._trust_anchors()
        return self.client.renew(csr_pem, proof)

    def roots(self, etag: str | None) -> TrustBundle | None:
        self._trust_anchors()
        return self.client.bundle_if_changed(etag)

    def checkin(self, proof: str) -> dict[str, Any]:
        self._trust_anchors()
        return self.client.checkin(proof)

    def close(self) -> None:
        for client in (*self._replaced, self.client):
            client.close()


# -- files -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Current:
    chain: list[x509.Certificate]
    key: PrivateKey
    issued_at: datetime  # when it reached this machine (the file's mtime), not the backdated notBefore


class Output(Protocol):
    def load(self) -> Current | None: ...

    def write(self, issued: IssuedFiles, key: PrivateKey) -> None: ...

    def read_ca(self) -> str | None: ...

    def has_bundle(self, bundle: TrustBundle) -> bool:
        """Whether every trust file of ``bundle`` is in place already."""
        ...

    def write_ca(self, bundle: TrustBundle) -> None: ...

    def describe(self) -> str: ...

    def bundle_version(self) -> tuple[int | None, str | None]:
        """``(version, sha256)`` of the trust bundle written: from ``bundle.json`` when there is
        one, else ``(None, SHA-256 of ca.crt)``; ``(None, None)`` when nothing is written yet."""
        ...

    def instance_id(self) -> str:
        """This agent's id for the certificate: made once, then kept (two replicas, two ids)."""
        ...


class FileOutput:
    """Generations swapped in one rename, as Kubernetes' atomic writer does.

        DIR/..2030-01-01T00-00-00.123456789/{tls.key,tls.crt,ca.crt,bundle.json,...}   one generation
        DIR/..data -> ..2030-01-01T00-00-00.123456789                 the current one
        DIR/tls.crt -> ..data/tls.crt  (and tls.key, ca.crt, bundle.json, truststore.*)

    The trust files (``agent/trust.py``: ``ca.crt``, the truststores asked for, ``bundle.json``
    with the bundle's version) are in every generation, so a certificate and the bundle it
    came with, or a new bundle alone, are swapped in by the same rename.

    Each file is written with temp file + fsync + rename (``tls.key`` 0600), the
    generation directory is fsynced, then ``..data`` is replaced by ``rename(2)``. A reader
    that resolves ``..data`` once (or that checks the files did not change while it read
    them, as :mod:`trustyard.tls` does) gets a matching pair, whatever the timing; a reader
    that reloads after the reload action, as nginx does, sees only complete generations.
    The two previous generations are kept so a slow reader's directory does not vanish.
    A directory that is a symbolic link is refused before every write, unless
    ``follow_symlinks``.
    """

    DATA = "..data"
    NAMES = ("tls.key", "tls.crt", "ca.crt")
    KEEP = 2

    def __init__(self, directory: Path, follow_symlinks: bool = False, trust: TrustOutput | None = None) -> None:
        self.directory = directory
        self.follow_symlinks = follow_symlinks
        self.trust = trust or TrustOutput()
        self.cert, self.key, self.ca = directory / "tls.crt", directory / "tls.key", directory / "ca.crt"

    def describe(self) -> str:
        return str(self.directory)

    def load(self) -> Current | None:
        try:
            chain = x509.load_pem_x509_certificates(self.cert.read_bytes())
            key = load_private_key_pem(self.key.read_bytes())
            mtime = datetime.fromtimestamp(os.stat(self.cert).st_mtime, UTC)
        except (OSError, ValueError):
            return None
        if not chain or not same_public_key(chain[0].public_key(), key.public_key()):  # type: ignore[arg-type]
            return None
        issued_at = min(max(chain[0].not_valid_before_utc, mtime), chain[0].not_valid_after_utc)
        return Current(chain, key, issued_at)

    def write(self, issued: IssuedFiles, key: PrivateKey) -> None:
        self._swap({"tls.key": private_key_pem(key), "tls.crt": (issued.certificate_pem + issued.chain_pem).encode(),
                    **self.trust.files(issued.bundle)})

    def read_ca(self) -> str | None:
        try:
            return self.ca.read_text()
        except OSError:
            return None

    def bundle_version(self) -> tuple[int | None, str | None]:
        return bundle_version_of(self.directory)

    def instance_id(self) -> str:
        check_out_dir(self.directory, self.follow_symlinks)
        self.directory.mkdir(parents=True, exist_ok=True)
        return kept_id(self.directory / INSTANCE_FILE)

    def has_bundle(self, bundle: TrustBundle) -> bool:
        return self.trust.in_place(self.directory, bundle)

    def write_ca(self, bundle: TrustBundle | str) -> None:
        check_out_dir(self.directory, self.follow_symlinks)
        files = self.trust.files(bundle if isinstance(bundle, TrustBundle) else TrustBundle(bundle))
        try:
            contents = {"tls.key": self.key.read_bytes(), "tls.crt": self.cert.read_bytes()}
        except OSError:
            for name, data in files.items():  # no identity yet: nothing to keep consistent with
                write_atomic(self.directory / name, data)
            return
        self._swap({**contents, **files})

    def _swap(self, contents: dict[str, bytes]) -> None:
        check_out_dir(self.directory, self.follow_symlinks)
        swap_generation(self.directory, contents, private=frozenset({"tls.key"}), keep=self.KEEP)


INSTANCE_FILE = "agent-instance"
BUNDLE_FILE = "bundle.json"


def bundle_version_of(directory: Path) -> tuple[int | None, str | None]:
    """``(version, sha256)`` of the trust bundle in ``directory``: ``bundle.json`` (``{"version",
    "sha256"}``) when present and well formed, else ``(None, SHA-256 of ca.crt)``."""
    try:
        doc = json.loads((directory / BUNDLE_FILE).read_text())
        version, sha = doc.get("version"), doc.get("sha256")
        if isinstance(sha, str) and (version is None or (isinstance(version, int) and not isinstance(version, bool))):
            return version, sha
    except (OSError, ValueError, AttributeError):
        pass
    try:
        return None, hashlib.sha256((directory / "ca.crt").read_bytes()).hexdigest()
    except OSError:
        return None, None


# -- time --------------------------------------------------------------------------------------


class Clock(Protocol):
    def now(self) -> datetime: ...

    def sleep(self, seconds: float) -> bool:
        """Wait; False when the agent is asked to stop (then return at once)."""
        ...

    def stop(self) -> None: ...


class SystemClock:
    def __init__(self) -> None:
        self._stopping = threading.Event()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> bool:
        return not self._stopping.wait(max(seconds, 0.0))

    def stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()


class FakeClock:
    """Time moves only when someone sleeps."""

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2030, 1, 1, tzinfo=UTC)
        self.stopped = False

    def now(self) -> datetime:
        return self.current

    def sleep(self, seconds: float) -> bool:
        if self.stopped:
            return False
        self.current += timedelta(seconds=max(seconds, 0.0))
        return True

    def advance(self, delta: timedelta) -> None:
        self.current += delta

    def stop(self) -> None:
        self.stopped = True

