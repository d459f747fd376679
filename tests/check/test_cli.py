"""``trustyard check`` in-process (CliRunner) and as a real process guarding ``exec server``."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Callable

import pytest
from click.testing import CliRunner

from trustyard import check as checklib
from trustyard.cli import cli
from trustyard.testing import TestCA
from trustyard.x509 import keys

from .conftest import Files, check_ca, leaf_of

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
def live(mini_ca: TestCA, write: Callable[..., Files]) -> Files:
    """Valid by the real clock: 1 h old, 23 h left."""
    leaf, key = leaf_of(mini_ca, "orders.internal", "spiffe://prod.internal/orders", not_before=NOW - dt.timedelta(hours=1))
    return write(leaf, key, [mini_ca.cert], [mini_ca.root])


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["check", *args])
    return result.exit_code, result.stdout, result.stderr


def test_healthy_prints_what_a_service_log_needs(live: Files) -> None:
    code, out, err = invoke(*live.args(), "--name", "orders.internal", "--min-remaining", "12h")
    assert code == 0, err
    for label in ("subject:", "issuer:", "SANs:", "serial:", "not before:", "not after:", "time left:"):
        assert label in out
    assert "CN=Check Intermediate" in out
    assert "orders.internal, spiffe://prod.internal/orders" in out
    assert format(live.leaf.serial_number, "x") in out
    assert "result:" in out and "healthy" in out
    assert err == ""


def test_json(live: Files) -> None:
    code, out, _ = invoke(*live.args(), "--min-remaining", "33%", "--usage", "client", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] is True
    assert doc["serial"] == format(live.leaf.serial_number, "x")
    assert doc["sans"] == ["orders.internal", "spiffe://prod.internal/orders"]
    assert {"subject", "issuer", "not_before", "not_after", "time_left", "seconds_left"} <= set(doc)


@pytest.mark.parametrize(("case", "expected"), [
    ("key", checklib.KeyMismatch), ("chain", checklib.ChainInvalid), ("expired", checklib.OutsideValidity),
    ("time", checklib.NotEnoughTimeLeft), ("ca", checklib.IsCA), ("usage", checklib.WrongUsage),
    ("name", checklib.NameMismatch), ("input", checklib.CheckInputError),
])
def test_each_failure_class_has_its_exit_status(case: str, expected: type[checklib.CheckFailed], live: Files,
                                                mini_ca: TestCA, write: Callable[..., Files]) -> None:
    args = live.args()
    if case == "key":
        args = write(live.leaf, keys.generate_private_key(keys.KeyType.EC_P256), [mini_ca.cert],
                     [mini_ca.root]).args()
    elif case == "chain":
        args = write(live.leaf, keys.load_private_key_pem(live.key.read_bytes()), [mini_ca.cert],
                     [check_ca().root]).args()
    elif case == "expired":
        leaf, key = leaf_of(mini_ca, "orders.internal", not_before=NOW - dt.timedelta(days=3))
        args = write(leaf, key, [mini_ca.cert], [mini_ca.root]).args()
    elif case == "time":
        args += ["--min-remaining", "2d"]
    elif case == "ca":
        args = write(mini_ca.cert, mini_ca.key, [], [mini_ca.root]).args()
    elif case == "usage":
        leaf, key = leaf_of(mini_ca, "orders.internal", eku=("clientAuth",), not_before=NOW - dt.timedelta(hours=1))
        args = write(leaf, key, [mini_ca.cert], [mini_ca.root]).args()
    elif case == "name":
        args += ["--name", "billing.internal"]
    elif case == "input":
        args = ["--cert", str(live.cert) + ".missing", "--key", str(live.key), "--ca", str(live.ca)]
    code, out, err = invoke(*args, "--json")
    assert code == expected.exit_code
    doc = json.loads(out)
    assert doc["ok"] is False and doc["failures"][0]["class"] == expected.code
    assert err.startswith(f"trustyard: check failed [{expected.code}]")


def test_bad_threshold_is_a_usage_error(live: Files) -> None:
    code, _, err = invoke(*live.args(), "--min-remaining", "soon")
    assert code == 2 and "invalid duration" in err


def test_help_documents_every_exit_status() -> None:
    code, out, _ = invoke("--help")
    assert code == 0
    for cls in (checklib.CheckInputError, *checklib.ORDER):
        assert f"{cls.exit_code:>2}  {cls.__name__}" in out


@pytest.mark.parametrize(("name", "started"), [("orders.internal", True), ("billing.internal", False)])
def test_guards_exec_of_a_server(live: Files, name: str, started: bool) -> None:
    trustyard = f"{sys.executable} -c 'import sys; from trustyard.cli import main; sys.exit(main())'"
    line = f"{trustyard} check {' '.join(live.args())} --name {name} && exec echo SERVER-STARTED"
    proc = subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=60)
    assert ("SERVER-STARTED" in proc.stdout) is started
    assert proc.returncode == (0 if started else checklib.NameMismatch.exit_code)
