"""``trustyard emergency tokens --out DIR``: one file per token, never one over another."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trustyard.ca.authority import Authority
from trustyard.x509.keys import KeyType, generate_private_key
from trustyard.x509.names import parse_name

from ..support import csr_pem
from .helpers import em, issue


def test_groups_sharing_a_file_name_get_a_file_each(ca: Authority[Any], home: Path, capsys: Any,
                                                    tmp_path: Path) -> None:
    """Two certificates of one identity but different names are two token groups: each token is
    written to its own file, and each file holds a different token."""
    for sans in (["svc.internal"], ["svc.internal", "alt.internal"]):
        csr = csr_pem(generate_private_key(KeyType.EC_P256), [parse_name(s) for s in sans])
        ca.issue_for_token(csr, ca.mint_token("default", "svc.internal", sans))
    issue(ca, "other.internal")
    code, _out, err = em(capsys, home, "--name", "svc.*", "--reason", "keyCompromise", "--require-bootstrap")
    assert code == 0, err
    out = tmp_path / "tokens"
    code, text, err = em(capsys, home, "tokens", "--out", str(out))
    assert code == 0, err
    files = sorted(out.iterdir())
    assert len(files) == 2, (text, files)
    assert all(f.name.startswith("svc.internal") and f.name.endswith(".token") for f in files)
    tokens = {f.read_text().strip() for f in files}
    assert len(tokens) == 2 and all(tokens)
    assert all(str(f) in text for f in files)
