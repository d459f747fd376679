"""The verification-off finder: code, configuration and scripts that switch certificate
verification off (``verification_disabled``), over the files the scan walks.

Per file: the language from its name (else its shebang); a prefilter, the rules' trigger
literals looked up in the lowered bytes, so most files cost one ``lower()`` and a few
substring searches; then, only for the rules whose trigger is there, their patterns over a
view of the text with comments blanked (and string contents too, for constructs that are
code). Views keep every offset, so a match maps back to its line and to the original text,
where the host or URL is looked for and the ``trustyard: allow-insecure <reason>`` marker
(same or previous line) is honoured. nginx's ``proxy_pass https://`` is judged per block:
nginx verifies no upstream unless ``proxy_ssl_verify on`` is set there or in a block around it.
"""

from __future__ import annotations

import bisect
import fnmatch
import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path, PurePath

from .insecure_rules import (
    FAMILY,
    MARKER,
    NGINX_CONTENT,
    NGINX_PASS,
    NGINX_PASS_FIX,
    RULES,
    SYNTAX,
    Rule,
    language_by_name,
    language_by_shebang,
)
from .model import InsecureUse

MAX_FILE_BYTES = 8 * 1024 * 1024
_LANGS = set(FAMILY)
# per language: trigger -> the rules it opens, in table order
_BY_LANG: dict[str, list[tuple[bytes, list[Rule]]]] = {}
for _lang in _LANGS:
    _grouped: dict[str, list[Rule]] = {}
    for _rule in RULES:
        if _rule.langs is None or _lang in _rule.langs:
            _grouped.setdefault(_rule.trigger, []).append(_rule)
    _BY_LANG[_lang] = [(trigger.encode(), group) for trigger, group in _grouped.items()]
# The gate: the pattern without its leading \b, which re then finds by its literal prefix (with
# the \b, it tries every position: ten times slower on a file with the trigger but no match).
_GATE = {rule: re.compile(rule.pattern.pattern.removeprefix("\\b"), rule.pattern.flags) for rule in RULES}

_URL = re.compile(r"""\b(?:https?|wss?|grpcs?)://[^\s'"`<>(){}\[\],;\\]+""")
_HOST_ARG = re.compile(r"""\b(?:host|hostname|server_hostname|servername|server_name|ServerName|address|addr)"""
                       r"""\s*[:=]\s*["']([\w.-]+(?::\d+)?)["']""")
_TRUSTED_HOST = re.compile(r"""(?:--trusted-host[= ]\s*|PIP_TRUSTED_HOST\s*[=:]\s*["']?|trusted[-_]host\s*=\s*)"""
                           r"""([^\s'"]+)""")
_NGINX_TOKENS = re.compile(r"(\{)|(\})|\bproxy_ssl_verify\s+(on|off)\b|\bproxy_pass\s+https://")
_CALL_REACH = 1500  # how far around a match its enclosing call is looked for


def scan_file(path: Path) -> list[InsecureUse]:
    """Every construct in one file that switches verification off, suppressed ones included
    (``suppressed_by`` set); [] for files the finder does not read."""
    lang = language_by_name(path)
    if lang is None:
        return []
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return []
        data = path.read_bytes()
    except OSError:
        return []  # the certificate reader reports unreadable files
    return scan_bytes(data, str(path), lang)


def scan_bytes(data: bytes, location: str, lang: str) -> list[InsecureUse]:
    if not lang:
        lang = language_by_shebang(data[:256]) or ""
        if not lang:
            return []
    low = data.lower()
    if lang == "ini" and location.endswith(".conf") and b"proxy_" in low and NGINX_CONTENT.search(data):
        lang = "nginx"
    rules = [r for trigger, group in _BY_LANG[lang] if trigger in low for r in group]
    nginx_pass = lang == "nginx" and b"proxy_pass" in low
    if not rules and not nginx_pass:
        return []
    text = data.decode("utf-8", "replace")
    # views cost more than every pattern: make them only for a file where a pattern may match
    rules = [r for r in rules if not r.raw_gate or _GATE[r].search(text)]
    nginx_pass = nginx_pass and bool(NGINX_PASS.search(text))
    if not rules and not nginx_pass:
        return []
    return _File(text, location, lang).find(rules, nginx_pass)


class _File:
    def __init__(self, text: str, location: str, lang: str) -> None:
        self.text, self.location, self.lang = text, location, lang
        self.code, self.bare = views(text, lang)
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def line_of(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, offset)

    def line_text(self, line: int) -> str:
        start = self.starts[line - 1]
        end = self.starts[line] - 1 if line < len(self.starts) else len(self.text)
        return self.text[start:end]

    def find(self, rules: list[Rule], nginx_pass: bool) -> list[InsecureUse]:
        taken: dict[int, list[tuple[int, int]]] = {}
        found: list[InsecureUse] = []

        def add(start: int, end: int, construct: str, fix: str, target: str | None = None) -> None:
            line = self.line_of(start)
            if any(s < end and start < e for s, e in taken.get(line, ())):
                return  # one construct per span: the more specific rule came first
            taken.setdefault(line, []).append((start, end))
            match = self.text[start:end].split("\n", 1)[0].strip()[:120]
            found.append(InsecureUse(self.location, line, self.lang, construct, match,
                                     target or self.target(start, end, line, construct), fix,
                                     self.marker(line)))

        for rule in rules:
            view = self.bare if rule.view == "bare" else self.code
            for m in rule.pattern.finditer(view):
                if rule.skip_imports and self.line_text(self.line_of(m.start())).lstrip().startswith("import "):
                    continue
                add(m.start(), m.end(), rule.construct, rule.fix)
        if nginx_pass:
            for start, end in self.nginx_unverified():
                add(start, end, "proxy_pass https:// without proxy_ssl_verify on", NGINX_PASS_FIX)
        return sorted(found, key=lambda u: u.line)

    def marker(self, line: int) -> str | None:
        for n in (line, line - 1):
            # a marker on the line before counts when it is all that line holds
            if n == line or (n >= 1 and not self.code[self.starts[n - 1]:self.starts[n]].strip()):
                m = MARKER.search(self.line_text(n))
                reason = m and re.sub(r"\s*(?:\*/|-->|#}|%>)\s*$", "", m.group(1)).strip()
                if reason:
                    return f"trustyard: allow-insecure {reason}"
        return None

    def target(self, start: int, end: int, line: int, construct: str) -> str | None:
        line_text = self.line_text(line)
        if construct == "pip --trusted-host":
            m = _TRUSTED_HOST.search(line_text)
            return m.group(1) if m else None
        span = self.call(start, end)
        if span:
            m = _URL.search(self.text, *span) or _HOST_ARG.search(self.text, *span)
            if m:
                return m.group(m.lastindex or 0)
        m = _URL.search(line_text) or _HOST_ARG.search(line_text)
        if m:
            return m.group(m.lastindex or 0)
        return self.yaml_sibling(line) if self.lang == "yaml" else None

    def call(self, start: int, end: int) -> tuple[int, int] | None:
        """The parentheses around a match (strings and comments do not count), if near."""
        bare, depth, i = self.bare, 0, start - 1
        while i >= max(0, start - _CALL_REACH):
            ch = bare[i]
            if ch == ")":
                depth += 1
            elif ch == "(":
                if depth == 0:
                    break
                depth -= 1
            i -= 1
        else:
            return None
        open_at, depth, j = i, 0, end
        while j < min(len(bare), end + _CALL_REACH):
            ch = bare[j]
            if ch == "(":
                depth += 1
            elif ch == ")":
                if depth == 0:
                    return open_at, j
                depth -= 1
            j += 1
        return None

    def yaml_sibling(self, line: int) -> str | None:
        """kubeconfig: ``server: https://...`` sits beside ``insecure-skip-tls-verify`` in its mapping."""
        text = self.line_text(line)
        indent = len(text) - len(text.lstrip(" -"))
        for step in (-1, 1):
            n = line + step
            while 1 <= n <= len(self.starts) and abs(n - line) <= 30:
                other = self.line_text(n)
                if other.strip():
                    if len(other) - len(other.lstrip(" -")) < indent:
                        break
                    m = _URL.search(other)
                    if m:
                        return m.group(0)
                n += step
        return None

    def nginx_unverified(self) -> list[tuple[int, int]]:
        """``proxy_pass https://`` whose block, and every block around it, leaves proxy_ssl_verify
        unset (an explicit ``off`` is a finding of its own)."""
        parents: list[int] = [-1]
        setting: list[str | None] = [None]
        passes: list[tuple[int, int, int]] = []  # (block, start, end)
        stack = [0]
        for m in _NGINX_TOKENS.finditer(self.code):
            if m.group(1):
                parents.append(stack[-1])
                setting.append(None)
                stack.append(len(parents) - 1)
            elif m.group(2):
                if len(stack) > 1:
                    stack.pop()
            elif m.group(3):
                setting[stack[-1]] = m.group(3)
            else:
                line_end = self.code.find("\n", m.end())
                passes.append((stack[-1], m.start(), line_end if line_end >= 0 else len(self.code)))
        out = []
        for block, start, end in passes:
            effective = None
            while block >= 0 and effective is None:
                effective, block = setting[block], parents[block]
            if effective is None:
                out.append((start, end))
        return out


def views(text: str, lang: str) -> tuple[str, str]:
    """(code, bare): the text with comments blanked, and with string contents blanked too.
    Both keep every character's offset (blanks are spaces, newlines stay)."""
    syntax = SYNTAX[FAMILY[lang]]
    code: list[str] = []
    bare: list[str] = []
    pos = 0
    for m in syntax.finditer(text):
        start, end = m.span()
        if start > pos:
            code.append(text[pos:start])
            bare.append(text[pos:start])
        piece = m.group(0)
        kind = m.lastgroup
        if kind == "d" and text[text.rfind("\n", 0, start) + 1:start].strip():
            kind = "s"  # a triple-quoted string inside an expression is a string, not a docstring
        if kind == "s":
            code.append(piece)
            quote = min((i for i in (piece.find('"'), piece.find("'"), piece.find("`")) if i >= 0), default=0)
            bare.append(piece[:quote + 1] + _blank(piece[quote + 1:-1]) + piece[-1:] if len(piece) > quote + 1
                        else piece)
        else:
            blank = _blank(piece)
            code.append(blank)
            bare.append(blank)
        pos = end
    code.append(text[pos:])
    bare.append(text[pos:])
    return "".join(code), "".join(bare)


_NOT_NEWLINE = re.compile(r"[^\n]")


def _blank(piece: str) -> str:
    return _NOT_NEWLINE.sub(" ", piece) if "\n" in piece else " " * len(piece)


def ignore(uses: Iterable[InsecureUse], patterns: Iterable[str]) -> list[InsecureUse]:
    """Mark as suppressed the uses in files an ``--ignore`` glob matches: the whole path, or any
    trailing part of it (``tests/*`` matches ``/src/app/tests/x.py``; ``*.md`` any Markdown)."""
    patterns = list(patterns)
    out = []
    for use in uses:
        if patterns and not use.suppressed_by:
            parts = PurePath(use.path).parts
            tails = [use.path] + ["/".join(parts[i:]) for i in range(1, len(parts))]
            hit = next((p for p in patterns if any(fnmatch.fnmatchcase(t, p) for t in tails)), None)
            if hit:
                use = replace(use, suppressed_by=f"--ignore {hit}")
        out.append(use)
    return out


__all__ = ["ignore", "scan_bytes", "scan_file", "views"]
