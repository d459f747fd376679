"""Error text -> layer and code, driven by the data file ``corpus.toml``.

The file holds three tables: ``codes`` (what each code means, what to inspect, the fix),
``clients`` (how to recognise who wrote a message) and ``rules`` (ordered regular
expressions, first match wins: specific before generic). Its ``messages`` are real
error messages with the client and version they came from; tests classify every one.

Sentences may name ``{bundle}``, ``{name}``, ``{host}`` or ``{port}``, always inside a
parenthetical: :func:`fill` puts in what the message said and drops the parenthetical
when it said nothing, so no answer ever shows an unfilled placeholder.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from .mentions import Mentioned, address, mentioned

LAYERS = ("network", "protocol", "client_auth", "trust", "identity", "validity")


@dataclass(frozen=True)
class Code:
    code: str
    layer: str
    explanation: str
    inspect: tuple[str, ...]
    fix: str


@dataclass(frozen=True)
class Rule:
    code: str
    patterns: tuple[re.Pattern[str], ...]
    also: tuple[str, ...] = ()  # codes the same text may also mean (clients do not say which)


@dataclass(frozen=True)
class Corpus:
    codes: dict[str, Code]
    clients: tuple[tuple[str, tuple[re.Pattern[str], ...]], ...]
    rules: tuple[Rule, ...]
    messages: tuple[dict[str, Any], ...]


_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_PARENTHETICAL = re.compile(r" ?\(([^()]*\{\w+\}[^()]*)\)")


def fill(sentence: str, values: dict[str, str]) -> str:
    """Fill ``{key}`` placeholders; a parenthetical naming anything not in ``values`` goes."""
    def paren(m: re.Match[str]) -> str:
        keys = _PLACEHOLDER.findall(m.group(1))
        if all(k in values for k in keys):
            return m.group(0)
        return ""
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], _PARENTHETICAL.sub(paren, sentence))


@lru_cache(maxsize=1)
def corpus() -> Corpus:
    raw = tomllib.loads(resources.files("trustyard.diagnose").joinpath("corpus.toml").read_text("utf-8"))
    codes = {name: Code(name, c["layer"], c["explanation"], tuple(c.get("inspect", ())), c.get("fix", ""))
             for name, c in raw["codes"].items()}
    clients = tuple((c["name"], tuple(re.compile(p, re.I | re.M) for p in c["patterns"])) for c in raw["clients"])
    rules = tuple(Rule(r["code"], tuple(re.compile(p, re.I | re.S) for p in r["patterns"]), tuple(r.get("also", ())))
                  for r in raw["rules"])
    for rule in rules:
        if rule.code not in codes or any(a not in codes for a in rule.also):
            raise ValueError(f"corpus.toml: rule for unknown code {rule.code!r}")
    for code in codes.values():
        for sentence in (code.explanation, code.fix, *code.inspect):
            if _PLACEHOLDER.search(_PARENTHETICAL.sub("", sentence)):
                raise ValueError(f"corpus.toml: {code.code}: a placeholder outside parentheses in {sentence!r}")
    return Corpus(codes, clients, rules, tuple(raw.get("messages", ())))


@dataclass(frozen=True)
class Explanation:
    client: str | None
    layer: str
    code: str | None
    explanation: str
    inspect: tuple[str, ...] = ()
    fix: str = ""
    also: tuple[str, ...] = ()
    matched: str | None = None
    confirm: str = "trustyard doctor <host>:<port>"  # the command that confirms the answer
    mentioned: Mentioned = field(default_factory=Mentioned)

    def to_json(self) -> dict[str, Any]:
        m = self.mentioned
        return {"client": self.client, "layer": self.layer, "code": self.code, "explanation": self.explanation,
                "inspect": list(self.inspect), "fix": self.fix, "also_possible": list(self.also),
                "matched": self.matched, "confirm": self.confirm,
                "mentioned": {"name": m.name, "host": m.host, "port": m.port, "bundle": m.bundle}}


def detect_client(text: str) -> str | None:
    for name, patterns in corpus().clients:
        if any(p.search(text) for p in patterns):
            return name
    return None


def classify(text: str) -> tuple[Rule, re.Match[str]] | None:
    for rule in corpus().rules:
        for pattern in rule.patterns:
            match = pattern.search(text)
            if match:
                return rule, match
    return None


# A name mismatch for a client that connected to an IP address is an IP SAN problem:
# DNS SANs and the CN never match an address, whatever the client's wording.
_NAME_CODES = ("hostname_mismatch", "wildcard_mismatch")


def confirm_command(m: Mentioned, layer: str | None, code: str | None) -> str:
    """The ``trustyard doctor`` command that checks the answer against the endpoint."""
    words = ["trustyard", "doctor", address(m.host, m.port)]
    if m.name and m.host and m.name != m.host:
        words += ["--name", m.name]
    if m.bundle:
        words += ["--ca", m.bundle]
    if code == "client_cert_rejected":
        words += ["--cert", "<client.crt>", "--key", "<client.key>"]
    return " ".join(words)


def explain(text: str) -> Explanation:
    found = classify(text)
    client = detect_client(text)
    where = mentioned(text)
    if found is None:
        return Explanation(client, "unknown", None, "No known TLS error in this text; probe the endpoint "
                           "directly.", confirm=confirm_command(where, None, None), mentioned=where)
    rule, match = found
    code, also = corpus().codes[rule.code], rule.also
    if code.code in _NAME_CODES and where.name_is_ip:
        code, also = corpus().codes["ip_not_in_san"], ()
    elif where.name and not where.name_is_ip:
        also = tuple(a for a in also if a != "ip_not_in_san")
    values = where.values()
    return Explanation(client, code.layer, code.code, fill(code.explanation, values),
                       tuple(fill(i, values) for i in code.inspect), fill(code.fix, values),
                       tuple(a for a in also if a != code.code), match.group(0),
                       confirm_command(where, code.layer, code.code), where)


def describe(code: str) -> Code:
    return corpus().codes[code]


__all__ = [
    "LAYERS",
    "Explanation",
    "classify",
    "confirm_command",
    "corpus",
    "describe",
    "detect_client",
    "explain",
    "fill",
]
