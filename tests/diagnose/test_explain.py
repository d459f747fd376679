"""explain: every message of the corpus classifies as recorded; unknown text exits 3."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from click.testing import CliRunner

from trustyard.cli import cli
from trustyard.diagnose.explain import LAYERS, corpus, explain
from trustyard.errors import ExitCode

MESSAGES = corpus().messages
FAMILIES = {"curl": "curl", "openssl": "openssl", "python": "python", "requests": "python", "urllib3": "python",
            "httpx": "python", "node.js": "node", "openjdk": "java", "go": "go", "rustls": "rustls",
            "reqwest": "rustls", "grpc-go": "grpc", "grpcio": "grpc"}


def test_corpus_is_large_and_labelled() -> None:
    assert len(MESSAGES) >= 60
    for m in MESSAGES:
        assert m["client"] and re.search(r"\d", m["client"]), f"no client version: {m}"
        assert m["origin"] in ("here", "upstream")
    clients = Counter(m["client"].split()[0].lower() for m in MESSAGES)
    for family in ("curl", "openssl", "python", "node.js", "openjdk", "go", "rustls", "grpc-go"):
        assert clients[family] >= 1, family


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: f"{m['client']}|{m['text'][:40]}")
def test_every_corpus_message_is_classified(message: dict) -> None:  # type: ignore[type-arg]
    found = explain(message["text"])
    assert found.code == message["code"], (found.matched, message)
    assert found.layer == corpus().codes[message["code"]].layer
    assert found.layer in LAYERS
    assert found.explanation and found.inspect
    family = FAMILIES[message["client"].split()[0].lower()]
    if message["client"].startswith("grpc") or "grpc" in message["text"].lower() or "rpc error" in message["text"]:
        family = "grpc"
    # bare messages that do not name their client (a Go "dial tcp" line, a rustls alert) may still be
    # attributed; when a client is detected it must be the right one
    assert found.client in (family, None), (found.client, message)


def test_unknown_text_exits_unknown_with_layer_unknown() -> None:
    result = CliRunner().invoke(cli, ["explain", "--json", "the coffee machine is out of beans"])
    assert result.exit_code == 0  # click returns the value; main() maps it
    from trustyard.cli import main
    assert main(["explain", "the coffee machine is out of beans"]) == ExitCode.UNKNOWN == 4
    found = explain("the coffee machine is out of beans")
    assert found.layer == "unknown" and found.code is None


def test_explain_reads_stdin_and_prints_json(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import sys

    from trustyard.cli import main

    log = "2024-05-01 ERROR upstream call failed\nGet \"https://billing:8443/\": tls: failed to verify certificate: " \
          "x509: certificate signed by unknown authority\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(log))
    assert main(["explain", "-", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {"client", "layer", "code", "explanation", "inspect"} <= set(doc)
    assert (doc["client"], doc["layer"], doc["code"]) == ("go", "trust", "unknown_issuer")
