"""ACME server state in the CA's database (tables from migration 0002).

The rows are the ACME protocol's own data (``acme.model``); this module only stores them.
Everything here runs on the public API of the engine (``engine.Database.transaction``, ``run``,
``unit``) so SQLite writers stay serialized across worker processes and PostgreSQL replicas
see one truth. ACME objects are written with
``durable=False`` (no fsync of their own): they are client-recreatable protocol state, while
what must survive a power cut (the certificate, its audit entry) is committed durably by the
authority before any client sees it. Accounts are durable: a client is told its account URL once.

Every state change is one conditional UPDATE (``... WHERE status = 'ready'``), so a race between
workers is decided by the database: exactly one finalize moves an order to ``processing``.
"""

from __future__ import annotations

import json
import random
import secrets
from collections.abc import Iterable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any

from sqlalchemy import bindparam, delete, insert, literal_column, select, update
from sqlalchemy.exc import IntegrityError

from ..acme.model import AccountRow, AuthzRow, ChallengeRow, NewAuthz, OrderRow
from .engine import Database
from .records import utc
from .schema import acme_accounts, acme_authzs, acme_challenges, acme_nonces, acme_orders

__all__ = ["AccountRow", "AcmeStore", "AuthzRow", "ChallengeRow", "NewAuthz", "OrderRow", "new_id"]

NONCE_LIFETIME = timedelta(hours=1)


def new_id() -> str:
    return secrets.token_urlsafe(16)


def _now() -> datetime:
    return datetime.now(UTC)


class AcmeStore:
    def __init__(self, sql: Database) -> None:
        self.sql = sql

    def unit(self) -> AbstractContextManager[None]:
        """One transaction for everything inside (see ``Database.unit``)."""
        return self.sql.unit()

    # -- nonces -------------------------------------------------------------------------------

    def mint_nonce(self, retry: bool = True, source: str = "", keep: int = 0) -> str:
        """A nonce; ``retry`` ones (from newNonce or with a problem) are exempt from the test knob.

        ``source`` is the client it is for; with ``keep``, that client's unspent nonces beyond
        the ``keep`` newest are dropped in the same transaction, so no client can grow the
        table by asking for nonces it never spends."""
        nonce = secrets.token_urlsafe(16)
        with self.sql.transaction(durable=False, one_statement=not keep) as conn:
            self.sql.run(conn, _INSERT_NONCE, {"nonce": nonce, "expires_at": _now() + NONCE_LIFETIME,
                                               "retry": int(retry), "source": source})
            if keep:
                self._trim_nonces(conn, source, keep)
        return nonce

    def _trim_nonces(self, conn: Any, source: str, keep: int) -> None:
        """Drop ``source``'s unspent nonces beyond the ``keep`` newest of those handed out without
        authentication (``retry``: from newNonce or a refusal). A nonce that succeeded a spent
        one answers an authenticated request and takes that one's row: those never add up."""
        # retry = 1 as a literal: the planner can then prove the partial index's condition
        # (PostgreSQL's generic plans of prepared statements could not from a parameter).
        mine = (acme_nonces.c.source == source, acme_nonces.c.retry == literal_column("1"))
        newest = select(acme_nonces.c.nonce).where(*mine).order_by(acme_nonces.c.expires_at.desc()).limit(keep)
        if not self.sql.is_sqlite:  # PostgreSQL takes no LIMIT inside IN: a derived table does
            newest = select(newest.subquery().c.nonce)
        conn.execute(delete(acme_nonces).where(*mine, acme_nonces.c.nonce.not_in(newest)))

    def redeem_nonce(self, nonce: str, reject_percent: float = 0.0, source: str = "",
                     keep: int = 0) -> tuple[bool, str]:
        """Redeem ``nonce`` and mint the response's one in a single transaction: (accepted, fresh).

        ``reject_percent`` (a test knob) refuses that share of the valid nonces that a successful
        response handed out. Nonces from newNonce or from a refusal are always honoured: clients
        retry a badNonce once, with either kind, so every client that retries gets through.
        """
        # One statement: the redeemed nonce's row becomes the fresh nonce (an unknown, expired or
        # spent nonce matches no row). Under the test knob, a drawn nonce from a successful
        # response is spent the same way but refused, and its successor is a retry nonce.
        fresh, values = _successor(nonce)
        with self.sql.transaction(durable=False) as conn:
            if reject_percent > 0 and random.random() * 100 < reject_percent \
                    and self.sql.run(conn, _REJECT_NONCE, values).rowcount == 1:
                return False, fresh
            ok = self.sql.run(conn, _REDEEM_NONCE, values).rowcount == 1
            if not ok:
                self.sql.run(conn, _INSERT_NONCE, {"nonce": fresh, "expires_at": values["b_expires"], "retry": 1,
                                                   "source": source})
                if keep:
                    self._trim_nonces(conn, source, keep)
            if random.random() < 0.01:  # amortized clean-up of nonces nobody came back with
                conn.execute(delete(acme_nonces).where(acme_nonces.c.expires_at < values["b_now"]))
        return ok, fresh

    def redeem_nonce_as(self, nonce: str, account_id: str, thumbprint: str) -> str | None:
        """Redeem ``nonce`` for a request signed by ``account_id`` with the key ``thumbprint``, in
        one statement that also checks that the account still holds that key and is valid: the
        fresh nonce, or None (nothing changed) when the nonce or the account does not hold up.
        This lets the caller authenticate from an account it read earlier."""
        fresh, values = _successor(nonce)
        with self.sql.transaction(durable=False, one_statement=True) as conn:
            done = self.sql.run(conn, _REDEEM_NONCE_AS, {**values, "b_account": account_id,
                                                         "b_thumbprint": thumbprint})
        return fresh if done.rowcount == 1 else None

    # -- accounts -----------------------------------------------------------------------------

    def create_account(self, provisioner: str, thumbprint: str, jwk_json: str, contact: Iterable[str],
                       eab_kid: str | None) -> tuple[AccountRow, bool]:
        """The new account, or the existing one for this key: (row, created)."""
        row = AccountRow(id=new_id(), provisioner=provisioner, thumbprint=thumbprint, jwk=jwk_json, status="valid",
                         contact=tuple(contact), eab_kid=eab_kid, created_at=_now())
        try:
            with self.sql.transaction() as conn:
                conn.execute(insert(acme_accounts), {**vars(row), "contact": json.dumps(list(row.contact))})
        except IntegrityError:
            existing = self.find_account(provisioner, thumbprint)
            assert existing is not None
            return existing, False
        return row, True

    def find_account(self, provisioner: str, thumbprint: str) -> AccountRow | None:
        with self.sql.transaction(write=False) as conn:
            row = conn.execute(select(acme_accounts).where(acme_accounts.c.provisioner == provisioner,
                                                           acme_accounts.c.thumbprint == thumbprint)).first()
        return _account(row) if row else None

    def get_account(self, account_id: str) -> AccountRow | None:
        with self.sql.transaction(write=False) as conn:
            row = self.sql.run(conn, _GET_ACCOUNT, {"b_id": account_id}).first()
        return _account(row) if row else None

    def update_account(self, account_id: str, *, contact: Iterable[str] | None = None,
                       status: str | None = None) -> AccountRow:
        values: dict[str, Any] = {}
        if contact is not None:
            values["contact"] = json.dumps(list(contact))
        if status is not None:
            values["status"] = status
        if values:
            with self.sql.transaction() as conn:
                conn.execute(update(acme_accounts).where(acme_accounts.c.id == account_id,
                                                         acme_accounts.c.status == "valid").values(**values))
        row = self.get_account(account_id)
        assert row is not None
        return row

    def change_key(self, account_id: str, old_thumbprint: str, thumbprint: str, jwk_json: str) -> bool:
        """Swap the account key if it is still ``old_thumbprint``; False when the new key is taken."""
        try:
            with self.sql.transaction() as conn:
                result = conn.execute(update(acme_accounts).where(
                    acme_accounts.c.id == account_id, acme_accounts.c.thumbprint == old_thumbprint,
                    acme_accounts.c.status == "valid").values(thumbprint=thumbprint, jwk=jwk_json))
                return result.rowcount == 1
        except IntegrityError:
            return False

    # -- orders -------------------------------------------------------------------------------

    def create_order(self, account_id: str, provisioner: str, identifiers: list[tuple[str, str]],
                     authzs: list[NewAuthz], lifetime: timedelta,
                     replaces: str | None) -> tuple[OrderRow, list[AuthzRow]]:
        now = _now()
        order = OrderRow(id=new_id(), account_id=account_id, provisioner=provisioner, status="pending",
                         identifiers=tuple(identifiers), expires_at=now + lifetime, created_at=now, error=None,
                         cert_serial=None, replaces=replaces)
        authz_rows: list[dict[str, Any]] = []
        challenge_rows: list[dict[str, Any]] = []
        for a in authzs:
            authz_id = new_id()
            authz_rows.append({"id": authz_id, "order_id": order.id, "account_id": account_id, "type": a.type,
                               "value": a.value, "wildcard": int(a.wildcard), "status": "pending",
                               "expires_at": order.expires_at})
            for kind in a.challenge_types:
                challenge_rows.append({"id": new_id(), "authz_id": authz_id, "type": kind,
                                       "token": secrets.token_urlsafe(32), "status": "pending",
                                       "validated_at": None, "started_at": None, "error": None})
        with self.sql.transaction(durable=False) as conn:
            run = self.sql.run
            run(conn, _INSERT_ORDER, {**vars(order), "identifiers": json.dumps(identifiers), "error": None})
            run(conn, _INSERT_AUTHZ, authz_rows)
            run(conn, _INSERT_CHALLENGE, challenge_rows)
        rows = [AuthzRow(id=a["id"], order_id=order.id, account_id=account_id, type=a["type"], value=a["value"],
                         wildcard=bool(a["wildcard"]), status="pending", expires_at=order.expires_at)
                for a in authz_rows]
        return order, sorted(rows, key=lambda a: (a.value, a.id))

    def get_order_with_authzs(self, order_id: str) -> tuple[OrderRow, list[AuthzRow]] | None:
        """An order and its authorizations in one statement (the hot polling path)."""
        with self.sql.transaction(write=False) as conn:
            rows = self.sql.run(conn, _GET_ORDER_WITH_AUTHZS, {"b_id": order_id}).fetchall()
        if not rows:
            return None
        return _order(rows[0]), [_authz(r, "a_") for r in rows if r.a_id is not None]

    def order_for_certificate(self, serial: str) -> OrderRow | None:
        with self.sql.transaction(write=False) as conn:
            row = self.sql.run(conn, _ORDER_FOR_CERT, {"b_serial": serial}).first()
        return _order(row) if row else None

    def list_orders(self, account_id: str, limit: int = 1000) -> list[OrderRow]:
        with self.sql.transaction(write=False) as conn:
            rows = conn.execute(select(acme_orders).where(acme_orders.c.account_id == account_id)
                                .order_by(acme_orders.c.created_at).limit(limit)).fetchall()
        return [_order(r) for r in rows]

    def get_authz(self, authz_id: str) -> tuple[AuthzRow, list[ChallengeRow]] | None:
        """An authorization and its challenges in one statement."""
        with self.sql.transaction(write=False) as conn:
            rows = self.sql.run(conn, _GET_AUTHZ, {"b_id": authz_id}).fetchall()
        if not rows:
            return None
        return _authz(rows[0]), [_challenge(r, "c_") for r in rows if r.c_id is not None]

    def get_challenge(self, challenge_id: str) -> tuple[ChallengeRow, AuthzRow] | None:
        """A challenge and its authorization in one statement."""
        with self.sql.transaction(write=False) as conn:
            row = self.sql.run(conn, _GET_CHALLENGE, {"b_id": challenge_id}).first()
        return (_challenge(row), _authz(row, "a_")) if row else None

    def valid_identifiers(self, account_id: str, values: Iterable[str]) -> set[str]:
        """Which of ``values`` this account holds an unexpired valid authorization for."""
        wanted = list(dict.fromkeys(values))
        with self.sql.transaction(write=False) as conn:
            rows = conn.execute(select(acme_authzs.c.value).where(
                acme_authzs.c.account_id == account_id, acme_authzs.c.value.in_(wanted),
                acme_authzs.c.status == "valid", acme_authzs.c.expires_at > _now())).fetchall()
        return {r.value for r in rows}

    # -- transitions (RFC 8555 section 7.1.6) ---------------------------------------------------

    def start_challenge(self, challenge_id: str) -> datetime | None:
        """pending -> processing, only while its authorization is pending and unexpired, in one
        conditional UPDATE: the start time for the one caller that won, else None."""
        now = _now()
        with self.sql.transaction(durable=False, one_statement=True) as conn:
            result = self.sql.run(conn, _START_CHALLENGE, {"b_id": challenge_id, "b_now": now})
            return now if result.rowcount == 1 else None

    def finish_challenge(self, challenge_id: str, error: dict[str, Any] | None) -> None:
        """Record a validation result and carry it up: authorization, then order (ready or invalid)."""
        now = _now()
        ok = error is None
        with self.sql.transaction(durable=False) as conn:
            ids = self.sql.run(conn, _CHALLENGE_PARENTS, {"b_id": challenge_id}).one()
            if not self.sql.is_sqlite:  # SQLite writers are serialized already
                # Lock the order first (PostgreSQL): two authorizations finishing together must
                # not both see the other one still pending and leave the order pending forever.
                self.sql.run(conn, _LOCK_ORDER, {"b_id": ids.order_id})
            done = self.sql.run(conn, _FINISH_CHALLENGE, {
                "b_id": challenge_id, "b_status": "valid" if ok else "invalid",
                "b_validated_at": now if ok else None, "b_error": None if ok else json.dumps(error)})
            if done.rowcount != 1:
                return
            self.sql.run(conn, _FINISH_AUTHZ, {"b_id": ids.authz_id, "b_status": "valid" if ok else "invalid"})
            if not ok:
                self.sql.run(conn, _ORDER_PENDING_TO, {"b_id": ids.order_id, "b_status": "invalid",
                                                 "b_error": json.dumps(error)})
                return
            self.sql.run(conn, _ORDER_READY, {"b_id": ids.order_id})

    def deactivate_authz(self, authz_id: str) -> bool:
        with self.sql.transaction(durable=False) as conn:
            row = conn.execute(select(acme_authzs.c.order_id).where(acme_authzs.c.id == authz_id)).one()
            result = conn.execute(update(acme_authzs).where(acme_authzs.c.id == authz_id,
                                                            acme_authzs.c.status.in_(("pending", "valid")))
                                  .values(status="deactivated"))
            if result.rowcount == 1:
                conn.execute(update(acme_orders).where(acme_orders.c.id == row.order_id,
                                                       acme_orders.c.status.in_(("pending", "ready")))
                             .values(status="invalid"))
            return result.rowcount == 1

    def begin_finalize(self, order_id: str) -> bool:
        """ready -> processing: True for exactly one caller, however many finalize at once."""
        with self.sql.transaction(durable=False, one_statement=True) as conn:
            return self.sql.run(conn, _BEGIN_FINALIZE, {"b_id": order_id, "b_now": _now()}).rowcount == 1

    def end_finalize(self, order_id: str, serial: str | None, error: dict[str, Any] | None) -> None:
        with self.sql.transaction(durable=False, one_statement=True) as conn:
            self.sql.run(conn, _END_FINALIZE, {"b_id": order_id, "b_status": "valid" if serial else "invalid",
                                         "b_serial": serial, "b_error": json.dumps(error) if error else None})

    def release_cut_finalizations(self, started_before: datetime) -> int:
        """Orders left ``processing`` by a finalize a crash cut (begun before ``started_before``,
        or before that was recorded) become ``invalid`` with ``serverInternal``: RFC 8555's
        answer to a failed finalization, after which the client places a new order. Their
        certificate, if it was stored, stays in the ledger (it was never handed out)."""
        problem = {"type": "urn:ietf:params:acme:error:serverInternal", "status": 500,
                   "detail": "the finalization was cut by a server crash: place a new order"}
        with self.sql.transaction() as conn:
            return int(conn.execute(
                update(acme_orders)
                .where(acme_orders.c.status == "processing",
                       (acme_orders.c.finalize_started_at < started_before)
                       | (acme_orders.c.finalize_started_at.is_(None) & (acme_orders.c.created_at < started_before)))
                .values(status="invalid", error=json.dumps(problem))).rowcount)

    def restart_challenge(self, challenge_id: str, started_before: datetime) -> bool:
        """Claim a challenge stuck in ``processing`` since before ``started_before`` (one caller wins)."""
        with self.sql.transaction(durable=False) as conn:
            result = conn.execute(update(acme_challenges).where(
                acme_challenges.c.id == challenge_id, acme_challenges.c.status == "processing",
                acme_challenges.c.started_at < started_before).values(started_at=_now()))
            return result.rowcount == 1


    # -- housekeeping -------------------------------------------------------------------------

    def purge(self, now: datetime | None = None) -> dict[str, int]:
        """Delete what no client can use any more: expired nonces, and orders past their expiry
        that never became valid (abandoned, invalid or stuck), with their authorizations and
        challenges. Valid orders stay: they name the certificate they produced. The number
        of rows deleted, per table."""
        now = now or _now()
        dead_orders = select(acme_orders.c.id).where(acme_orders.c.status != "valid", acme_orders.c.expires_at < now)
        dead_authzs = select(acme_authzs.c.id).where(acme_authzs.c.order_id.in_(dead_orders))
        with self.sql.transaction(durable=False) as conn:
            return {
                "acme_challenges": conn.execute(delete(acme_challenges).where(
                    acme_challenges.c.authz_id.in_(dead_authzs))).rowcount,
                "acme_authzs": conn.execute(delete(acme_authzs).where(
                    acme_authzs.c.order_id.in_(dead_orders))).rowcount,
                "acme_orders": conn.execute(delete(acme_orders).where(
                    acme_orders.c.status != "valid", acme_orders.c.expires_at < now)).rowcount,
                "acme_nonces": conn.execute(delete(acme_nonces).where(acme_nonces.c.expires_at < now)).rowcount,
            }


def _successor(nonce: str) -> tuple[str, dict[str, Any]]:
    """A fresh nonce to take ``nonce``'s row, and the parameters of the redeeming UPDATE."""
    now = _now()
    fresh = secrets.token_urlsafe(16)
    return fresh, {"b_old": nonce, "b_now": now, "b_fresh": fresh, "b_expires": now + NONCE_LIFETIME}


# The statements of the hot paths, built once (SQLAlchemy then only binds parameters).
_INSERT_NONCE = insert(acme_nonces)
_INSERT_ORDER = insert(acme_orders)
_INSERT_AUTHZ = insert(acme_authzs)
_INSERT_CHALLENGE = insert(acme_challenges)
_REDEEM_NONCE = (update(acme_nonces)
                 .where(acme_nonces.c.nonce == bindparam("b_old"), acme_nonces.c.expires_at > bindparam("b_now"))
                 .values(nonce=bindparam("b_fresh"), expires_at=bindparam("b_expires"), retry=0))
_REDEEM_NONCE_AS = _REDEEM_NONCE.where(select(acme_accounts.c.id).where(
    acme_accounts.c.id == bindparam("b_account"), acme_accounts.c.thumbprint == bindparam("b_thumbprint"),
    acme_accounts.c.status == "valid").exists())
_REJECT_NONCE = (update(acme_nonces)
                 .where(acme_nonces.c.nonce == bindparam("b_old"), acme_nonces.c.expires_at > bindparam("b_now"),
                        acme_nonces.c.retry == 0)
                 .values(nonce=bindparam("b_fresh"), expires_at=bindparam("b_expires"), retry=1))
_GET_ACCOUNT = select(acme_accounts).where(acme_accounts.c.id == bindparam("b_id"))
_ORDER_FOR_CERT = select(acme_orders).where(acme_orders.c.cert_serial == bindparam("b_serial"))
_GET_ORDER_WITH_AUTHZS = (
    select(acme_orders, *(c.label("a_" + c.name) for c in acme_authzs.c))
    .outerjoin(acme_authzs, acme_authzs.c.order_id == acme_orders.c.id)
    .where(acme_orders.c.id == bindparam("b_id")).order_by(acme_authzs.c.value, acme_authzs.c.id))
_GET_AUTHZ = (
    select(acme_authzs, *(c.label("c_" + c.name) for c in acme_challenges.c))
    .outerjoin(acme_challenges, acme_challenges.c.authz_id == acme_authzs.c.id)
    .where(acme_authzs.c.id == bindparam("b_id")).order_by(acme_challenges.c.type))
_GET_CHALLENGE = (
    select(acme_challenges, *(c.label("a_" + c.name) for c in acme_authzs.c))
    .join(acme_authzs, acme_authzs.c.id == acme_challenges.c.authz_id)
    .where(acme_challenges.c.id == bindparam("b_id")))
_CHALLENGE_PARENTS = (select(acme_challenges.c.authz_id, acme_authzs.c.order_id)
                      .join(acme_authzs, acme_authzs.c.id == acme_challenges.c.authz_id)
                      .where(acme_challenges.c.id == bindparam("b_id")))
_LOCK_ORDER = select(acme_orders.c.id).where(acme_orders.c.id == bindparam("b_id")).with_for_update()
_FINISH_CHALLENGE = (update(acme_challenges)
                     .where(acme_challenges.c.id == bindparam("b_id"), acme_challenges.c.status == "processing")
                     .values(status=bindparam("b_status"), validated_at=bindparam("b_validated_at"),
                             error=bindparam("b_error")))
_FINISH_AUTHZ = (update(acme_authzs).where(acme_authzs.c.id == bindparam("b_id"), acme_authzs.c.status == "pending")
                 .values(status=bindparam("b_status")))
_ORDER_PENDING_TO = (update(acme_orders).where(acme_orders.c.id == bindparam("b_id"), acme_orders.c.status == "pending")
                     .values(status=bindparam("b_status"), error=bindparam("b_error")))
_ORDER_READY = (update(acme_orders)  # pending -> ready once no authorization is left that is not valid
                .where(acme_orders.c.id == bindparam("b_id"), acme_orders.c.status == "pending",
                       ~select(acme_authzs.c.id).where(acme_authzs.c.order_id == bindparam("b_id"),
                                                       acme_authzs.c.status != "valid").exists())
                .values(status="ready"))
_BEGIN_FINALIZE = (update(acme_orders)
                   .where(acme_orders.c.id == bindparam("b_id"), acme_orders.c.status == "ready",
                          acme_orders.c.expires_at > bindparam("b_now"))
                   .values(status="processing", finalize_started_at=bindparam("b_now")))
_END_FINALIZE = (update(acme_orders)
                 .where(acme_orders.c.id == bindparam("b_id"), acme_orders.c.status == "processing")
                 .values(status=bindparam("b_status"), cert_serial=bindparam("b_serial"), error=bindparam("b_error")))
_START_CHALLENGE = (
    update(acme_challenges)
    .where(acme_challenges.c.id == bindparam("b_id"), acme_challenges.c.status == "pending",
           acme_challenges.c.authz_id.in_(select(acme_authzs.c.id).where(
               acme_authzs.c.status == "pending", acme_authzs.c.expires_at > bindparam("b_now"))))
    .values(status="processing", started_at=bindparam("b_now")))


def _account(row: Any) -> AccountRow:
    return AccountRow(id=row.id, provisioner=row.provisioner, thumbprint=row.thumbprint, jwk=row.jwk,
                      status=row.status, contact=tuple(json.loads(row.contact)), eab_kid=row.eab_kid,
                      created_at=utc(row.created_at))  # type: ignore[arg-type]


def _order(row: Any) -> OrderRow:
    return OrderRow(id=row.id, account_id=row.account_id, provisioner=row.provisioner, status=row.status,
                    identifiers=tuple((i[0], i[1]) for i in json.loads(row.identifiers)),
                    expires_at=utc(row.expires_at), created_at=utc(row.created_at),  # type: ignore[arg-type]
                    error=json.loads(row.error) if row.error else None, cert_serial=row.cert_serial,
                    replaces=row.replaces)


_AUTHZ_FIELDS = ("id", "order_id", "account_id", "type", "value", "wildcard", "status", "expires_at")
_CHALLENGE_FIELDS = ("id", "authz_id", "type", "token", "status", "validated_at", "started_at", "error")
# Per label prefix of the joined statements: the columns in field order, in one C call.
_AUTHZ_COLUMNS = {prefix: attrgetter(*(prefix + f for f in _AUTHZ_FIELDS)) for prefix in ("", "a_")}
_CHALLENGE_COLUMNS = {prefix: attrgetter(*(prefix + f for f in _CHALLENGE_FIELDS)) for prefix in ("", "c_")}


def _authz(row: Any, prefix: str = "") -> AuthzRow:
    """An AuthzRow from a row; ``prefix``: the labels of a joined statement (``a_id``...)."""
    id_, order_id, account_id, type_, value, wildcard, status, expires_at = _AUTHZ_COLUMNS[prefix](row)
    return AuthzRow(id=id_, order_id=order_id, account_id=account_id, type=type_, value=value,
                    wildcard=bool(wildcard), status=status, expires_at=utc(expires_at))  # type: ignore[arg-type]


def _challenge(row: Any, prefix: str = "") -> ChallengeRow:
    id_, authz_id, type_, token, status, validated_at, started_at, error = _CHALLENGE_COLUMNS[prefix](row)
    return ChallengeRow(id=id_, authz_id=authz_id, type=type_, token=token, status=status,
                        validated_at=utc(validated_at), started_at=utc(started_at),
                        error=json.loads(error) if error else None)
