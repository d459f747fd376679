"""The states of a boundary and the step into each, with its writes and its checks.

    planned -> issued -> trusted -> switched -> verified -> retired -> done

A step reads the boundary's files, refusing any that changed since the plan or the last step
recorded them (``LOCATION_CHANGED``), works out the new bytes of every file it writes, and
hands them to ``journal`` (intent in the database, backups, staged copies, renames). Then its
check runs; only when it passes does the state move (with the journal entry marked done and an
audit entry, in one transaction). A failed check records what blocks the boundary and changes
nothing further; re-running the step finds its writes already made and checks again.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..ca.config import Config
from ..errors import BadRequest, Code, Conflict, TrustyardError
from ..store.migrate_store import BoundaryRow, JournalRow, MigrateStore
from ..store.records import AuditEvent
from ..units import format_time
from . import journal
from .locations import add_anchors, remove_cert, trusted_certs
from .lock import boundary_lock
from .plan import Boundary, Insecure, Location, host_matches, insecure_findings, kind_of
from .revoke import Revoker
from .verify import handshake, leaf_for, served, wait_for_leaf

_SHA256 = hashes.SHA256()
STATES = ("planned", "issued", "trusted", "switched", "verified", "retired", "done")
DEFAULT_PASSWORDS = ("", "changeit")


class Blocked(Exception):
    """A step's check failed: the message says what to fix."""


@dataclass
class Settings:
    home: Path
    config: Config
    store: MigrateStore
    actor: str
    passwords: dict[str, str] = field(default_factory=dict)  # keystore path -> password
    ca_password_file: str | None = None
    provisioner: str = "default"
    wait: float = 10.0
    timeout: float = 5.0
    dry_run: bool = False
    rescan: Callable[[Boundary], list[Insecure]] | None = None  # default: the scan over the findings' files
    reload_cmd: str | None = None  # run by `switched` once the server's files are replaced

    @property
    def backups(self) -> Path:
        return self.home / "migrate" / "backups"


@dataclass
class Outcome:
    boundary: str
    step: str
    ok: bool
    from_state: str
    state: str
    lines: list[str] = field(default_factory=list)
    blocking: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.boundary, "step": self.step, "ok": self.ok, "from": self.from_state, "state": self.state,
                "lines": self.lines, "blocking": self.blocking}

    def render(self) -> str:
        head = f"{self.boundary}: {self.step}: " + ("ok" if self.ok else "blocked")
        if any(line.startswith("dry run") for line in self.lines):
            head = f"{self.boundary}: {self.step}: dry run"
        head += f" (state {self.state})"
        out = [head] + [f"  {line}" for line in self.lines]
        if self.blocking:
            out.append(f"  to fix: {self.blocking}")
        return "\n".join(out)


def advance(s: Settings, text_id: str, to: str | None = None) -> list[Outcome]:
    """Move the boundary to the next state (or through each state up to ``to``), holding its
    lock (``migrate/lock.py``): a second process on the same boundary is refused, naming this one."""
    bid = s.store.resolve(text_id).id
    if s.dry_run:
        return _advance(s, bid, to)
    with boundary_lock(s.home, bid, f"step --to {to}" if to else "step"):
        return _advance(s, bid, to)


def _advance(s: Settings, bid: str, to: str | None) -> list[Outcome]:
    row = s.store.get(bid)  # read under the lock: another process may have moved it just before
    index = STATES.index(row.state)
    target = STATES.index(to) if to else min(index + 1, len(STATES) - 1)
    if index >= target:
        return [Outcome(row.id, to or row.state, True, row.state, row.state,
                        [f"already {row.state}: nothing to do"])]
    outcomes = []
    while STATES.index(row.state) < target:
        outcome = _one(s, row, STATES[STATES.index(row.state) + 1])
        outcomes.append(outcome)
        if not outcome.ok or s.dry_run:
            if s.dry_run and STATES.index(row.state) + 1 < target:
                outcome.lines.append("(a dry run shows one step: the next ones depend on what this one writes)")
            break
        row = s.store.get(row.id)
    return outcomes


def _event(s: Settings, action: str, b: Boundary, outcome: str = "ok", **detail: Any) -> AuditEvent:
    return AuditEvent(s.actor, action, f"migrate/{b.id}", outcome, detail)


def _moved(s: Settings, b: Boundary, from_state: str, to_state: str, seq: int, files: list[str]) -> AuditEvent:
    return AuditEvent(s.actor, "migrate.step", f"migrate/{b.id}", "ok",
                      {"from": from_state, "to": to_state, "journal": seq, "files": files})


def _one(s: Settings, row: BoundaryRow, step: str) -> Outcome:
    b = Boundary.from_json(row.plan)
    out = Outcome(b.id, step, True, row.state, row.state)
    rows = s.store.journal(b.id)
    seq: int | None = None
    for j in rows:
        if j.status != "pending":
            continue
        if (j.step, j.from_state) != (step, row.state):
            raise Conflict(f"boundary {b.id} has an interrupted {j.step} step: run `trustyard migrate rollback {b.id}`",
                           code=Code.CONFLICT)
        if s.dry_run:
            out.lines.append(f"would finish the interrupted writes of journal entry {j.seq}")
            return out
        if journal.resume(s.store, j):
            seq = j.seq
            out.lines.append(f"finished the interrupted writes of journal entry {j.seq}")
    try:
        expected = _expected(b, s.store.journal(b.id))
        if seq is None:
            contents, notes = _contents(s, b, step, expected)
            try:
                writes = journal.plan_writes(b.id, step, contents, s.backups, b.roots)
                if s.dry_run:
                    out.lines += ["dry run: nothing is changed", *notes]
                    out.lines += [f"would write {w['path']}" + (" (after a backup)" if w["backup"] else
                                                                 " (new file)") for w in writes]
                    if step == "switched" and s.reload_cmd:
                        out.lines.append(f"then: run {s.reload_cmd!r}")
                    out.lines += [f"then: {c}" for c in _CHECKS[step]]
                    return out
                seq = s.store.journal_open(b.id, step, row.state, writes)
                journal.execute(s.store, seq, contents)
            except BaseException:
                if step == "issued" and not s.dry_run:
                    _withdraw(s, b, contents, seq)
                raise
            out.lines += notes
            out.lines += [f"wrote {w['path']}" + (f" (backup {w['backup'].replace('{seq}', str(seq))})"
                                                 if w["backup"] else "") for w in writes]
            expected = _expected(b, s.store.journal(b.id))
        if step == "switched" and s.reload_cmd:
            out.lines.append(_reload(s.reload_cmd, s.timeout))
        try:
            out.lines += _check(s, b, step, expected)
        except Blocked:
            if step == "retired":  # the old copies go back: the boundary stays verified
                entry = s.store.journal_get(seq)
                journal.undo(entry)
                s.store.journal_mark(seq, "rolled_back")
                out.lines.append("the removals were undone from the backups")
            raise
    except Blocked as exc:
        s.store.block(b.id, str(exc), _event(s, "migrate.blocked", b, "denied", step=step, why=str(exc)))
        out.ok, out.blocking = False, str(exc)
        return out
    except TrustyardError as exc:
        if not s.dry_run:
            s.store.block(b.id, exc.detail, _event(s, "migrate.blocked", b, "denied", step=step, why=exc.detail))
        raise
    written = [w["path"] for w in s.store.journal_get(seq).writes]
    s.store.move(b.id, row.state, step, _moved(s, b, row.state, step, seq, written), journal=seq)
    out.state = step
    return out


_CHECKS = {
    "issued": [],
    "trusted": [],
    "switched": ["probe the endpoint until it serves the CA-issued certificate"],
    "verified": ["the endpoint sends the CA-issued certificate for every name of the server",
                 "a handshake per client location and per name of the server, with only the location's "
                 "trust, that name as SNI and hostname",
                 "no verification_disabled finding left for the boundary's hosts"],
    "retired": ["the verified checks again (the removals are undone if they fail)"],
    "done": [],
}


def _expected(b: Boundary, rows: list[JournalRow]) -> dict[str, str | None]:
    """What each file should hold now: the plan's checksum, then each step's writes."""
    out: dict[str, str | None] = dict(b.checksums)
    for j in rows:
        if j.status in ("done", "pending"):
            for w in j.writes:
                out[w["path"]] = w["after"]
    return out


def _read(path: str, expected: dict[str, str | None], what: str) -> bytes:
    data = journal.current(path)
    if path in expected and journal.sha256(data) != expected[path]:
        raise Conflict(f"{path} changed since the plan (or the last step) recorded it: check who changed it, "
                       "then restore it or plan again", code=Code.LOCATION_CHANGED, location=path)
    if data is None:
        raise BadRequest(f"{what} {path} is missing", code=Code.MIGRATE_LOCATION, location=path)
    return data


def _mode(path: str) -> int:
    return Path(path).stat().st_mode & 0o777


def _password(s: Settings, b: Boundary, loc: Location, data: bytes) -> str:
    """The password that opens the keystore: given, else '' or changeit."""
    if loc.kind not in ("jks", "p12"):
        return ""
    given = s.passwords.get(loc.path)
    if given is None and loc.path in b.password_files:
        try:
            given = Path(b.password_files[loc.path]).read_text().rstrip("\r\n")
        except OSError as exc:
            raise BadRequest(f"{loc.name}: cannot read its password file {b.password_files[loc.path]}: "
                             f"{exc.strerror}", code=Code.MIGRATE_LOCATION, location=loc.name) from None
    candidates = [given] if given is not None else list(DEFAULT_PASSWORDS)
    error: BadRequest | None = None
    for candidate in candidates:
        try:
            trusted_certs(loc, data, candidate)
            return candidate
        except BadRequest as exc:
            error = exc
    assert error is not None
    raise error


def _by_file(b: Boundary) -> dict[str, list[Location]]:
    files: dict[str, list[Location]] = {}
    for loc in b.clients:
        files.setdefault(loc.path, []).append(loc)
    return files


Contents = dict[str, tuple[bytes | None, int]]


def _contents(s: Settings, b: Boundary, step: str, expected: dict[str, str | None]) -> tuple[Contents, list[str]]:
    if step == "issued":
        return _issue(s, b, expected)
    if step in ("trusted", "retired"):
        from ..ca.bundle import roots_of

        roots = roots_of(s.config)
        contents: Contents = {}
        for path, locs in _by_file(b).items():
            data = _read(path, expected, "client location")
            new = data
            for loc in locs:
                password = _password(s, b, loc, new)
                if step == "trusted":
                    new = add_anchors(loc, new, roots, password)
                else:
                    have = {c.fingerprint(_SHA256) for c in trusted_certs(loc, new, password)}
                    if not all(r.fingerprint(_SHA256) in have for r in roots):
                        raise Blocked(f"{loc.name} does not hold the CA root: re-run the trusted step first")
                    for fingerprint in b.old_fingerprints or [b.fingerprint]:
                        new = remove_cert(loc, new, fingerprint, password)
            contents[path] = (new, _mode(path))
        verb = "add the CA root to" if step == "trusted" else "remove the self-signed copy from"
        return contents, [f"{verb} {loc.name}" for loc in b.clients]
    if step == "switched":
        return _switch(s, b, expected)
    return {}, []


def _issue(s: Settings, b: Boundary, expected: dict[str, str | None]) -> tuple[Contents, list[str]]:
    if not b.cert_files or not b.names:
        raise BadRequest(f"boundary {b.id} has no certificate file or no names to issue for",
                         code=Code.MIGRATE_LOCATION)
    for path in b.cert_files + b.key_files:
        _read(path, expected, "server file")
    new_cert, new_key = b.new_files()
    sans = " ".join(f"--san {n}" for n in b.names)
    agent = (f"trustyard token {b.names[0]} {sans} > TOKEN && trustyard agent --name {b.names[0]} {sans}"
             f" --token-file TOKEN --out {Path(new_cert).parent}/trustyard")
    notes = [f"issue for {', '.join(b.names)} through provisioner {s.provisioner!r} (key made here)",
             f"or let the agent manage it: {agent}"]
    if s.dry_run:
        return {new_cert: (b"", 0o644), new_key: (b"", 0o600)}, notes
    from ..ca.home import load_authority, read_password
    from ..client import make_csr
    from ..x509.keys import KeyType, generate_private_key, private_key_pem
    from ..x509.names import parse_names

    password = read_password(s.ca_password_file, insecure_no_password=not s.config.encrypted_keys)
    authority = load_authority(s.home, password, minting=True, config=s.config, migrate=False)
    try:
        key = generate_private_key(KeyType.EC_P256)
        csr = make_csr(key, parse_names(b.names))
        token = authority.mint_token(s.provisioner, b.names[0], list(b.names), actor=s.actor)
        issued = authority.issue_for_token(csr, token, actor=s.actor)
    finally:
        authority.store.close()
    notes.append(f"issued serial {issued.record.serial}, valid until {format_time(issued.record.not_after)}")
    return {new_cert: ((issued.certificate_pem + issued.chain_pem).encode(), 0o644),
            new_key: (private_key_pem(key), 0o600)}, notes


def _withdraw(s: Settings, b: Boundary, contents: Contents, seq: int | None) -> None:
    """``issued`` failed after the CA issued the certificate but before its key was safely in
    place: undo the partial writes and revoke the certificate (its key is lost with this process),
    so no valid certificate is left without a key and the re-run issues a fresh one."""
    new_cert, _ = b.new_files()
    pem = contents[new_cert][0]
    try:
        if seq is not None:
            journal.abandon(s.store, s.store.journal_get(seq))
        assert pem is not None
        line = Revoker(s.home, s.config, s.ca_password_file).revoke_pem(pem, s.actor, new_cert)
    except Exception as exc:  # the original failure is the one to report; say what is left
        line = f"could not revoke the certificate just issued for {', '.join(b.names)} ({exc}): revoke it by hand"
    sys.stderr.write(f"trustyard: the issued step failed before the new key was saved; {line}\n")


def _switch(s: Settings, b: Boundary, expected: dict[str, str | None]) -> tuple[Contents, list[str]]:
    if not b.endpoint:
        raise BadRequest(f"boundary {b.id} has no endpoint: plan again with --endpoint HOST:PORT",
                         code=Code.MIGRATE_LOCATION)
    cert_file, key_file = b.cert_files[0], (b.key_files or b.cert_files)[0]
    for path in dict.fromkeys([cert_file, key_file]):
        _read(path, expected, "server file")
        if kind_of(path) != "pem":
            raise BadRequest(f"{path} is not a PEM file: switch this server by hand (the new files are "
                             f"{', '.join(b.new_files())})", code=Code.MIGRATE_LOCATION, location=path)
    _, problem = served(b.endpoint, b.names[0], s.timeout)
    if problem:
        raise BadRequest(f"{problem}: start it, then re-run the step", code=Code.MIGRATE_LOCATION,
                         location=b.endpoint)
    new_cert, new_key = b.new_files()
    cert_pem = _read(new_cert, expected, "the issued certificate")
    key_pem = _read(new_key, expected, "the issued key")
    if cert_file == key_file:
        return {cert_file: (key_pem + cert_pem, 0o600)}, [f"replace {cert_file}"]
    return ({cert_file: (cert_pem, _mode(cert_file)), key_file: (key_pem, 0o600)},
            [f"replace {cert_file} and {key_file} with the CA-issued ones"])


def _reload(command: str, timeout: float) -> str:
    """Run the operator's reload command; a failure blocks the step (the files stay replaced).

    The command runs without TRUSTYARD_PASSWORD (the CA key password): a server it starts in the
    background would otherwise keep it in its environment. TRUSTYARD_PASSWORD_FILE names a file
    only, so it stays. The command's output goes to the operator's terminal, never into the
    blocking reason or the audit log (it may print secrets)."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "TRUSTYARD_PASSWORD"}
    try:
        done = subprocess.run(command, shell=True, capture_output=True, text=True, env=env,
                              timeout=max(timeout, 60.0))
    except subprocess.TimeoutExpired:
        raise Blocked(f"the reload command {command!r} did not finish: reload the server by hand, then re-run "
                      "the step") from None
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        sys.stderr.flush()
        raise Blocked(f"the reload command {command!r} failed (exit {done.returncode}); its output is above")
    return f"ran {command!r}"


def _check(s: Settings, b: Boundary, step: str, expected: dict[str, str | None]) -> list[str]:
    if step == "switched":
        assert b.endpoint is not None
        new_cert, _ = b.new_files()
        leaf = x509.load_pem_x509_certificate(Path(new_cert).read_bytes())
        problem = wait_for_leaf(b.endpoint, b.names[0], leaf.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo), s.wait, s.timeout)
        if problem:
            files = ", ".join(dict.fromkeys(b.cert_files[:1] + b.key_files[:1]))
            raise Blocked(f"{problem}: reload the server so it reads {files}, then re-run "
                          f"`trustyard migrate step {b.id}`")
        from ..ca.bundle import roots_of

        # Polled within --wait too: a server still reloading (nginx's old workers finishing) may
        # answer one connection with the new certificate and the next with the old one.
        anchors, deadline = roots_of(s.config), time.monotonic() + s.wait
        while (failure := handshake(b.endpoint, b.names[0], anchors, s.timeout)) and time.monotonic() < deadline:
            time.sleep(0.25)
        if failure:  # e.g. the intermediate left out of the served chain
            raise Blocked(f"{b.endpoint} serves the new certificate but a client trusting the CA fails: {failure}")
        return [f"{b.endpoint} serves the CA-issued certificate, and its chain verifies to the CA root"]
    if step in ("verified", "retired"):
        return _verify(s, b, expected)
    return []


def _verify(s: Settings, b: Boundary, expected: dict[str, str | None]) -> list[str]:
    if not b.endpoint:
        raise Blocked(f"boundary {b.id} has no endpoint to verify against: plan again with --endpoint HOST:PORT")
    _, down = served(b.endpoint, b.names[0], s.timeout)
    if down:
        raise Blocked(f"{down}: start it, then re-run the step")
    problems, lines = [], []
    new_cert, _ = b.new_files()
    want = _spki_der(x509.load_pem_x509_certificate(Path(new_cert).read_bytes()))
    for name in b.names:  # a server choosing its certificate by SNI may still send the old one for a name
        leaf, problem = leaf_for(b.endpoint, name, s.timeout)
        if leaf is not None and _spki_der(leaf) != want:
            problem = (f"{b.endpoint} still serves {leaf.subject.rfc4514_string()} (issuer "
                       f"{leaf.issuer.rfc4514_string()}) to a client asking for {name}, not the CA-issued certificate")
        if problem:
            problems.append(f"{name}: {problem}")
    for loc in b.clients:
        data = _read(loc.path, expected, "client location")
        certs = trusted_certs(loc, data, _password(s, b, loc, data))
        for name in b.names:  # each name a client may dial: SNI and the hostname checked
            failure = handshake(b.endpoint, name, certs, s.timeout)
            if failure:
                problems.append(f"{loc.name} as {name}: {failure}")
            else:
                lines.append(f"{loc.name}: verifies {name} at {b.endpoint}")
    left = (s.rescan or _rescan)(b)
    for finding in left:
        problems.append(f"{finding.name}: verification is disabled for {finding.host} "
                        f"({finding.construct or 'verification off'}): turn it on with the CA bundle")
    if problems:
        raise Blocked("; ".join(problems))
    return lines


def _spki_der(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _rescan(b: Boundary) -> list[Insecure]:
    """The boundary's ``verification_disabled`` findings still there: the scan over their files."""
    files = [i.file for i in b.insecure if Path(i.file).exists()]
    if not files:
        return []
    from datetime import UTC, datetime

    from ..inventory.findings import Rules
    from ..inventory.scan import ScanOptions, run_scan

    inv = run_scan(ScanOptions(paths=tuple(dict.fromkeys(files)), rules=Rules(now=datetime.now(UTC))))
    return [i for i in insecure_findings(inv.findings) if host_matches(i.host, b.names)]


def roll_back(store: MigrateStore, actor: str, text_id: str, revoker: Revoker | None = None,
              home: Path | None = None) -> Outcome:
    """Undo the boundary's last step: its files back from the backups, its state the one before.
    Rolling back ``issued`` revokes the certificate it issued (``revoker``; without one, the
    rollback is refused, so no valid certificate is left behind unsaid). With the CA ``home``,
    under the boundary's lock, as a step."""
    bid = store.resolve(text_id).id
    if home is None:
        return _roll_back(store, actor, bid, revoker)
    with boundary_lock(home, bid, "rollback"):
        return _roll_back(store, actor, bid, revoker)


def _roll_back(store: MigrateStore, actor: str, bid: str, revoker: Revoker | None) -> Outcome:
    row = store.get(bid)
    b = Boundary.from_json(row.plan)
    entries = [j for j in store.journal(b.id) if j.status in ("done", "pending")]
    if not entries:
        return Outcome(b.id, "rollback", False, row.state, row.state, ["nothing to roll back"])
    entry = entries[-1]
    out = Outcome(b.id, "rollback", True, row.state, row.state)
    if entry.status == "pending" and not journal.resume(store, entry):
        out.lines.append(f"discarded the interrupted {entry.step} step (it had written nothing)")
        return out
    journal.check_undo(entry)
    detail: dict[str, Any] = {}
    if entry.step == "issued":  # before the files go: the certificate file names the serial
        if revoker is None:
            raise BadRequest("rolling back issued revokes the certificate it issued: give the CA home",
                             code=Code.MIGRATE_LOCATION)
        revoked = revoker(b.new_files()[0], actor)
        out.lines.append(revoked)
        detail["revoked"] = revoked
    restored = journal.undo(entry)
    to_state = entry.from_state if row.state == entry.step else row.state
    store.rolled_back(b.id, entry.seq, row.state, to_state,
                      AuditEvent(actor, "migrate.rollback", f"migrate/{b.id}", "ok",
                                 {"from": row.state, "to": to_state, "journal": entry.seq, "restored": restored,
                                  **detail}))
    out.state = to_state
    out.lines += [f"restored {p}" for p in restored] or ["no file to restore"]
    return out


__all__ = ["STATES", "Blocked", "Outcome", "Revoker", "Settings", "advance", "roll_back"]

