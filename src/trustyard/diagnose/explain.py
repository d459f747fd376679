"""Error text -> layer and code, driven by the data file ``corpus.toml``.

The file holds three tables: ``codes`` (what each code means, what to inspect, the fix),
``clients`` (how to recognise who wrote a message) and ``rules`` (ordered regular
expressions, first match wins: specific before generic). Its ``messages`` are real
error messages with the client and version they came from; tests classify every one.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

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

    def to_json(self) -> dict[str, Any]:
        return {"client": self.client, "layer": self.layer, "code": self.code, "explanation": self.explanation,
                "inspect": list(self.inspect), "fix": self.fix, "also_possible": list(self.also),
                "matched": self.matched}


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


def explain(text: str) -> Explanation:
    found = classify(text)
    client = detect_client(text)
    if found is None:
        return Explanation(client, "unknown", None, "No known TLS error in this text. Run `trustyard doctor "
                           "HOST:PORT` against the endpoint to probe it directly.")
    rule, match = found
    code = corpus().codes[rule.code]
    return Explanation(client, code.layer, code.code, code.explanation, code.inspect, code.fix, rule.also,
                       match.group(0))


def describe(code: str) -> Code:
    return corpus().codes[code]


__all__ = ["LAYERS", "Explanation", "explain", "classify", "describe", "detect_client", "corpus"]
