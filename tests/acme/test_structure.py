"""The ACME service is split along its seams: modules small enough to read, handlers found
through a table, the envelope and the http-01 client in modules of their own, and the
validation authority writing its outcomes straight into the store."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import trustyard.acme
from trustyard.acme import envelope, http01, probes, service, validation
from trustyard.acme.envelope import RESOURCES, Envelope
from trustyard.api.acme_routes import build_service
from trustyard.ca.config import load_config
from trustyard.ca.home import load_authority

from ..support import PASSWORD
from .conftest import Env

MAX_LINES = 500
ACME = Path(trustyard.acme.__file__).parent
ROUTES = ACME.parent / "api" / "acme_routes.py"


def _tree(module: object) -> ast.Module:
    return ast.parse(inspect.getsource(module))  # type: ignore[arg-type]


def test_no_acme_module_is_over_500_lines_unless_its_docstring_says_why() -> None:
    """A module over the limit must be one concept that reads better whole, and say so on the
    first line of its docstring."""
    too_long = []
    for path in [*sorted(ACME.glob("*.py")), ROUTES]:
        text = path.read_text()
        if text.count("\n") <= MAX_LINES:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if "reads better whole" not in doc.partition("\n")[0]:
            too_long.append(f"{path.name}: {text.count(chr(10))} lines")
    assert too_long == []


def test_posts_are_dispatched_through_the_handler_table_not_getattr() -> None:
    for module in (service, envelope):
        calls = [node for node in ast.walk(_tree(module)) if isinstance(node, ast.Call)
                 and isinstance(node.func, ast.Name) and node.func.id == "getattr"]
        assert calls == [], f"{module.__name__} looks a handler up by name"


def test_the_handler_table_names_a_public_method_for_every_resource(acme_home: Path) -> None:
    config = load_config(acme_home)
    authority = load_authority(acme_home, PASSWORD, config=config)
    try:
        acme = build_service(authority, config)
        assert acme.handlers.keys() == RESOURCES.keys()
        for resource, handler in acme.handlers.items():
            assert handler.__self__ is acme and not handler.__name__.startswith("_"), resource  # type: ignore[attr-defined]
            assert handler.__name__ == resource.replace("-", "_")  # type: ignore[attr-defined]
        # The validation callback is the store's own method: no holder reaching back to the service.
        assert acme.va.record == acme.store.finish_challenge
    finally:
        authority.store.close()


def test_the_envelope_returns_the_caller_and_the_fresh_nonce() -> None:
    """No out-parameter: ``open`` takes the request and what ``check`` found, and returns both."""
    assert list(inspect.signature(Envelope.open).parameters) == ["self", "request", "signed"]
    assert inspect.signature(Envelope.open).return_annotation == "tuple[Caller, str]"


def test_a_refusal_after_the_nonce_is_spent_carries_a_fresh_one(env: Env) -> None:
    """What ``Envelope.open`` returns reaches the client: a refusal that came after the sent
    nonce was spent (a bad payload, a reused nonce) carries one fresh nonce, which works."""
    acme = env.account()
    order_url = acme.new_order("a.internal").headers["Location"]
    sent = acme.nonce()
    acme.saved_nonce = sent
    refused = acme.post(order_url, {}, retries=1)  # order takes POST-as-GET: an empty payload
    assert refused.status_code == 400 and "POST-as-GET" in refused.json()["detail"]
    fresh = refused.headers.get_list("Replay-Nonce")
    assert len(fresh) == 1 and fresh[0] != sent
    acme.saved_nonce = sent  # spent by the refusal
    reused = acme.post(order_url, retries=1)
    assert reused.status_code == 400 and reused.json()["type"].endswith(":badNonce")
    after_bad = reused.headers.get_list("Replay-Nonce")
    assert len(after_bad) == 1 and after_bad[0] not in (sent, fresh[0])
    for nonce in (fresh[0], after_bad[0]):
        acme.saved_nonce = nonce
        assert acme.post(order_url, retries=1).status_code == 200


def test_the_http01_client_lives_in_its_own_module() -> None:
    assert inspect.iscoroutinefunction(http01.http_get)
    for module in (probes, validation, service):
        source = inspect.getsource(module)
        assert "HttpResponseParser" not in source and "HTTP/1.1" not in source, module.__name__
