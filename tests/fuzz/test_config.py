"""TOML configuration, the CA's ``trustyard.toml`` and the agent's config file.

An operator's typo (or a hostile edit) must end in ``ConfigError`` naming the file and key
(the CLI shows one line, exit 2), never a traceback. Inputs: a full valid file with values
replaced by other TOML values of every type, and the file's text with bytes mutated.
"""

from __future__ import annotations

import contextlib
import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from hypothesis import example, given
from hypothesis import strategies as st

from trustyard.agent.config import load_config_file
from trustyard.ca.config import AcmeConfig, Config, ProvisionerConfig, load_config
from trustyard.errors import ConfigError

from .strategies import budget, mutated

CA_TEMPLATE = Config(
    home=Path("/nonexistent"),
    provisioners=(ProvisionerConfig("default", key="provisioners/default.key", public_key="provisioners/default.pub"),
                  ProvisionerConfig("acme", type="acme", allow=("*.internal", "10.0.0.0/8"))),
    acme=AcmeConfig(resolver="127.0.0.1:53", eab={"acme": {"kid-1": "a2V5"}}),
).to_toml()

AGENT_TEMPLATE: dict[str, Any] = {
    "ca_url": "https://ca.internal:8443", "root": "root.crt", "metrics_listen": "127.0.0.1:9465",
    "roots_interval": "1m",
    "certificate": [{
        "name": "orders.internal", "sans": ["orders.internal", "spiffe://prod.internal/orders"],
        "token_file": "orders.token", "out": "out/orders", "ttl": "24h", "renew_at": "66%", "jitter": "10%",
        "outage_budget": "4h", "error_before": "10%", "key_type": "ec-p256", "reload_signal": "HUP", "pid": 4242,
        "verify_endpoint": "127.0.0.1:8443", "verify_grace": "5s",
    }],
}

toml_scalars = st.one_of(st.text(max_size=20), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=True),
                         st.booleans(), st.sampled_from(["", "0", "-1", "9999999999999d", "[::1]:x", "HUP", "12",
                                                         "sqlite:///", "postgresql://", "*", "10.0.0.0/33"]))
toml_values = st.recursive(toml_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text("abcdefgh_", min_size=1, max_size=6), inner, max_size=3),
                           max_leaves=6)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every address of a value in the document: table keys and list indices."""
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += _paths(value, (*prefix, i))
    return out


def _holds(container: Any, step: Any) -> bool:
    if isinstance(container, dict):
        return isinstance(step, str) and step in container
    return isinstance(container, list) and isinstance(step, int) and step < len(container)


@st.composite
def edited(draw: st.DrawFn, template: dict[str, Any]) -> str:
    """The template with a few values replaced or deleted, or its text mutated."""
    if draw(st.integers(0, 3)) == 0:
        return draw(mutated(tomli_w.dumps(template).encode())).decode("utf-8", "replace")
    doc = tomllib.loads(tomli_w.dumps(template))  # a deep copy
    paths = _paths(doc)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths))
        parent: Any = doc
        for step in path[:-1]:
            parent = parent[step] if _holds(parent, step) else None
        if not _holds(parent, path[-1]):
            continue  # an earlier edit removed or replaced this path
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(toml_values)
    if draw(st.booleans()):
        doc[draw(st.sampled_from(["ca", "server", "acme", "provisioners", "x"]))] = draw(toml_values)
    return tomli_w.dumps(doc)


def _load_ca(home: Path, text: str) -> Config | None:
    (home / "trustyard.toml").write_text(text, encoding="utf-8")
    try:
        config = load_config(home)
    except ConfigError as exc:
        assert str(exc)
        return None
    # what `serve` derives from it before the first request
    for call in (lambda: config.listen_host_port, lambda: config.db_url,
                 lambda: [p.policy(config.backdate) for p in config.provisioners]):
        with contextlib.suppress(ConfigError):
            call()
    return config


@budget(150)
@given(edited(CA_TEMPLATE))
@example('provisioners = "abc"\n')
@example("ca = 5\n")
@example('[[provisioners]]\nname = "p"\nkey_types = [1]\n')
@example('[[provisioners]]\nname = "p"\nallow = "*.internal"\n')
@example('[[provisioners]]\nname = "p"\nmax_ttl = 30\n')
@example('[acme]\neab = 5\n')
@example('[acme]\nvalidation_timeout = "x"\n')
@example('[server]\nworkers = "x"\n')
def test_ca_config_loads_or_raises_config_error(tmp_path: Path, text: str) -> None:
    _load_ca(tmp_path, text)


@budget(120)
@given(edited(AGENT_TEMPLATE))
@example('ca_url = "x"\nroot = "r"\ncertificate = "abc"\n')
@example('ca_url = "x"\nroot = "r"\n[[certificate]]\nname = "a"\nout = "o"\nsans = "abc"\n')
@example('ca_url = "x"\nroot = "r"\n[[certificate]]\nname = "a"\nout = "o"\nreload_signal = "HUP"\npid = "x"\n')
@example('ca_url = "x"\nroot = "r"\n[[certificate]]\nname = "a"\nout = "o"\nreload_signal = "999"\npid = 5\n')
@example('ca_url = "x"\nroot = "r"\n[[certificate]]\nname = "a"\nout = "o"\nverify_endpoint = 5\n')
def test_agent_config_loads_or_raises_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config_file(path, {})
    except ConfigError as exc:
        assert str(exc)
