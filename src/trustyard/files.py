"""Crash-safe file output: a reader sees the old file or the new one, never half of one;
and, for files that belong together (a certificate and its key), the old set or the new set."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path


def write_atomic(path: str | os.PathLike[str], data: bytes | str, mode: int = 0o644, durable: bool = True) -> None:
    """Write to a temp file in the same directory, fsync, chmod, rename, fsync the directory.

    ``durable=False`` leaves out both fsyncs: readers still see the old file or the new one,
    but after a power cut the old one may be back (for files that may lag, never lead)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_dir(target.parent)


def write_private(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Keys and secrets: mode 0600 from the first byte."""
    write_atomic(path, data, mode=0o600)


def write_exclusive(path: str | os.PathLike[str], data: bytes | str, mode: int = 0o600) -> None:
    """Create a file that must not exist yet (refuse to overwrite CA material)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(directory: Path) -> None:
    _fsync(directory, OSError)  # a directory that cannot be opened (some filesystems): nothing to sync


DATA = "..data"


def swap_generation(directory: str | os.PathLike[str], contents: dict[str, bytes], private: frozenset[str] = frozenset(),
                    keep: int = 2) -> None:
    """Replace a set of files at once, as Kubernetes' atomic writer does::

        DIR/..2030-01-01T00-00-00.xxxx/{tls.key,tls.crt,ca.crt}   one generation
        DIR/..data -> ..2030-01-01T00-00-00.xxxx                 the current one, swapped by rename(2)
        DIR/tls.crt -> ..data/tls.crt  (one link per name)

    Separate renames of tls.crt and tls.key leave a window where a reader pairs the new
    certificate with the old key; here a reader that resolves ``..data`` once gets one
    generation. Names in ``private`` are written 0600. ``keep`` older generations stay, so
    a slow reader's directory does not vanish under it. A plain file that stands where a
    link goes (an older layout) is replaced by the link.
    """
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%S")
    generation = Path(tempfile.mkdtemp(prefix=f"..{stamp}.", dir=target))
    os.chmod(generation, 0o755)
    for name, data in contents.items():
        write_atomic(generation / name, data, mode=0o600 if name in private else 0o644)
    _fsync_dir(generation)
    _replace_symlink(target / DATA, generation.name)
    for name in contents:
        link = target / name
        wanted = f"{DATA}/{name}"
        if not (link.is_symlink() and os.readlink(link) == wanted):
            _replace_symlink(link, wanted)
    _fsync_dir(target)
    old = sorted((p for p in target.glob("..*") if p.is_dir() and not p.is_symlink() and p != generation),
                 key=lambda p: p.stat().st_mtime_ns)
    for stale in old[:-keep] if len(old) > keep else []:
        shutil.rmtree(stale, ignore_errors=True)


def _replace_symlink(link: Path, target: str) -> None:
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def fsync_if_present(path: str | os.PathLike[str]) -> None:
    """fsync ``path`` if it exists (a SQLite ``-wal`` file that a checkpoint may have removed:
    then its frames are already in the synced database file)."""
    _fsync(path, FileNotFoundError)


def _fsync(path: str | os.PathLike[str], absent: type[OSError]) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except absent:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def kept_id(path: Path) -> str:
    """The id in ``path``, made (16 hex digits) and written there the first time; an id for this
    process only where it cannot be written (a read-only directory)."""
    import secrets

    with contextlib.suppress(OSError):
        text = path.read_text().strip()
        if text:
            return text
    text = secrets.token_hex(8)
    with contextlib.suppress(OSError):
        write_atomic(path, text + "\n")
    return text

