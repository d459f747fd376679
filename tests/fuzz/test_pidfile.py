"""The agent's pid-file reader.

The reader the agent signals through, ``trustyard.agent.actions.read_pid_file(path) -> int``,
returns a pid greater than 1 or raises ``ReloadFailed`` (the agent's designed error for a
reload it will not do); a pid file writable by others is refused whatever it says.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from trustyard.agent.actions import ReloadFailed, read_pid_file

from .strategies import budget

pid_texts = st.one_of(
    st.builds(lambda pre, n, post: f"{pre}{n}{post}", st.sampled_from(["", " ", "+", "-", "0", "\n", "\x00"]),
              st.integers(-(2**70), 2**70), st.sampled_from(["", "\n", " 77\n", "x", "\x00", ".0", "e3"])),
    st.text(max_size=30),
    st.sampled_from(["", "\n", "1", "0", "-1", "-5", "\uff11\uff12\uff13", "\u0661\u0662", "4194305", "99999999999999999999", "0x10",
                     "1_000", "12 34", "nan"]),
)


def _read(path: Path) -> int | None:
    try:
        pid = read_pid_file(path)
    except ReloadFailed as exc:
        assert str(exc)
        return None
    assert isinstance(pid, int) and not isinstance(pid, bool)
    return pid


@budget(150)
@given(st.one_of(pid_texts.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=40)))
@example(b"1\n")
@example(b"0\n")
@example(b"-1\n")
@example(b"99999999999999999999\n")
@example(b"\xff\xfe")
def test_pid_file_reader_returns_a_pid_above_1_or_refuses(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "service.pid"
    path.write_bytes(content)
    os.chmod(path, 0o644)
    pid = _read(path)
    if pid is not None:
        assert 1 < pid < 2**31, pid
        first = content.split()[0]  # the number the file holds, in ASCII digits: nothing guessed
        assert first.lstrip(b"+").isdigit() and int(first) == pid, (content, pid)


def test_pid_file_writable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "service.pid"
    path.write_text(f"{os.getpid()}\n")
    os.chmod(path, 0o666)
    try:
        read_pid_file(path)
    except ReloadFailed as exc:
        assert str(exc)
    else:
        raise AssertionError("a pid file anyone can write was accepted")


def test_missing_pid_file_is_refused(tmp_path: Path) -> None:
    try:
        read_pid_file(tmp_path / "absent.pid")
    except ReloadFailed:
        pass
    else:
        raise AssertionError("a missing pid file returned a pid")
