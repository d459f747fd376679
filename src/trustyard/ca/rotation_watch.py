"""What a running CA does about rotation, without a restart.

- ``watch``: every worker's authority looks (at most every ``poll_interval``, on issuance and
  on the routes that show the chain or bundle) at the newest rotation that issues and at the
  bundle file; when either changed, it loads the material and swaps signer, chain and bundle
  in one reference (``Authority.use``).
- ``Autopilot``: in the ``serve`` process (one per CA, not per worker): with ``[rotation]
  auto`` it prepares a new intermediate at 2/3 of the current one's life and advances the
  rotation whenever its gate holds; and it renews the server's own TLS certificate at 2/3 of
  its life, which the server's reloading TLS context picks up at the next handshake.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..errors import TrustyardError
from ..files import write_atomic, write_private
from ..store import SqlStore
from ..store.records import AuditEvent
from ..store.rotations import RotationStore
from ..units import format_time
from ..x509.keys import KeyType, generate_private_key, private_key_pem
from ..x509.profiles import LeafSpec, leaf_builder, new_serial, sign
from ..x509.summary import fingerprint_sha256, load_pem_bundle
from .authority import Authority
from .config import Config
from .periodic import Periodic
from .rotation import FleetView, Journal
from .rotation_material import HomeMaterial, signed_by
from .rotation_seams import FleetParties, HomeBundle

log = logging.getLogger("trustyard.ca")

BUNDLE = "ca/roots.pem"
AUTO_BACKOFF = timedelta(hours=1)
RENEW_AT = 2 / 3
"""The share of a certificate's life after which the CA replaces it (its intermediate, its
server certificate)."""


def home_journal(config: Config, password: bytes | None, store: SqlStore, fleet: FleetView | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Journal:
    """The journal on a CA home: its rotations table, the trust bundle (``ca/roots.pem`` and its
    versions in the database), the material, and the fleet table (the parties that check in)."""
    rotations = RotationStore(store)
    maker = HomeMaterial(config, password, rotations)

    def still_vouched(issuer: str, now: datetime) -> int:
        return rotations.still_vouched(issuer, now, legacy_issuer(issuer))

    def legacy_issuer(issuer: str) -> Callable[[bytes], bool] | None:
        old = next((c for c in _candidates(maker) if fingerprint_sha256(c) == issuer), None)
        return signed_by(old) if old is not None else None

    fleet = fleet or FleetParties(store, rotations, legacy_issuer, clock,
                                  lead=timedelta(seconds=config.rotation.poll_seconds))
    return Journal(rotations, fleet, HomeBundle(config, store), maker, still_vouched,
                   config.rotation.settings(), clock)


def _candidates(maker: HomeMaterial) -> list[x509.Certificate]:
    certs = []
    for row in maker.store.all():
        made = maker.load(row.paths) if row.paths else None
        if made is not None and made.old_intermediate is not None:
            certs.append(made.old_intermediate)
    return certs


# -- every worker: notice a switch ------------------------------------------------------------

def watch(authority: Authority[SqlStore], config: Config, password: bytes | None,
          monotonic: Callable[[], float] = time.monotonic) -> None:
    """Give ``authority`` a refresher that swaps in the material a rotation made current."""
    rotations = RotationStore(authority.store)
    maker = HomeMaterial(config, password, rotations)
    bundle = config.path(BUNDLE)
    interval = config.rotation.poll_seconds
    lock = threading.Lock()
    state: dict[str, object] = {"next": 0.0, "seen": _token(rotations, bundle)}

    def refresh(auth: Authority[SqlStore]) -> None:
        now = monotonic()
        if now < state["next"] or not lock.acquire(blocking=False):  # type: ignore[operator]
            return
        try:
            state["next"] = now + interval
            token = _token(rotations, bundle)
            if token == state["seen"]:
                return
            roots = load_pem_bundle(bundle.read_bytes())
            material = maker.issuing(roots)
            auth.use(material)
            state["seen"] = token
            log.info("issuing with %s (rotation %s); trust bundle of %d certificate(s)",
                     material.signer.certificate.subject.rfc4514_string(), material.tag or "-", len(roots))
        except Exception:  # keep issuing with what works; try again at the next poll
            log.exception("could not load the rotated material; still issuing with the previous")
        finally:
            lock.release()

    authority.refresher = refresh


def _token(rotations: RotationStore, bundle: Path) -> tuple[object, ...]:
    try:
        st = os.stat(bundle)
        stamp: tuple[int, ...] = (st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        stamp = ()
    return rotations.issuing_token(), stamp


# -- the serve process: auto rotation and the server's own certificate ------------------------

def due(cert: x509.Certificate, now: datetime, share: float = RENEW_AT) -> bool:
    """``cert`` has lived ``share`` of its life."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return now >= start + (end - start) * share


def auto_step(journal: Journal, now: datetime) -> str | None:
    """One step of automatic rotation: prepare when the intermediate is due, else advance when
    the gate holds. What it did, or None."""
    rotation = journal.current()
    if rotation is None:
        inter, _root = journal.maker.current()
        if not due(inter, now):
            return None
        made = journal.prepare("intermediate", "auto", f"the intermediate is past {RENEW_AT:.0%} of its life "
                               f"(expires {format_time(inter.not_valid_after_utc)})")
        return f"prepared rotation {made.id}"
    gate = journal.gate(rotation)
    if not gate.ok:
        return None
    moved = journal.advance("auto", "its gate holds")
    return f"rotation {moved.id} is {moved.state}"


def renew_server_certificate(config: Config, password: bytes | None, now: datetime,
                             store: SqlStore | None = None) -> x509.Certificate | None:
    """A new ``server/tls.crt`` and key when the current one is due; None when it is not.

    The root signs it, as at ``init`` (the intermediate may be name-constrained away from the
    server's names); an unconstrained issuing intermediate signs it when the root key is not
    in the home. The key is written first and the certificate second, each atomically: the
    reloading context refuses the half-written pair (new key, old certificate) and loads the
    new pair once both are there."""
    from .home import load_certs, load_key

    current = load_certs(config, config.tls_cert)[0]
    rotations = RotationStore(store) if store is not None else None
    maker = HomeMaterial(config, password, rotations) if rotations is not None else None
    root_cert_path, root_key_path = maker.root_paths() if maker else (config.root_cert, config.root_key)
    root = load_certs(config, root_cert_path)[0]
    # Due at 2/3 of its life, or at once when a root rotation made another root current.
    if not due(current, now) and (current.issuer == root.subject or not config.path(root_key_path).exists()):
        return None
    if config.path(root_key_path).exists():
        issuer, key = root, load_key(config, root_key_path, password)
        # While a root rotation is not retired, clients holding only the old root need the cross-certificate.
        extra = maker.issuing_paths()[2] if maker else []
        chain: list[x509.Certificate] = [load_certs(config, p)[0] for p in extra]
    else:
        inter_path, inter_key, _extra, _tag = (maker.issuing_paths() if maker else
                                               (config.intermediate_cert, config.intermediate_key, [], None))
        issuer = load_certs(config, inter_path)[0]
        try:
            issuer.extensions.get_extension_for_class(x509.NameConstraints)
            raise TrustyardError("the server certificate is due but the root key is not in the home and the "
                                 "intermediate is name-constrained: renew it with the root key")
        except x509.ExtensionNotFound:
            pass
        key, chain = load_key(config, inter_key, password), [issuer]
    lifetime = current.not_valid_after_utc - current.not_valid_before_utc
    names = current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    tls_key = generate_private_key(KeyType.EC_P256)
    start = now - min(timedelta(minutes=1), lifetime / 10)  # a little backdated for clocks behind ours
    cert = sign(leaf_builder(LeafSpec(public_key=tls_key.public_key(), names=tuple(names),
                                      not_before=start, not_after=min(now + lifetime, issuer.not_valid_after_utc),
                                      serial=new_serial(), eku=("serverAuth",), common_name="localhost"), issuer), key)
    write_private(config.path(config.tls_key), private_key_pem(tls_key, password))
    write_atomic(config.path(config.tls_cert), b"".join(c.public_bytes(Encoding.PEM) for c in [cert, *chain]))
    if store is not None:
        store.audit(AuditEvent("ca", "server.certificate.renew", config.tls_cert,
                               detail={"serial": format(cert.serial_number, "x"),
                                       "not_after": format_time(cert.not_valid_after_utc),
                                       "replaces": format(current.serial_number, "x")}))
    return cert


class Autopilot(Periodic):
    """A daemon thread in the serve process: ``auto_step`` (with ``[rotation] auto``) and the
    server certificate's renewal, every ``poll_interval``."""

    name, what, log = "trustyard-autopilot", "autopilot step", log

    def __init__(self, config: Config, password: bytes | None, store: SqlStore,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.config, self.password, self.store, self.clock = config, password, store, clock
        self.journal = home_journal(config, password, store, clock=clock)
        self._auto_after: datetime | None = None  # after a failed step, wait before the next try
        self._said = ""  # the last warning about the server certificate, logged once
        super().__init__()

    @property
    def interval(self) -> float:
        return self.config.rotation.poll_seconds

    def tick(self) -> None:
        now = self.clock()
        if self.config.rotation.auto and (self._auto_after is None or now >= self._auto_after):
            try:
                did = auto_step(self.journal, now)
                if did:
                    log.info("automatic rotation: %s", did)
            except Exception as exc:  # the root key offline, a store error: try again in an hour, not each tick
                self._auto_after = now + AUTO_BACKOFF
                log.warning("automatic rotation failed (next try after %s): %s", format_time(self._auto_after),
                            getattr(exc, "detail", exc))
        if self.config.rotation.server_cert_renewal:
            try:
                cert = renew_server_certificate(self.config, self.password, now, self.store)
                if cert is not None:
                    self._said = ""
                    log.info("renewed the server certificate: serial %x, not after %s", cert.serial_number,
                             format_time(cert.not_valid_after_utc))
            except TrustyardError as exc:
                if exc.detail != self._said:
                    self._said = exc.detail
                    log.warning("server certificate: %s", exc.detail)
