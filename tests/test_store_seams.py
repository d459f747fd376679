"""The store's seams: a public engine, narrow users of it, the authority on a ledger protocol,
and the ACME rows owned by the ACME package."""

from __future__ import annotations

import ast
import inspect
import typing
from pathlib import Path
from typing import TypeVar

import trustyard
from trustyard.ca import authority as authority_module
from trustyard.ca.authority import Authority
from trustyard.ca.ledger import Ledger
from trustyard.store import SqlStore
from trustyard.store.engine import Database

SRC = Path(trustyard.__file__).parent
ENGINE_PRIVATE = {name for name in vars(Database) if name.startswith("_") and not name.startswith("__")}


def _tree(relative: str) -> ast.Module:
    return ast.parse((SRC / relative).read_text(), relative)


def _private_uses(tree: ast.Module) -> list[str]:
    """Private names imported from another module, and private attributes read on anything but
    ``self`` (``self.sql._tx``), as ``line: text``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if a.name.startswith("_")]
        elif (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
              and not (isinstance(node.value, ast.Name) and node.value.id == "self")):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_engine_is_a_public_class_with_the_transaction_machinery() -> None:
    for name in ("transaction", "unit", "run", "snapshot", "recorded", "appended", "tell", "migrate", "close"):
        assert not name.startswith("_") and callable(getattr(Database, name)), name
    assert issubclass(SqlStore, Database)
    # the machinery lives in the engine, once: the ledger does not redefine any of it
    assert not {name for name in vars(SqlStore) if name in vars(Database) and not name.startswith("__")}


def test_the_acme_store_and_the_refusals_use_only_the_engines_public_api() -> None:
    for module in ("store/acme_store.py", "store/refusals.py"):
        assert _private_uses(_tree(module)) == [], module
        source = (SRC / module).read_text()
        assert "._tx" not in source and "from .sql import" not in source, module


def test_the_ledger_and_audit_log_use_only_the_engines_public_api() -> None:
    """SqlStore sits on Database: the engine's private parts are not touched from sql.py."""
    tree = _tree("store/sql.py")
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert ENGINE_PRIVATE and used & ENGINE_PRIVATE == set()
    assert _private_uses(tree) == []


def test_the_authority_is_typed_against_the_ledger_protocol() -> None:
    assert getattr(Ledger, "_is_protocol", False)
    hint = typing.get_type_hints(Authority.__init__)["store"]
    assert isinstance(hint, TypeVar) and hint.__bound__ is Ledger
    source = inspect.getsource(authority_module)
    imports = [ast.unparse(n) for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not [i for i in imports if "SqlStore" in i or "store.sql" in i or ("store import" in i and "Store" in i)]
    # every ledger call the authority makes is declared by the protocol
    protocol = {name for name in vars(Ledger) if not name.startswith("_")}
    called = {node.attr for node in ast.walk(ast.parse(source))
              if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
              and node.value.attr == "store"}
    assert called and called <= protocol, called - protocol
    # and the concrete store keeps that promise
    assert all(callable(getattr(SqlStore, name)) for name in protocol)


def test_the_acme_rows_belong_to_the_acme_package_which_does_not_import_the_store() -> None:
    from trustyard.acme import model
    from trustyard.store import acme_store

    for row in ("AccountRow", "OrderRow", "AuthzRow", "ChallengeRow", "NewAuthz"):
        assert getattr(model, row).__module__ == "trustyard.acme.model"
        assert getattr(acme_store, row) is getattr(model, row)
    imports = [node for node in ast.walk(_tree("acme/model.py")) if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert not [ast.unparse(n) for n in imports if "store" in ast.unparse(n)]
