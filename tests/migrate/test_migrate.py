"""`trustyard migrate` over a small self-signed estate on loopback: plan, every step, rollback,
status, a crash between two writes, and bad input that must change nothing."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs12

from trustyard.ca.home import InitOptions, init_home
from trustyard.cli import cli
from trustyard.cli.output import run
from trustyard.diagnose.probe import probe
from trustyard.migrate.verify import handshake
from trustyard.testing import need

from ..support import PASSWORD
from .estate import JKS_PASSWORD, NAME, Estate, https_server, make_estate

pytestmark = pytest.mark.xdist_group("migrate")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "ca"
    init_home(home, PASSWORD, InitOptions(allow=("*.internal",)))
    return home


@pytest.fixture
def estate(tmp_path: Path) -> Iterator[Estate]:
    with https_server(make_estate(tmp_path / "estate")) as server:
        yield server.estate


def tm(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    os.environ["TRUSTYARD_PASSWORD"] = PASSWORD.decode()
    code = run(cli, list(args))
    out = capsys.readouterr()
    return int(code), out.out, out.err


def plan_saved(capsys: pytest.CaptureFixture[str], home: Path, e: Estate) -> str:
    code, out, err = tm(capsys, "migrate", "plan", str(e.root), "--endpoint", e.endpoint, "--password-file",
                        f"{e.jks}={e.jks_password_file}", "--save", "--home", str(home), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["boundaries"]) == 1
    return str(doc["boundaries"][0]["id"])


def status(capsys: pytest.CaptureFixture[str], home: Path) -> dict:  # type: ignore[type-arg]
    code, out, err = tm(capsys, "migrate", "status", "--home", str(home), "--json")
    assert code == 0, err
    return json.loads(out)["boundaries"][0]


def keytool_list(store: Path, password: str, storetype: str) -> str:
    result = subprocess.run([need("keytool", package="default-jdk-headless"), "-list", "-keystore", str(store),
                             "-storepass", password, "-storetype", storetype], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.lower()


def secret_values(path: Path) -> dict[str, bytes]:
    doc = yaml.safe_load(path.read_text())
    return {k: base64.b64decode(v) for k, v in doc["data"].items()}


def test_plan_names_every_location_each_step_touches_and_saves_it(capsys, home, estate) -> None:
    """One boundary per self-signed server identity: its endpoint, certificate and key files,
    and the four client locations holding a copy; --save puts it in the CA's database."""
    code, out, err = tm(capsys, "migrate", "plan", str(estate.root), "--endpoint", estate.endpoint,
                        "--password-file", f"{estate.jks}={estate.jks_password_file}", "--json")
    assert code == 0, err
    [b] = json.loads(out)["boundaries"]
    assert b["names"] == [NAME] and b["endpoint"] == estate.endpoint
    assert b["cert_files"] == [str(estate.cert)] and b["key_files"] == [str(estate.key)]
    assert {(c["path"], c["kind"]) for c in b["clients"]} == {
        (str(estate.bundle), "pem"), (str(estate.jks), "jks"), (str(estate.p12), "p12"),
        (str(estate.secret), "manifest"), (str(estate.configmap), "manifest")}
    assert f"replace {estate.cert}" in b["steps"]["switched"]
    assert f"add the CA root to {estate.secret}#Secret/shop/client-trust/ca.crt" in b["steps"]["trusted"]
    assert b["saved"] is None
    code, out, _ = tm(capsys, "migrate", "status", "--home", str(home), "--json")
    assert json.loads(out) == {"boundaries": []}  # not saved without --save
    bid = plan_saved(capsys, home, estate)
    row = status(capsys, home)
    assert set(row) == {"id", "state", "names", "endpoint", "blocking", "moved_at"}
    assert (row["id"], row["state"], row["names"], row["blocking"]) == (bid, "planned", [NAME], None)


def test_every_step_to_done_then_rollback_restores_bytes(capsys, ca_home, estate) -> None:
    """issued -> trusted -> switched -> verified -> retired -> done on real files and a live
    server: each location keeps its other entries (keytool reads the JKS and PKCS#12), the
    server ends up serving the CA chain, the old copy leaves every client location; rollback
    from trusted puts every file back byte for byte."""
    home = ca_home  # on SQLite and on PostgreSQL
    original = estate.files()
    bid = plan_saved(capsys, home, estate)
    code, out, err = tm(capsys, "migrate", "step", bid, "--home", str(home))
    assert code == 0, err + out
    new_cert = estate.server_dir / "trustyard-server.crt"
    assert new_cert.exists() and (estate.server_dir / "trustyard-server.key").stat().st_mode & 0o777 == 0o600
    assert "trustyard agent --name svc.internal" in out
    code, out, err = tm(capsys, "migrate", "step", bid, "--home", str(home))
    assert code == 0, err + out
    assert status(capsys, home)["state"] == "trusted"
    listing = keytool_list(estate.jks, JKS_PASSWORD, "JKS")
    assert "svc," in listing and "other," in listing and "trustyard-" in listing
    listing = keytool_list(estate.p12, "changeit", "PKCS12")
    assert "svc," in listing and "other," in listing and "trustyard-" in listing
    values = secret_values(estate.secret)
    assert values["api-token"] == b"hunter2" and values["ca.crt"].count(b"BEGIN CERTIFICATE") == 2
    assert estate.bundle.read_bytes().startswith(original[str(estate.bundle)])  # appended next to the old copy
    deployment, configmap = yaml.safe_load_all(estate.configmap.read_text())
    assert deployment == next(yaml.safe_load_all(original[str(estate.configmap)]))
    assert configmap["data"]["mode"] == "strict" and configmap["data"]["ca.crt"].count("BEGIN CERTIFICATE") == 2

    # rollback: back to issued, every client file as it was
    code, out, err = tm(capsys, "migrate", "rollback", bid, "--home", str(home))
    assert code == 0, err + out
    for path in estate.clients:
        assert path.read_bytes() == original[str(path)], path
    assert status(capsys, home)["state"] == "issued"

    code, out, err = tm(capsys, "migrate", "step", bid, "--to", "verified", "--home", str(home), "--json")
    assert code == 0, err + out
    assert [s["step"] for s in json.loads(out)["steps"]] == ["trusted", "switched", "verified"]
    leaf = probe("127.0.0.1", estate.port, sni=NAME).chain[0]
    assert leaf.issuer != leaf.subject and leaf == x509.load_pem_x509_certificate(new_cert.read_bytes())
    code, out, err = tm(capsys, "migrate", "step", bid, "--to", "done", "--home", str(home))
    assert code == 0, err + out
    row = status(capsys, home)
    assert row["state"] == "done" and row["blocking"] is None
    old = x509.load_pem_x509_certificate(original[str(estate.cert)])
    assert old.public_bytes(Encoding.PEM) not in estate.bundle.read_bytes()
    assert "svc," not in keytool_list(estate.jks, JKS_PASSWORD, "JKS")
    p12 = pkcs12.load_pkcs12(estate.p12.read_bytes(), b"changeit")
    assert old not in [c.certificate for c in p12.additional_certs]
    assert secret_values(estate.secret)["ca.crt"].count(b"BEGIN CERTIFICATE") == 1
    assert list(yaml.safe_load_all(estate.configmap.read_text()))[1]["data"]["ca.crt"].count("BEGIN CERT") == 1
    # a step past done is a no-op, and re-running is safe
    code, out, _ = tm(capsys, "migrate", "step", bid, "--home", str(home))
    assert code == 0 and "already done" in out
    code, out, _ = tm(capsys, "audit", "--home", str(home), "--json")
    moves = [(e["detail"]["from"], e["detail"]["to"]) for e in json.loads(out)["entries"]
             if e["action"] == "migrate.step"]
    assert moves[-5:] == [("issued", "trusted"), ("trusted", "switched"), ("switched", "verified"),
                          ("verified", "retired"), ("retired", "done")]
    assert any(e["action"] == "migrate.rollback" for e in json.loads(out)["entries"])


def test_dry_run_changes_nothing(capsys, home, estate) -> None:
    """--dry-run names the files a step would write and writes none, nor moves the state."""
    original = estate.files()
    bid = plan_saved(capsys, home, estate)
    code, out, err = tm(capsys, "migrate", "step", bid, "--dry-run", "--home", str(home))
    assert code == 0, err
    assert "trustyard-server.crt" in out and "dry run" in out
    assert not (estate.server_dir / "trustyard-server.crt").exists()
    assert tm(capsys, "migrate", "step", bid, "--home", str(home))[0] == 0
    code, out, err = tm(capsys, "migrate", "step", bid, "--dry-run", "--home", str(home))
    assert code == 0, err
    assert f"would write {estate.jks} (after a backup)" in out
    assert estate.files() == {**original, **{k: v for k, v in estate.files().items() if "server" in k}}
    assert status(capsys, home)["state"] == "issued"
    # rolling back issued removes the CA-issued files it wrote
    code, out, err = tm(capsys, "migrate", "rollback", bid, "--home", str(home))
    assert code == 0, err + out
    assert not (estate.server_dir / "trustyard-server.crt").exists()
    assert not (estate.server_dir / "trustyard-server.key").exists()
    assert estate.files() == original and status(capsys, home)["state"] == "planned"
    code, out, _ = tm(capsys, "migrate", "rollback", bid, "--home", str(home))
    assert code == 1 and "nothing to roll back" in out


def crash(home: Path, after: int, *args: str) -> None:
    """Run a migrate command in a process that dies (os._exit) after ``after`` file writes."""
    env = {**os.environ, "TRUSTYARD_PASSWORD": PASSWORD.decode(), "TRUSTYARD_TEST_CRASH_AFTER_WRITES": str(after),
           "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-m", "trustyard", "migrate", *args, "--home", str(home)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 97, done.stdout + done.stderr


@pytest.mark.parametrize("after", [1, 5], ids=["after-first-write", "after-last-write"])
def test_a_crash_between_writes_is_completed_by_the_rerun(capsys, home, estate, after) -> None:
    """The process dies after the first of the five writes of `trusted`, or after the last one
    but before the state moved: the state is still issued; re-running the step finishes the
    writes, moves to trusted, and the backups hold the original bytes."""
    original = estate.files()
    bid = plan_saved(capsys, home, estate)
    assert tm(capsys, "migrate", "step", bid, "--home", str(home))[0] == 0
    crash(home, after, "step", bid)
    changed = [p for p in estate.clients if p.read_bytes() != original[str(p)]]
    assert len(changed) == after  # killed between two writes (or after all of them)
    assert status(capsys, home)["state"] == "issued"
    code, out, err = tm(capsys, "migrate", "step", bid, "--home", str(home))
    assert code == 0, err + out
    assert "finished the interrupted writes" in out
    assert status(capsys, home)["state"] == "trusted"
    assert all(p.read_bytes() != original[str(p)] for p in estate.clients)
    assert len(keytool_list(estate.jks, JKS_PASSWORD, "JKS").split("trustedcertentry")) == 4  # 3 entries
    backups = sorted((home / "migrate" / "backups" / bid).rglob("*"))
    kept = {p.read_bytes() for p in backups if p.is_file()}
    assert {original[str(p)] for p in estate.clients} <= kept
    assert not list(estate.root.rglob("*.trustyard-*"))  # no staged copy left behind
    assert tm(capsys, "migrate", "rollback", bid, "--home", str(home))[0] == 0
    assert estate.files() == {**original, **{k: v for k, v in estate.files().items() if "server" in k}}


def test_a_crash_during_rollback_is_completed_by_the_rerun(capsys, home, estate) -> None:
    """Rollback dies after restoring two of five files: the state has not moved, and re-running
    the rollback restores the rest byte for byte and returns the boundary to issued."""
    original = estate.files()
    bid = plan_saved(capsys, home, estate)
    assert tm(capsys, "migrate", "step", bid, "--to", "trusted", "--home", str(home))[0] == 0
    crash(home, 2, "rollback", bid)
    assert len([p for p in estate.clients if p.read_bytes() == original[str(p)]]) == 2
    assert status(capsys, home)["state"] == "trusted"
    code, out, err = tm(capsys, "migrate", "rollback", bid, "--home", str(home))
    assert code == 0, err + out
    assert all(p.read_bytes() == original[str(p)] for p in estate.clients)
    assert status(capsys, home)["state"] == "issued"


def test_verified_is_blocked_by_disabled_verification_and_names_it(capsys, home, estate) -> None:
    """A verification_disabled finding (code and host, as the scan reports it) for the
    boundary's host joins the plan, blocks `verified` naming the file and line, and the
    state does not move."""
    from trustyard.ca.config import load_config
    from trustyard.ca.home import open_home_store
    from trustyard.inventory.model import Finding, Inventory, Severity
    from trustyard.migrate import plan as planning
    from trustyard.migrate.steps import Settings, advance
    from trustyard.store.migrate_store import MigrateStore

    bid = plan_saved(capsys, home, estate)
    finding = Finding("verification_disabled", Severity.ERROR, (f"{estate.root}/app/client.py:12",),
                      "verify=False", facts=(("target", f"https://{NAME}:8443/api"),))
    other = {"code": "verification_disabled", "host": "elsewhere.internal", "file": "x.py", "line": 3}
    [b] = planning.build(Inventory(), [finding, other]) or [None]  # no server identity: no boundary
    assert b is None
    found = planning.insecure_findings([finding, other])
    assert [i.host for i in found if planning.host_matches(i.host, [NAME])] == [f"https://{NAME}:8443/api"]
    config = load_config(home)
    store = MigrateStore(open_home_store(config, migrate=False))
    try:
        s = Settings(home=home, config=config, store=store, actor="test",
                     passwords={str(estate.jks): JKS_PASSWORD}, rescan=lambda b: found[:1])
        assert all(o.ok for o in advance(s, bid, "switched"))
        [outcome] = advance(s, bid, "verified")
        assert not outcome.ok and f"{estate.root}/app/client.py:12" in (outcome.blocking or "")
        assert store.get(bid).state == "switched" and store.get(bid).blocking == outcome.blocking
        s.rescan = lambda b: []
        [outcome] = advance(s, bid, "verified")
        assert outcome.ok and store.get(bid).blocking is None
    finally:
        store.sql.close()


def test_a_location_without_the_ca_fails_verification_with_the_doctor_layer(estate) -> None:
    """Only the old self-signed copy as trust: the handshake fails and the doctor names the layer."""
    old = x509.load_pem_x509_certificate(estate.cert.read_bytes())
    assert handshake(estate.endpoint, NAME, [old], 5.0) is None
    other = x509.load_pem_x509_certificate(estate.bundle.read_bytes())  # the unrelated CA's leaf
    failure = handshake(estate.endpoint, NAME, [other], 5.0)
    assert failure is not None and failure.startswith("trust/"), failure
    failure = handshake(estate.endpoint, "wrong.internal", [old], 5.0)
    assert failure is not None and failure.startswith("identity/"), failure


def test_bad_input_is_named_and_nothing_is_written(capsys, home, estate, tmp_path) -> None:
    """A wrong keystore password, a corrupt keystore, a manifest that is not a Kubernetes object,
    a location changed since the plan, an endpoint that is down: each a clear error naming the
    location, and no file changes."""
    # plan time: the JKS without its password
    code, _, err = tm(capsys, "migrate", "plan", str(estate.root), "--save", "--home", str(home))
    assert code != 0 and str(estate.jks) in err and "password" in err
    # a corrupt keystore and a YAML file holding a certificate that is no Kubernetes object
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "broken.jks").write_bytes(b"\xfe\xed\xfe\xed" + b"\x00" * 40)
    (junk / "notk8s.yaml").write_text("certs:\n  - |\n" + "".join(
        f"    {line}\n" for line in estate.cert.read_text().splitlines()))
    code, _, err = tm(capsys, "migrate", "plan", str(junk), "--home", str(home))
    assert code != 0 and "broken.jks" in err and "notk8s.yaml" in err and "not a Kubernetes" in err
    code, out, err = tm(capsys, "migrate", "plan", str(junk), "--exclude", "*/broken.jks", "--exclude",
                        str(junk / "notk8s.yaml"), "--home", str(home))
    assert code == 0 and "nothing to migrate" in out, err
    assert tm(capsys, "migrate", "status", "--home", str(home), "--json")[1].count('"id"') == 0

    bid = plan_saved(capsys, home, estate)
    assert tm(capsys, "migrate", "step", bid, "--home", str(home))[0] == 0
    before = estate.files()
    # a wrong password given at step time
    wrong = tmp_path / "wrong.pw"
    wrong.write_text("nope\n")
    code, _, err = tm(capsys, "migrate", "step", bid, "--password-file", f"{estate.jks}={wrong}", "--home", str(home))
    assert code != 0 and str(estate.jks) in err and "wrong keystore password" in err
    assert estate.files() == before
    # a location changed since the plan
    estate.bundle.write_bytes(estate.bundle.read_bytes() + b"\n")
    before = estate.files()
    code, _, err = tm(capsys, "migrate", "step", bid, "--home", str(home))
    assert code != 0 and str(estate.bundle) in err and "changed since the plan" in err
    assert estate.files() == before
    assert str(estate.bundle) in (status(capsys, home)["blocking"] or "")


def test_switched_refuses_an_endpoint_that_is_down(capsys, home, tmp_path) -> None:
    """The endpoint does not answer: `switched` names it and leaves the server's files alone."""
    with https_server(make_estate(tmp_path / "estate")) as server:
        e = server.estate
        bid = plan_saved(capsys, home, e)
        code, out, err = tm(capsys, "migrate", "step", bid, "--to", "trusted", "--home", str(home))
        assert code == 0, err + out
    before = e.files()
    code, _, err = tm(capsys, "migrate", "step", bid, "--home", str(home), "--timeout", "2s")
    assert code != 0 and e.endpoint in err and "unreachable" in err
    assert e.files() == before
    assert status(capsys, home)["state"] == "trusted"


def test_switched_waits_for_the_operator_to_reload(capsys, home, tmp_path) -> None:
    """A server that reads its files only when reloaded: `switched` replaces them, says to reload,
    and stays at trusted; after the reload the re-run finds the files written and moves on."""
    with https_server(make_estate(tmp_path / "estate"), reload_every_connection=False) as server:
        e = server.estate
        bid = plan_saved(capsys, home, e)
        assert tm(capsys, "migrate", "step", bid, "--to", "trusted", "--home", str(home))[0] == 0
        code, out, err = tm(capsys, "migrate", "step", bid, "--wait", "1s", "--home", str(home))
        assert code == 1, err
        assert "reload the server" in out and "still serves" in out
        row = status(capsys, home)
        assert row["state"] == "trusted" and "reload the server" in row["blocking"]
        new_cert = (e.server_dir / "trustyard-server.crt").read_bytes()
        assert e.cert.read_bytes() == new_cert  # the files are in place, waiting for the reload
        server.reload()
        code, out, err = tm(capsys, "migrate", "step", bid, "--home", str(home))
        assert code == 0, err + out
        row = status(capsys, home)
        assert row["state"] == "switched" and row["blocking"] is None
        # the rollback of switched puts the self-signed files back; --reload-cmd reloads for us
        assert tm(capsys, "migrate", "rollback", bid, "--home", str(home))[0] == 0
        assert e.cert.read_bytes() != new_cert and status(capsys, home)["state"] == "trusted"
        server.reload()
        code, out, err = tm(capsys, "migrate", "step", bid, "--wait", "1s", "--reload-cmd", f"touch {server.flag}",
                            "--home", str(home))
        assert code == 0, err + out
        assert "ran 'touch" in out and status(capsys, home)["state"] == "switched"
        code, out, err = tm(capsys, "migrate", "rollback", bid, "--home", str(home))
        code, out, err = tm(capsys, "migrate", "step", bid, "--reload-cmd", "false", "--home", str(home))
        assert code == 1 and "the reload command 'false' failed" in out


def test_plan_orders_by_risk(tmp_path) -> None:
    """Fewest client locations first, then non-production before production, then boundaries
    without disabled verification before those with it."""
    from trustyard.inventory.findings import Rules
    from trustyard.inventory.scan import ScanOptions, run_scan
    from trustyard.migrate import plan as planning
    from trustyard.testing import self_signed

    def service(env: str, name: str, clients: int) -> None:
        leaf = self_signed(name)
        d = tmp_path / env / name.split(".")[0]
        d.mkdir(parents=True)
        leaf.write_pair(d, "tls", chain=False)
        for n in range(clients):
            (d / f"client{n}-ca-bundle.pem").write_bytes(leaf.cert_pem())

    service("dev", "a.internal", 1)
    service("dev", "b.internal", 1)
    service("prod", "c.internal", 1)
    service("dev", "d.internal", 2)
    from datetime import UTC, datetime

    inv = run_scan(ScanOptions(environments=(("dev", str(tmp_path / "dev")), ("prod", str(tmp_path / "prod"))),
                               rules=Rules(now=datetime.now(UTC))))
    insecure = {"code": "verification_disabled", "host": "b.internal", "file": "app.py", "line": 7}
    boundaries = planning.build(inv, [insecure])
    assert [b.names[0] for b in boundaries] == ["a.internal", "b.internal", "c.internal", "d.internal"]
    assert [b.environment for b in boundaries] == ["dev", "dev", "prod", "dev"]
    assert [len(b.insecure) for b in boundaries] == [0, 1, 0, 0]
    assert "needs fixing: app.py:7 (verification off for b.internal)" in planning.render(boundaries)


def test_disabled_verification_found_by_the_scan_blocks_verified_until_fixed(capsys, home, estate) -> None:
    """A client script calling the boundary's host with verify=False is in the plan (the scan's
    verification_disabled finding, by its host); `verified` names its file and line and stays
    blocked until the script verifies again."""
    app = estate.root / "app"
    app.mkdir()
    script = app / "client.py"
    script.write_text(f'import requests\n\nrequests.get("https://{NAME}/orders", verify=False)\n')
    (app / "other.py").write_text('import requests\n\nrequests.get("https://elsewhere.internal/", verify=False)\n')
    bid = plan_saved(capsys, home, estate)
    code, out, _ = tm(capsys, "migrate", "plan", str(estate.root), "--endpoint", estate.endpoint, "--password-file",
                      f"{estate.jks}={estate.jks_password_file}", "--json")
    [b] = json.loads(out)["boundaries"]
    assert [(i["file"], i["line"]) for i in b["insecure"]] == [(str(script), 3)]
    assert tm(capsys, "migrate", "step", bid, "--to", "switched", "--home", str(home))[0] == 0
    code, out, _ = tm(capsys, "migrate", "step", bid, "--home", str(home))
    assert code == 1 and f"{script}:3" in out
    assert status(capsys, home)["state"] == "switched"
    script.write_text(f'import requests\n\nrequests.get("https://{NAME}/orders", verify="/etc/ca.crt")\n')
    code, out, err = tm(capsys, "migrate", "step", bid, "--home", str(home))
    assert code == 0, err + out
    assert status(capsys, home)["state"] == "verified"


def test_plan_pairs_a_certificate_with_its_key_across_directories_and_old_copies(tmp_path) -> None:
    """certs/svc.pem beside private/svc.key is the server's certificate; a client bundle holding an
    earlier self-signed certificate of the same key is a client location of the same boundary,
    and retiring removes that copy too."""
    from datetime import UTC, datetime, timedelta

    from trustyard.inventory.findings import Rules
    from trustyard.inventory.scan import ScanOptions, run_scan
    from trustyard.migrate import plan as planning
    from trustyard.migrate.locations import remove_cert
    from trustyard.testing import TestCA, self_signed

    current = self_signed(NAME)
    earlier = self_signed(NAME, key=current.key, ttl=timedelta(days=30))
    (tmp_path / "certs").mkdir()
    (tmp_path / "private").mkdir()
    (tmp_path / "certs" / "svc.pem").write_bytes(current.cert_pem())
    (tmp_path / "private" / "svc.key").write_bytes(current.key_pem())
    bundle = tmp_path / "client-ca.pem"
    other = TestCA("Other").issue("other.internal").cert_pem()
    bundle.write_bytes(other + earlier.cert_pem())
    inv = run_scan(ScanOptions(paths=(str(tmp_path),), rules=Rules(now=datetime.now(UTC))))
    [b] = planning.build(inv)
    assert b.cert_files == [str(tmp_path / "certs" / "svc.pem")]
    assert b.key_files == [str(tmp_path / "private" / "svc.key")]
    assert [c.path for c in b.clients] == [str(bundle)]
    data = bundle.read_bytes()
    for fingerprint in b.old_fingerprints:
        data = remove_cert(b.clients[0], data, fingerprint, "")
    assert data == other



def test_verified_checks_every_name_of_the_server(capsys, home, tmp_path) -> None:
    """A server named svc.internal and api.svc.internal that still serves the old self-signed
    certificate when a client asks for api.svc.internal (one virtual host not switched):
    `switched` passes on the first name, `verified` is blocked naming the second, with every
    location; once that host serves the new certificate too, `verified` passes for both."""
    from trustyard.ca.config import load_config
    from trustyard.ca.home import open_home_store
    from trustyard.migrate.steps import Settings, advance
    from trustyard.store.migrate_store import MigrateStore

    second = "api.svc.internal"
    e = make_estate(tmp_path / "estate", names=(NAME, second))
    pinned = tmp_path / "vhost"  # outside the scanned tree: the left-behind virtual host's files
    pinned.mkdir()
    (pinned / "old.crt").write_bytes(e.cert.read_bytes())
    (pinned / "old.key").write_bytes(e.key.read_bytes())
    e.pinned = {second: (pinned / "old.crt", pinned / "old.key")}
    with https_server(e):
        bid = plan_saved(capsys, home, e)
        config = load_config(home)
        store = MigrateStore(open_home_store(config, migrate=False))
        try:
            s = Settings(home=home, config=config, store=store, actor="test",
                         passwords={str(e.jks): JKS_PASSWORD}, rescan=lambda b: [])
            assert all(o.ok for o in advance(s, bid, "switched"))
            [outcome] = advance(s, bid, "verified")
            assert not outcome.ok and store.get(bid).state == "switched"
            blocking = outcome.blocking or ""
            assert f"{second}: {e.endpoint} still serves CN={NAME}" in blocking, blocking
            assert f"to a client asking for {second}, not the CA-issued certificate" in blocking
            assert f"asking for {NAME}" not in blocking
            (pinned / "old.crt").write_bytes(e.cert.read_bytes())  # the operator switches that host too
            (pinned / "old.key").write_bytes(e.key.read_bytes())
            [outcome] = advance(s, bid, "verified")
            assert outcome.ok, outcome.blocking
            assert f"{e.bundle}: verifies {second} at {e.endpoint}" in outcome.lines
            assert f"{e.bundle}: verifies {NAME} at {e.endpoint}" in outcome.lines
        finally:
            store.sql.close()


def test_the_reload_command_runs_without_the_ca_password(capsys, home, tmp_path) -> None:
    """`--reload-cmd` runs without TRUSTYARD_PASSWORD in its environment while the step that ran
    it succeeds; a failing command's output reaches the terminal but not the blocking reason or
    the audit log."""
    from trustyard.ca.config import load_config
    from trustyard.ca.home import open_home_store

    with https_server(make_estate(tmp_path / "estate")) as server:
        e = server.estate
        bid = plan_saved(capsys, home, e)
        assert tm(capsys, "migrate", "step", bid, "--to", "trusted", "--home", str(home))[0] == 0
        env_file = tmp_path / "reload-env"
        code, out, err = tm(capsys, "migrate", "step", bid, "--reload-cmd", f"env > {env_file}",
                            "--home", str(home))
        assert code == 0, err + out
        assert status(capsys, home)["state"] == "switched"
        seen = env_file.read_text()
        assert "TRUSTYARD_PASSWORD=" not in seen and PASSWORD.decode() not in seen
        assert "PATH=" in seen  # the rest of the environment is kept
        assert tm(capsys, "migrate", "rollback", bid, "--home", str(home))[0] == 0
        code, out, err = tm(capsys, "migrate", "step", bid, "--reload-cmd", "echo leaked-$((6*7)) >&2; exit 3",
                            "--home", str(home))
        assert code == 1 and "leaked-42" in err
        row = status(capsys, home)
        assert "exit 3" in row["blocking"] and "leaked-42" not in row["blocking"]
    store = open_home_store(load_config(home), migrate=False)
    try:
        assert not [a for a in store.audit_entries() if "leaked-42" in json.dumps(a.detail)]
    finally:
        store.close()


def test_a_client_location_reached_through_a_symlink_is_refused(capsys, home, estate, tmp_path) -> None:
    """A trust bundle found through a directory symlink and another that is a file symlink, both
    below the scanned root: `step --to trusted` refuses naming both, and changes no file, neither
    inside the estate nor where the links point."""
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    leaf_pem = estate.bundle.read_bytes()
    (outside / "dir" / "bundle.pem").write_bytes(leaf_pem)
    (outside / "file.pem").write_bytes(leaf_pem)
    (estate.root / "linked").symlink_to(outside / "dir", target_is_directory=True)
    (estate.root / "clients" / "linked.pem").symlink_to(outside / "file.pem")
    bid = plan_saved(capsys, home, estate)
    before = {**estate.files(), **{str(p): p.read_bytes() for p in outside.rglob("*") if p.is_file()}}
    code, _, err = tm(capsys, "migrate", "step", bid, "--to", "trusted", "--home", str(home))
    assert code != 0
    assert "[migrateLocation]" in err and "symbolic link" in err
    assert f"{estate.root / 'linked' / 'bundle.pem'} (through {estate.root / 'linked'})" in err
    assert str(estate.root / "clients" / "linked.pem") in err
    after = {**estate.files(), **{str(p): p.read_bytes() for p in outside.rglob("*") if p.is_file()}}
    assert after == before
    assert (estate.root / "clients" / "linked.pem").is_symlink()
    assert not list(outside.rglob(".*trustyard*")) and not list(estate.root.rglob(".*.trustyard-*"))
    assert status(capsys, home)["state"] == "issued"


def test_rolling_back_issued_revokes_the_certificate_it_issued(capsys, home, estate) -> None:
    """Rollback from issued removes the new files and revokes the CA-issued certificate
    (reason superseded, by the CLI user, in the audit log beside the rollback); a second
    issue after it gets a fresh certificate that is valid."""
    from trustyard.ca.config import load_config
    from trustyard.ca.home import open_home_store
    from trustyard.x509.summary import serial_text

    bid = plan_saved(capsys, home, estate)
    assert tm(capsys, "migrate", "step", bid, "--home", str(home))[0] == 0
    new_cert = estate.server_dir / "trustyard-server.crt"
    serial = serial_text(x509.load_pem_x509_certificate(new_cert.read_bytes()).serial_number)
    code, out, err = tm(capsys, "migrate", "rollback", bid, "--home", str(home))
    assert code == 0, err + out
    assert f"revoked serial {serial} (reason superseded)" in out
    assert not new_cert.exists() and status(capsys, home)["state"] == "planned"
    store = open_home_store(load_config(home), migrate=False)
    try:
        record = store.get(serial)
        assert record is not None and record.status == "revoked" and record.revocation_reason == "superseded"
        entries = list(store.audit_entries())
        [revoke] = [e for e in entries if e.action == "certificate.revoke"]
        assert revoke.target == serial and revoke.detail["reason"] == "superseded"
        assert revoke.actor.startswith("cli:")
        [rollback] = [e for e in entries if e.action == "migrate.rollback"]
        assert rollback.seq > revoke.seq and serial in rollback.detail["revoked"]
    finally:
        store.close()
    assert tm(capsys, "migrate", "step", bid, "--home", str(home))[0] == 0
    again = serial_text(x509.load_pem_x509_certificate(new_cert.read_bytes()).serial_number)
    store = open_home_store(load_config(home), migrate=False)
    try:
        record = store.get(again)
        assert again != serial and record is not None and record.status == "issued"
    finally:
        store.close()


def test_issued_revokes_the_certificate_when_its_files_cannot_be_written(capsys, home, estate) -> None:
    """When `issued` cannot write the new files after the CA issued the certificate (here the
    certificate's target is a directory), the certificate is revoked (superseded) so no valid
    certificate whose key was only in memory is left; the re-run issues one that stays valid."""
    from trustyard.ca.config import load_config
    from trustyard.ca.home import open_home_store

    bid = plan_saved(capsys, home, estate)
    blocker = estate.server_dir / "trustyard-server.crt"
    blocker.mkdir()
    code, out, err = tm(capsys, "migrate", "step", bid, "--home", str(home))
    assert code != 0 and "Is a directory" in err and "revoked serial" in err, err + out
    assert status(capsys, home)["state"] == "planned"
    store = open_home_store(load_config(home), migrate=False)
    try:
        records = store.list(limit=1000)
        assert len(records) == 1  # the certificate was issued
        assert records[0].status == "revoked" and records[0].revocation_reason == "superseded"
    finally:
        store.close()
    assert not list(estate.server_dir.glob(".*trustyard-*"))
    assert not (estate.server_dir / "trustyard-server.key").exists()
    blocker.rmdir()
    code, out, err = tm(capsys, "migrate", "step", bid, "--home", str(home))
    assert code == 0, err + out
    store = open_home_store(load_config(home), migrate=False)
    try:
        assert sorted(r.status for r in store.list(limit=1000)) == ["issued", "revoked"]
    finally:
        store.close()


def test_a_second_command_on_a_boundary_being_moved_is_refused_naming_the_first(capsys, home, estate,
                                                                                 tmp_path) -> None:
    """While one `migrate step` process runs (its reload command is sleeping), a second `step`
    or `rollback` on the same boundary is refused naming the first one's pid, and changes
    nothing; the first finishes. A process killed while holding the lock does not keep it."""
    import time

    bid = plan_saved(capsys, home, estate)
    assert tm(capsys, "migrate", "step", bid, "--to", "trusted", "--home", str(home))[0] == 0
    flag = tmp_path / "reloading"
    env = {**os.environ, "TRUSTYARD_PASSWORD": PASSWORD.decode(), "PYTHONPATH": os.pathsep.join(sys.path)}
    first = subprocess.Popen([sys.executable, "-m", "trustyard", "migrate", "step", bid, "--home", str(home),
                              "--reload-cmd", f"touch {flag} && sleep 5"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not flag.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert flag.exists(), first.communicate(timeout=60)
        before = estate.files()
        for command in ("step", "rollback"):
            code, out, err = tm(capsys, "migrate", command, bid, "--home", str(home))
            assert code != 0, out
            assert f"boundary {bid} is being moved by another process (pid {first.pid} since " in err, err
        assert first.poll() is None  # refused while the first was still running
        assert estate.files() == before and status(capsys, home)["state"] == "trusted"
    finally:
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0, out + err
    assert status(capsys, home)["state"] == "switched"
    # killed between two writes of `retired`, holding the lock: the lock goes with the process
    assert tm(capsys, "migrate", "step", bid, "--home", str(home))[0] == 0  # verified
    crash(home, 1, "step", bid)
    assert b'"pid"' in (home / "migrate" / "locks" / f"{bid}.lock").read_bytes()  # left as the crash left it
    code, out, err = tm(capsys, "migrate", "step", bid, "--home", str(home))
    assert code == 0, err + out
    assert status(capsys, home)["state"] == "retired"
