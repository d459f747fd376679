"""Error codes are a closed vocabulary, and the CLI's exit statuses are one table.

The codes the CA raises and the codes the client and the agent act on are members of
``errors.Code`` (ACME problem types: ``acme.problems.AcmeCode``); a code outside them is a
``ValueError`` when an error is made. The source is read (AST) to check that every code written
in ``src/`` is in the vocabulary and that the client side acts only on codes the server raises.
"""

from __future__ import annotations

import ast
import functools
import json
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

import trustyard
from trustyard import check as checklib
from trustyard import errors
from trustyard.acme.probes import ValidationFailed
from trustyard.acme.problems import ACME_URN, STATUS, AcmeCode, AcmeError, subproblem
from trustyard.agent import runner
from trustyard.client import CAUnavailable, UntrustedServer, _problem_error
from trustyard.errors import EXIT_MEANINGS, Code, ExitCode, TrustyardError

SRC = Path(trustyard.__file__).parent
# The modules that answer requests (what they raise reaches a client on the wire) ...
SERVER = ("ca", "store", "api", "acme", "tls", "x509")
# ... and the ones that receive the answers and act on their codes.
CLIENT = ("agent", "client.py", "cli/client_cmds.py")
# Where an error's ``.code`` is compared (x509/, inventory/ and diagnose/ have codes of their own:
# chain problems, findings, TLS failure classes).
HANDLERS = ("ca", "store", "api", "acme", "tls", "agent", "client.py", "cli")
ACME_KINDS = {"AcmeError": 0, "subproblem": 0, "ValidationFailed": 0}  # callee -> position of the kind


@functools.cache
def _parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _modules(*parts: str) -> Iterator[tuple[Path, ast.Module]]:
    for part in parts:
        where = SRC / part
        for path in sorted([where] if where.is_file() else where.rglob("*.py")):
            yield path, _parsed(path)


def _callee(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _codes_in(node: ast.AST) -> Iterator[tuple[str, int]]:
    """The codes an expression names: string constants and ``Code.X`` / ``AcmeCode.X``."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            yield sub.value, sub.lineno
        elif isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id in ("Code",
                                                                                                     "AcmeCode"):
            vocabulary = Code if sub.value.id == "Code" else AcmeCode
            yield vocabulary[sub.attr].value, sub.lineno


def _is_code(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "code"


def _name(node: ast.AST) -> str:
    return node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""


def error_classes() -> set[str]:
    """The names of TrustyardError and its subclasses defined in src (read from the source), and
    ``CSRError``, whose code the authority raises as its own."""
    classes = [node for _, tree in _modules(".") for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    names = {"TrustyardError", "CSRError"}
    while True:
        more = {c.name for c in classes if any(_name(b) in names for b in c.bases)} - names
        if not more:
            return names
        names |= more


def raised_codes(*parts: str) -> dict[str, list[str]]:
    """Trustyard codes errors are made with in ``parts``: the ``code`` argument of an error class,
    its class-level ``code``, and the codes of ``CSRError``."""
    found: dict[str, list[str]] = {}
    kinds = error_classes()
    for path, tree in _modules(*parts):
        where = str(path.relative_to(SRC))
        for node in ast.walk(tree):
            exprs: list[ast.AST] = []
            if isinstance(node, ast.Call) and _callee(node) in kinds:
                exprs += [kw.value for kw in node.keywords if kw.arg == "code"]
                if _callee(node) == "CSRError" and len(node.args) > 1:
                    exprs.append(node.args[1])
            elif isinstance(node, ast.ClassDef) and node.name in kinds:
                for stmt in node.body:
                    if isinstance(stmt, ast.FunctionDef) and stmt.name == "__init__":  # a default code
                        args = stmt.args.args[len(stmt.args.args) - len(stmt.args.defaults):]
                        exprs += [d for arg, d in zip(args, stmt.args.defaults, strict=True) if arg.arg == "code"]
                    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                        target = stmt.targets[0]
                        if isinstance(target, ast.Name) and target.id == "code":
                            exprs.append(stmt.value)
                        elif isinstance(target, ast.Tuple) and isinstance(stmt.value, ast.Tuple):
                            names = [t.id for t in target.elts if isinstance(t, ast.Name)]
                            if "code" in names:
                                exprs.append(stmt.value.elts[names.index("code")])
            for expr in exprs:
                for code, line in _codes_in(expr):
                    found.setdefault(code, []).append(f"{where}:{line}")
    return found


def _listed(node: ast.AST, path: Path) -> bool:
    """A set of codes the client side acts on (the agent's ``_DEAD_CODES``, ``_TOKEN_CODES``)."""
    return isinstance(node, ast.Assign) and any(_name(t).endswith("_CODES") for t in node.targets) and \
        any(path.is_relative_to(SRC / part) for part in CLIENT)


def compared_codes(*parts: str) -> dict[str, list[str]]:
    """Codes the code in ``parts`` acts on: compared with an error's ``.code`` (``==``, ``!=``,
    ``in``) or, in the client and the agent, listed in a module-level ``*_CODES`` set."""
    found: dict[str, list[str]] = {}
    for path, tree in _modules(*parts):
        where = str(path.relative_to(SRC))
        exprs: list[ast.AST] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and (_is_code(node.left) or any(map(_is_code, node.comparators))):
                exprs += [e for e in (node.left, *node.comparators) if not _is_code(e)]
        exprs += [stmt.value for stmt in tree.body if isinstance(stmt, ast.Assign) and _listed(stmt, path)]
        for expr in exprs:
            for code, line in _codes_in(expr):
                found.setdefault(code, []).append(f"{where}:{line}")
    return found


# -- the vocabulary is closed ----------------------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda: TrustyardError("x", code="tokenReused"),
    lambda: errors.Unauthorized("x", code="replayed"),
    lambda: errors.BadRequest("x", code=""),
    lambda: AcmeError("badNonse", "x"),
    lambda: AcmeError("tokenReplayed", "a trustyard code is not an ACME type"),
    lambda: subproblem("nope", "x"),
    lambda: ValidationFailed("timeout", "x"),
], ids=["root", "unauthorized", "empty", "acme-typo", "acme-foreign", "subproblem", "validation"])
def test_an_unknown_code_is_a_value_error_at_construction(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="not a"):
        make()


def test_an_error_class_with_an_unknown_code_cannot_be_defined() -> None:
    with pytest.raises(ValueError, match="'tokenUsed' is not a code of Code"):
        type("Used", (errors.Unauthorized,), {"code": "tokenUsed"})


def test_a_known_code_becomes_the_member_and_keeps_its_wire_value() -> None:
    error = errors.Unauthorized("this token was already used", code="tokenReplayed")
    assert error.code is Code.TOKEN_REPLAYED
    assert error.problem()["type"] == "urn:trustyard:error:tokenReplayed"
    assert json.dumps(error.problem()).count('"urn:trustyard:error:tokenReplayed"') == 1
    assert f"[{error.code}]" == "[tokenReplayed]"
    for cls in (errors.BadRequest, errors.Unauthorized, errors.Forbidden, errors.PolicyDenied, errors.NotFound,
                errors.Conflict, errors.ConfigError, CAUnavailable, UntrustedServer, checklib.CheckFailed,
                *checklib.ORDER):
        assert isinstance(cls.code, Code), cls


def test_every_code_written_in_src_is_in_the_vocabulary() -> None:
    written = raised_codes(".")
    unknown = {code: where for code, where in written.items() if code not in set(Code)}
    assert not unknown, f"codes outside errors.Code: {unknown}"
    compared = compared_codes(*HANDLERS)
    unknown = {code: where for code, where in compared.items() if code not in set(Code)}
    assert not unknown, f"compared codes outside errors.Code: {unknown}"
    assert {"tokenReplayed", "revoked", "superseded", "policyDenied", "untrustedServer", "badCSR",
            "localFile"} <= set(written)
    assert {"alreadyRevoked", "tokenReplayed"} <= set(compared)


def test_the_client_side_acts_only_on_codes_the_server_raises() -> None:
    handled = compared_codes(*CLIENT)
    raisable = set(raised_codes(*SERVER))
    # the hierarchy's own codes are raised without a code= argument (BadRequest(...), Forbidden(...))
    raisable |= {cls.code for cls in (errors.BadRequest, errors.Unauthorized, errors.Forbidden,
                                      errors.PolicyDenied, errors.NotFound, errors.Conflict)}
    assert {"tokenExpired", "badToken", "tokenReplayed", "tokenNameMismatch", "expired", "revoked",
            "unknownCertificate", "superseded", "alreadyRevoked"} <= set(handled)
    # bootstrapRequired: the agent's side of emergency replacement, whose CA side is built apart
    # (branch `emergency`); once both are merged the CA raises it and this exemption goes.
    raisable |= {Code.BOOTSTRAP_REQUIRED.value}
    never_raised = {code: where for code, where in handled.items() if code not in raisable}
    assert not never_raised, f"the client waits for codes the CA never raises: {never_raised}"


def test_the_agent_uses_the_imported_constants() -> None:
    """Where a code is acted on (compared, or listed in a ``*_CODES`` set), it is ``Code.X``."""
    literals = []
    for path, tree in _modules(*HANDLERS):
        for node in ast.walk(tree):
            listed = _listed(node, path)
            compared = isinstance(node, ast.Compare) and any(map(_is_code, (node.left, *node.comparators)))
            if listed or compared:
                literals += [f"{path.relative_to(SRC)}:{c.lineno}: {c.value!r}" for c in ast.walk(node)
                             if isinstance(c, ast.Constant) and isinstance(c.value, str)]
    assert not literals
    assert all(isinstance(code, Code) for code in runner._DEAD_CODES | runner._TOKEN_CODES)


def test_a_problem_with_a_code_this_client_does_not_know_keeps_the_class_code() -> None:
    """A newer CA may send a code this version lacks: the client does not fail on it."""
    for problem_type, expected in (("urn:trustyard:error:tokenReplayed", Code.TOKEN_REPLAYED),
                                   ("urn:trustyard:error:somethingNew", Code.UNAUTHORIZED),
                                   ("about:blank", Code.UNAUTHORIZED)):
        response = httpx.Response(401, json={"type": problem_type, "detail": "no"})
        error = _problem_error(response)
        assert isinstance(error, errors.Unauthorized) and error.code is expected and error.detail == "no"


# -- ACME problem types ---------------------------------------------------------------------------


def _kinds(expr: ast.AST) -> Iterator[str]:
    """The ACME types an argument names when it is written out (a kind computed at run time is
    checked when the error is made)."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        yield expr.value
    elif isinstance(expr, ast.Attribute) and _name(expr.value) == "AcmeCode":
        yield AcmeCode[expr.attr].value
    elif isinstance(expr, ast.IfExp):
        yield from _kinds(expr.body)
        yield from _kinds(expr.orelse)


def test_acme_problem_types_are_constructed_only_from_the_acme_vocabulary() -> None:
    assert set(STATUS) == set(AcmeCode)
    kinds: dict[str, list[str]] = {}
    for path, tree in _modules("acme", "api"):
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _callee(node) in ACME_KINDS and node.args:
                for code in _kinds(node.args[ACME_KINDS[_callee(node)]]):
                    kinds.setdefault(code, []).append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert {"badNonce", "malformed", "unauthorized", "rejectedIdentifier", "connection"} <= set(kinds)
    outside = {k: w for k, w in kinds.items() if k not in set(AcmeCode)}
    assert not outside, outside
    for kind in AcmeCode:
        problem = AcmeError(kind, "x").problem()
        assert problem["type"] == ACME_URN + kind.value and problem["status"] == STATUS[kind]
    assert subproblem("dns", "x")["type"] == "urn:ietf:params:acme:error:dns"
    assert not {v.value for v in Code} & {"badNonce", "accountDoesNotExist"}
    assert issubclass(AcmeCode, StrEnum) and AcmeError.vocabulary is AcmeCode


# -- the exit statuses ----------------------------------------------------------------------------


def test_the_exit_table_is_complete_and_distinct() -> None:
    assert set(EXIT_MEANINGS) == set(ExitCode)
    assert len(ExitCode.__members__) == len(ExitCode), "an alias would give one status two names"
    assert len(set(EXIT_MEANINGS.values())) == len(EXIT_MEANINGS)
    # once 3 meant "needs a new token" (agent), "unknown text" (explain) and "unreadable input" (check)
    statuses = [runner.EXIT_REBOOTSTRAP, checklib.CheckInputError.exit_code, ExitCode.UNKNOWN, runner.EXIT_REFUSED]
    assert len(set(statuses[:3])) == 3 and runner.EXIT_REFUSED is ExitCode.USAGE
    for cls in (checklib.CheckFailed, checklib.CheckInputError, *checklib.ORDER):
        assert isinstance(cls.exit_code, ExitCode), cls
    assert all(isinstance(s, ExitCode) for s in (runner.EXIT_OK, runner.EXIT_FAILED, *statuses))


def test_the_exit_table_is_in_the_help() -> None:
    from trustyard.cli import cli

    out = CliRunner().invoke(cli, ["--help"], terminal_width=100).output
    for code, meaning in EXIT_MEANINGS.items():
        assert f"{int(code):>3}  {meaning}" in out


def test_explain_exits_with_the_unknown_status() -> None:
    from trustyard.cli import main

    assert main(["explain", "the coffee machine is out of beans"]) == ExitCode.UNKNOWN == 4


def _int_literal(node: ast.AST | None) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.IfExp):
        return next((v for v in (_int_literal(node.body), _int_literal(node.orelse)) if v is not None), None)
    return None


def test_every_exit_status_in_the_cli_is_from_the_table() -> None:
    """No bare number as an exit status: what a command returns, ``ctx.exit``/``sys.exit`` and
    ``SystemExit``."""
    bare: list[str] = []
    for path, tree in _modules("cli", "agent/runner.py", "check.py", "__main__.py"):
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            returns_int = (isinstance(func.returns, ast.Name) and func.returns.id == "int") or \
                (isinstance(func.returns, ast.Constant) and func.returns.value == "int")
            for node in ast.walk(func):
                value = None
                if isinstance(node, ast.Return) and returns_int:
                    value = _int_literal(node.value)
                elif isinstance(node, ast.Call) and _callee(node) in ("exit", "SystemExit", "Exit") and node.args:
                    value = _int_literal(node.args[0])
                if value is not None:
                    bare.append(f"{path.relative_to(SRC)}:{node.lineno}: {value}")
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            for stmt in cls.body:
                sets_exit_code = isinstance(stmt, ast.Assign) and any((isinstance(t, ast.Tuple) and any(
                    isinstance(e, ast.Name) and e.id == "exit_code" for e in t.elts)) or
                    (isinstance(t, ast.Name) and t.id == "exit_code") for t in stmt.targets)
                if sets_exit_code and any(_int_literal(v) is not None for v in ast.walk(stmt.value)):
                    bare.append(f"{path.relative_to(SRC)}:{stmt.lineno}: exit_code")
    assert not bare, f"exit statuses not from errors.ExitCode: {bare}"
