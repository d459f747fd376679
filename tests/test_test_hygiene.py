"""Tests say what they test: no docstring or comment under tests/ points at an item number of
some issue ("issue N item M", "Item M:") instead of stating the behaviour it checks."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

TESTS = Path(__file__).parent
# "issue N item M", "Issue N, item M", "item M:", "(item M)", "item M's", "issue #N" with digits for N and M
REFERENCE = re.compile(r"\bissue\s*#?\d+\b|\bitem\s+\d+\b", re.IGNORECASE)


def _docs_and_comments(path: Path) -> list[tuple[int, str]]:
    """Every comment and every string that stands alone as a statement (docstrings)."""
    found: list[tuple[int, str]] = []
    previous = tokenize.NEWLINE
    for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if token.type == tokenize.COMMENT or (token.type == tokenize.STRING and previous in (tokenize.NEWLINE, tokenize.NL, tokenize.INDENT,
                                                            tokenize.DEDENT)):
            found.append((token.start[0], token.string))
        if token.type not in (tokenize.COMMENT, tokenize.NL):
            previous = token.type
    return found


def _hits(path: Path) -> list[str]:
    return [f"{line}: {match.group(0)!r}"
            for line, text in _docs_and_comments(path) for match in REFERENCE.finditer(text)]


def test_no_test_docstring_or_comment_cites_an_issue_item_number() -> None:
    found = [f"{path.relative_to(TESTS.parent)}:{hit}" for path in sorted(TESTS.rglob("*.py")) for hit in _hits(path)]
    assert not found, "state the behaviour instead of an item number:\n" + "\n".join(found)


def test_the_guard_sees_docstrings_and_comments_but_not_code(tmp_path: Path) -> None:
    sample = tmp_path / "test_sample.py"
    sample.write_text('"""Issue 13 item 9: names."""\n\n\ndef test_x() -> None:\n'
                      '    """Item 4\'s durations."""\n    x = "issue 3 item 1"  # see item 2\n    assert x\n')
    assert [hit.split(": ", 1)[1] for hit in _hits(sample)] == ["'Issue 13'", "'item 9'", "'Item 4'", "'item 2'"]
    clean = tmp_path / "test_clean.py"
    clean.write_text('"""Wildcards only where a provisioner allows them; PKCS#12 stores."""\n')
    assert _hits(clean) == []

