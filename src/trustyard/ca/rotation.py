"""CA rotation as a journal: new material moves through recorded, audited states.

    prepared  -> published -> adopted -> active -> retiring -> retired
       \\___________\\____________\\__ rollback (until active)

- ``prepared``: the new key and certificate exist (``MaterialMaker``; the root key is needed
  only here, to sign the new intermediate or cross-sign a new root).
- ``published``: the new intermediate, or the new root with its cross-certificate (the new root
  signed by the old one), is in the trust bundle (``BundleSource.publish``); clients holding only
  the old root still validate new chains through the cross-certificate.
- ``adopted``: the gate is that every relying party that is not stale reports a bundle version
  holding the new material, and the dwell (at least two check-in intervals) has passed since
  publication. ``--force`` overrides this gate only, and the audit entry lists the laggards.
- ``active``: the signer switches (every worker polls ``RotationStore.issuing_token``, see
  ``ca/rotation_watch.py``); parties are asked to ``renew-now`` over a window.
- ``retiring``: once that window has passed; the old material stays in the bundle while a
  certificate it signed is unexpired and not replaced by a renewal.
- ``retired``: none is left; the old material is withdrawn from the bundle. After a root
  rotation the parties are asked to ``renew-now`` again, over the same window: their leaves
  still carry the cross-certificate, which clients holding only the old root would accept.

The journal is pure logic over four seams: the rotation table (``store.rotations``), a
``FleetView`` (who relies on the bundle, and what they have), a ``BundleSource`` (the bundle's
version; publish and withdraw) and a ``MaterialMaker``, with an injectable clock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from cryptography import x509

from ..errors import BadRequest, Code, RotationRefused
from ..store.records import AuditEvent
from ..units import format_duration, format_time

if TYPE_CHECKING:  # the table's module imports SQLAlchemy; config loading imports this module
    from ..store.rotations import RotationRow, RotationStore

STATES = ("prepared", "published", "adopted", "active", "retiring", "retired")
ROLLED_BACK = "rolled_back"
KINDS = ("intermediate", "root")
ROLLBACK_FROM = ("prepared", "published", "adopted")
"""Rollback works until ``active``: after it, leaves chain to the new material."""


# -- the seams --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Party:
    """A relying party as the fleet knows it: its last check-in and the bundle version it has."""

    name: str
    last_checkin: datetime
    bundle_version: int | None
    stale: bool


class FleetView(Protocol):
    def parties(self, now: datetime) -> list[Party]:
        """Every known relying party; ``stale`` ones (no check-in for 3 intervals) do not gate."""
        ...

    def request_renewal(self, selector: str, window: timedelta) -> int:
        """Ask the parties ``selector`` picks (``all``, or ``issuer:SHA256``) to renew now, spread
        over ``window``; how many were asked."""
        ...


class BundleSource(Protocol):
    def version(self) -> int:
        """The bundle's current version (monotonic)."""
        ...

    def publish(self, certs: Sequence[x509.Certificate], reason: str) -> int:
        """Add ``certs`` to the bundle (those already in it are kept); the new version."""
        ...

    def withdraw(self, certs: Sequence[x509.Certificate], reason: str) -> int:
        """Remove ``certs`` from the bundle (absent ones are ignored); the new version."""
        ...


@dataclass(frozen=True)
class Made:
    """New material: files relative to the home, and the certificates."""

    paths: dict[str, str]
    intermediate: x509.Certificate
    root: x509.Certificate | None = None
    cross: x509.Certificate | None = None
    old_intermediate: x509.Certificate | None = None  # what the rotation replaces, kept beside it
    old_root: x509.Certificate | None = None


class MaterialMaker(Protocol):
    def current(self) -> tuple[x509.Certificate, x509.Certificate]:
        """(the issuing intermediate, the root it chains to) in use now."""
        ...

    def make(self, kind: str, rotation_id: int, now: datetime) -> Made:
        """Create the new key(s) and certificate(s) for rotation ``rotation_id``."""
        ...

    def load(self, paths: dict[str, str]) -> Made:
        """The certificates of material made before (its keys are not needed)."""
        ...

    def discard(self, paths: dict[str, str]) -> None:
        """Delete the new keys of a rotation rolled back (they never signed a leaf)."""
        ...


# -- settings and reports ---------------------------------------------------------------------

@dataclass(frozen=True)
class RotationSettings:
    checkin_interval: timedelta = timedelta(hours=1)
    dwell: timedelta = timedelta(hours=2)  # at least two check-in intervals (checked by ``checked``)
    renew_window: timedelta = timedelta(hours=1)
    stall: timedelta = timedelta(days=7)  # how long a state may last before its deadline passes

    def checked(self) -> RotationSettings:
        if self.checkin_interval <= timedelta(0):
            raise BadRequest("[rotation] checkin_interval must be more than 0s", code=Code.BAD_FIELD)
        if self.dwell < 2 * self.checkin_interval:
            raise BadRequest(f"[rotation] dwell {format_duration(self.dwell)} is less than two check-in "
                             f"intervals ({format_duration(2 * self.checkin_interval)})", code=Code.BAD_FIELD)
        return self


@dataclass(frozen=True)
class Gate:
    """Whether the rotation may leave its state now, and if not, why."""

    to: str | None  # the next state (None: retired or rolled back, nothing follows)
    ok: bool
    reasons: tuple[str, ...] = ()
    forceable: bool = False  # only the adoption gate
    covered: int = 0
    relying: int = 0
    laggards: tuple[Party, ...] = ()
    still_vouched: int | None = None  # retiring: certificates the old intermediate still vouches for

    def to_json(self) -> dict[str, Any]:
        return {"next": self.to, "ok": self.ok, "reasons": list(self.reasons), "forceable": self.forceable,
                "coverage": {"covered": self.covered, "relying": self.relying},
                "laggards": [{"name": p.name, "last_checkin": format_time(p.last_checkin),
                              "bundle_version": p.bundle_version} for p in self.laggards],
                "still_vouched": self.still_vouched}


@dataclass(frozen=True)
class Status:
    rotation: RotationRow | None
    gate: Gate | None
    history: tuple[RotationRow, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        r = self.rotation
        if r is None:
            return {"rotation": None, "gate": None}
        return {"rotation": row_json(r), "gate": self.gate.to_json() if self.gate else None}


def row_json(r: RotationRow) -> dict[str, Any]:
    return {"id": r.id, "kind": r.kind, "state": r.state,
            "entered": {s: format_time(t) for s, t in r.entered.items() if t is not None},
            "deadline": format_time(r.deadline_at) if r.deadline_at else None,
            "bundle_version": r.bundle_version, "old_intermediate_sha256": r.old_intermediate_sha256,
            "new_intermediate_sha256": r.new_intermediate_sha256, "old_root_sha256": r.old_root_sha256,
            "new_root_sha256": r.new_root_sha256, "cross_sha256": r.cross_sha256, "paths": r.paths,
            "forced_laggards": list(r.forced_laggards)}


# -- the journal ------------------------------------------------------------------------------

Counter = Callable[[str, datetime], int]
"""How many unexpired, unreplaced certificates the CA with this fingerprint signed."""


class Journal:
    def __init__(self, store: RotationStore, fleet: FleetView, bundle: BundleSource, maker: MaterialMaker,
                 still_vouched: Counter, settings: RotationSettings = RotationSettings(),
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store, self.fleet, self.bundle, self.maker = store, fleet, bundle, maker
        self.still_vouched = still_vouched
        self.settings = settings.checked()
        self.clock = clock

    # -- start --------------------------------------------------------------------------

    def prepare(self, kind: str, actor: str, why: str) -> RotationRow:
        """Make new material for ``kind`` and record the rotation in ``prepared``."""
        if kind not in KINDS:
            raise BadRequest(f"a rotation is of the intermediate or the root, not {kind!r}", code=Code.BAD_FIELD)
        busy = self.store.unfinished()
        if busy is not None:
            raise RotationRefused(f"rotation {busy.id} ({busy.kind}) is {busy.state}: finish it or roll it back "
                                  "before starting another", rotation=busy.id)
        from ..x509.summary import fingerprint_sha256

        inter, root = self.maker.current()
        now = self.clock()
        # The id is the row's: reserve it with the row, then make the material under it.
        row = self.store.create({
            "kind": kind, "state": "preparing", "created_at": now,
            "old_intermediate_sha256": fingerprint_sha256(inter), "old_root_sha256": fingerprint_sha256(root),
            "paths": {},
        }, AuditEvent(actor, "rotation.start", "rotation", detail={"kind": kind, "why": why}))
        try:
            made = self.maker.make(kind, row.id, now)
        except BaseException as exc:  # no key, wrong password...: the rotation ends here, recorded
            self.store.move(row.id, "preparing", {"state": ROLLED_BACK, "rolled_back_at": now},
                            self._event(actor, ROLLED_BACK, row.id, why,
                                        {"from": "preparing", "failed": getattr(exc, "detail", str(exc))[:500]}))
            raise
        return self.store.move(row.id, "preparing", {
            "state": "prepared", "prepared_at": now, "deadline_at": now + self.settings.stall,
            "paths": made.paths, "new_intermediate_sha256": fingerprint_sha256(made.intermediate),
            "new_root_sha256": fingerprint_sha256(made.root) if made.root is not None else None,
            "cross_sha256": fingerprint_sha256(made.cross) if made.cross is not None else None,
        }, self._event(actor, "prepared", row.id, why, {
            "kind": kind, "new_intermediate_sha256": fingerprint_sha256(made.intermediate),
            **({"new_root_sha256": fingerprint_sha256(made.root)} if made.root is not None else {}),
            "not_after": format_time(made.intermediate.not_valid_after_utc)}))

    # -- the gates ----------------------------------------------------------------------

    def current(self) -> RotationRow | None:
        return self.store.unfinished()

    def gate(self, rotation: RotationRow) -> Gate:
        now = self.clock()
        state = rotation.state
        if state in ("retired", ROLLED_BACK):
            return Gate(None, False, (f"rotation {rotation.id} is {state}: nothing follows",))
        if state == "preparing":
            return Gate("prepared", False, ("its material is still being made (or making it failed: roll back)",))
        nxt = STATES[STATES.index(state) + 1]
        if state in ("prepared", "adopted"):
            return Gate(nxt, True)
        if state == "published":
            return self._adoption(rotation, now)
        if state == "active":
            active_at = rotation.at("active") or now
            until = active_at + self.settings.renew_window
            if now < until:
                return Gate(nxt, False, (f"the renew-now window runs until {format_time(until)} "
                                         f"({format_duration(until - now)} left)",))
            return Gate(nxt, True)
        # retiring
        left = self.still_vouched(rotation.old_intermediate_sha256, now)
        if left:
            return Gate(nxt, False, (f"{left} unexpired certificate(s) signed by the old intermediate are not yet "
                                     "replaced",), still_vouched=left)
        return Gate(nxt, True, still_vouched=0)

    def _adoption(self, rotation: RotationRow, now: datetime) -> Gate:
        reasons = []
        published = rotation.at("published") or now
        dwell_until = published + self.settings.dwell
        if now < dwell_until:
            reasons.append(f"the dwell runs until {format_time(dwell_until)} ({format_duration(dwell_until - now)} "
                           f"left; two check-in intervals are {format_duration(2 * self.settings.checkin_interval)})")
        relying = [p for p in self.fleet.parties(now) if not p.stale]
        wanted = rotation.bundle_version or 0
        laggards = tuple(sorted((p for p in relying if p.bundle_version is None or p.bundle_version < wanted),
                                key=lambda p: p.last_checkin))
        if laggards:
            named = ", ".join(f"{p.name} (bundle {p.bundle_version if p.bundle_version is not None else 'none'}, "
                              f"last check-in {format_time(p.last_checkin)})" for p in laggards)
            reasons.append(f"{len(laggards)} of {len(relying)} relying parties lack bundle version {wanted}: {named}")
        return Gate("adopted", not reasons, tuple(reasons), forceable=True, covered=len(relying) - len(laggards),
                    relying=len(relying), laggards=laggards)

    # -- moving -------------------------------------------------------------------------

    def advance(self, actor: str, why: str, force: bool = False) -> RotationRow:
        """Move the rotation in progress one state on, or refuse naming why. ``force`` overrides
        the adoption gate only, and the laggards go into the audit entry and the row."""
        rotation = self._in_progress()
        gate = self.gate(rotation)
        forced = False
        if not gate.ok:
            if not (force and gate.forceable):
                extra = " (--force overrides only the adoption gate)" if force else ""
                raise RotationRefused(f"rotation {rotation.id} stays {rotation.state}: "
                                      + "; ".join(gate.reasons) + extra, rotation=rotation.id, state=rotation.state)
            forced = True
        assert gate.to is not None
        return getattr(self, f"_to_{gate.to}")(rotation, actor, why, gate, forced)

    def _to_published(self, r: RotationRow, actor: str, why: str, gate: Gate, forced: bool) -> RotationRow:
        now = self.clock()
        made = self.maker.load(r.paths)
        version = self.bundle.publish(_published(r, made), f"rotation {r.id}: publish the new {r.kind}")
        return self.store.move(r.id, "prepared", {
            "state": "published", "published_at": now, "bundle_version": version,
            "deadline_at": now + self.settings.dwell + self.settings.stall,
        }, self._event(actor, "published", r.id, why, {"bundle_version": version}))

    def _to_adopted(self, r: RotationRow, actor: str, why: str, gate: Gate, forced: bool) -> RotationRow:
        now = self.clock()
        laggards = [p.name for p in gate.laggards] if forced else []
        detail: dict[str, Any] = {"coverage": f"{gate.covered} of {gate.relying}"}
        if forced:
            detail.update(forced=True, refused_because=list(gate.reasons),
                          laggards=[{"name": p.name, "last_checkin": format_time(p.last_checkin),
                                     "bundle_version": p.bundle_version} for p in gate.laggards])
        return self.store.move(r.id, "published", {
            "state": "adopted", "adopted_at": now, "forced_laggards": laggards,
            "deadline_at": now + self.settings.stall,
        }, self._event(actor, "adopted", r.id, why, detail))

    def _to_active(self, r: RotationRow, actor: str, why: str, gate: Gate, forced: bool) -> RotationRow:
        now = self.clock()
        moved = self.store.move(r.id, "adopted", {
            "state": "active", "active_at": now, "deadline_at": now + self.settings.renew_window + self.settings.stall,
        }, self._event(actor, "active", r.id, why, {"renew_window": format_duration(self.settings.renew_window)}))
        self._renew_now(r, actor, f"issuer:{r.old_intermediate_sha256}", "switch to the new intermediate")
        return moved

    def _to_retiring(self, r: RotationRow, actor: str, why: str, gate: Gate, forced: bool) -> RotationRow:
        now = self.clock()
        # The deadline: after the old intermediate expires nothing it signed can be valid.
        old_expiry = self._old_intermediate_expiry(r) or now + self.settings.stall
        left = self.still_vouched(r.old_intermediate_sha256, now)
        return self.store.move(r.id, "active", {"state": "retiring", "retiring_at": now, "deadline_at": old_expiry},
                               self._event(actor, "retiring", r.id, why, {"still_vouched": left}))

    def _to_retired(self, r: RotationRow, actor: str, why: str, gate: Gate, forced: bool) -> RotationRow:
        now = self.clock()
        old = self._old_material(r)
        version = self.bundle.withdraw(old, f"rotation {r.id}: withdraw the old {r.kind}") if old else None
        moved = self.store.move(r.id, "retiring", {"state": "retired", "retired_at": now, "deadline_at": None},
                                self._event(actor, "retired", r.id, why, {"bundle_version": version}))
        if r.kind == "root" and r.new_intermediate_sha256:
            # Leaves issued until now carry the cross-certificate, which the old root vouches for:
            # renewed, they chain to the new root alone, and clients holding only the old root fail.
            self._renew_now(r, actor, f"issuer:{r.new_intermediate_sha256}", "drop the cross-certificate")
        return moved

    def _renew_now(self, r: RotationRow, actor: str, selector: str, purpose: str) -> None:
        asked = self.fleet.request_renewal(selector, self.settings.renew_window)
        self.store.sql.audit(AuditEvent(actor, "rotation.renew-now", f"rotation/{r.id}",
                                        detail={"asked": asked, "window": format_duration(self.settings.renew_window),
                                                "selector": selector, "purpose": purpose}))

    def rollback(self, actor: str, why: str) -> RotationRow:
        """Undo a rotation before ``active``: its material leaves the bundle, its new keys are deleted."""
        rotation = self._in_progress()
        if rotation.state not in (*ROLLBACK_FROM, "preparing"):
            raise RotationRefused(f"rotation {rotation.id} is {rotation.state}: rollback works only until active "
                                  "(leaves already chain to the new material); advance it to retired instead",
                                  rotation=rotation.id, state=rotation.state)
        now = self.clock()
        version = None
        if rotation.state in ("published", "adopted"):
            made = self.maker.load(rotation.paths)
            version = self.bundle.withdraw(_published(rotation, made), f"rotation {rotation.id}: rolled back")
        moved = self.store.move(rotation.id, rotation.state,
                                {"state": ROLLED_BACK, "rolled_back_at": now, "deadline_at": None},
                                self._event(actor, ROLLED_BACK, rotation.id, why,
                                            {"from": rotation.state, "bundle_version": version}))
        if rotation.paths:
            self.maker.discard(rotation.paths)
        return moved

    def status(self) -> Status:
        rotation = self.store.unfinished()
        if rotation is None:
            done = self.store.all()
            return Status(done[-1] if done else None, None)
        return Status(rotation, self.gate(rotation))

    # -- helpers ------------------------------------------------------------------------

    def _in_progress(self) -> RotationRow:
        rotation = self.store.unfinished()
        if rotation is None:
            raise RotationRefused("no rotation is in progress: start one with `trustyard rotate intermediate` "
                                  "or `trustyard rotate root`", code=Code.NO_ROTATION)
        return rotation

    def _event(self, actor: str, state: str, rotation_id: int, why: str, detail: dict[str, Any]) -> AuditEvent:
        return AuditEvent(actor, f"rotation.{state}", f"rotation/{rotation_id}", detail={"why": why, **detail})

    def _old_intermediate_expiry(self, r: RotationRow) -> datetime | None:
        old = self.maker.load(r.paths).old_intermediate
        return old.not_valid_after_utc if old is not None else None

    def _old_material(self, r: RotationRow) -> list[x509.Certificate]:
        """What leaves the bundle at ``retired``: the old intermediate; for a root rotation also
        the old root and the cross-certificate."""
        made = self.maker.load(r.paths)
        old = [made.old_intermediate] if made.old_intermediate is not None else []
        if r.kind == "root":
            old += [c for c in (made.old_root, made.cross) if c is not None]
        return old


def _published(r: RotationRow, made: Made) -> list[x509.Certificate]:
    if r.kind == "root":
        return [c for c in (made.root, made.cross) if c is not None]
    return [made.intermediate]
