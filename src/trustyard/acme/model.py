"""ACME resources as data (the rows the store keeps) and as JSON (RFC 8555 section 7.1).

The protocol owns its data: ``store.acme_store`` stores these rows, nothing here imports the store.

Statuses that depend on the clock (an expired pending authorization, an expired order) are
computed here when read, so no background job has to sweep them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class AccountRow:
    id: str
    provisioner: str
    thumbprint: str
    jwk: str
    status: str
    contact: tuple[str, ...]
    eab_kid: str | None
    created_at: datetime


@dataclass(frozen=True)
class OrderRow:
    id: str
    account_id: str
    provisioner: str
    status: str
    identifiers: tuple[tuple[str, str], ...]  # (type, value) as the client asked, wildcards included
    expires_at: datetime
    created_at: datetime
    error: dict[str, Any] | None
    cert_serial: str | None
    replaces: str | None


@dataclass(frozen=True)
class AuthzRow:
    id: str
    order_id: str
    account_id: str
    type: str
    value: str
    wildcard: bool
    status: str
    expires_at: datetime


@dataclass(frozen=True)
class ChallengeRow:
    id: str
    authz_id: str
    type: str
    token: str
    status: str
    validated_at: datetime | None
    started_at: datetime | None
    error: dict[str, Any] | None


@dataclass(frozen=True)
class NewAuthz:
    """An authorization to create with a new order, and the challenge types it offers."""

    type: str
    value: str
    wildcard: bool
    challenge_types: tuple[str, ...]


def rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Urls:
    """Every URL of one provisioner's ACME server, from the base the client used."""

    base: str
    provisioner: str

    @property
    def root(self) -> str:
        return f"{self.base}/acme/{self.provisioner}"

    def directory(self) -> str:
        return f"{self.root}/directory"

    def account(self, account_id: str) -> str:
        return f"{self.root}/account/{account_id}"

    def orders(self, account_id: str) -> str:
        return f"{self.root}/account/{account_id}/orders"

    def order(self, order_id: str) -> str:
        return f"{self.root}/order/{order_id}"

    def finalize(self, order_id: str) -> str:
        return f"{self.root}/order/{order_id}/finalize"

    def authz(self, authz_id: str) -> str:
        return f"{self.root}/authz/{authz_id}"

    def challenge(self, challenge_id: str) -> str:
        return f"{self.root}/chall/{challenge_id}"

    def certificate(self, serial: str) -> str:
        return f"{self.root}/cert/{serial}"

    def resource(self, name: str) -> str:
        return f"{self.root}/{name}"


def order_status(order: OrderRow, now: datetime) -> str:
    if order.status in ("pending", "ready") and order.expires_at <= now:
        return "invalid"
    return order.status


def authz_status(authz: AuthzRow, now: datetime) -> str:
    if authz.status in ("pending", "valid") and authz.expires_at <= now:
        return "expired"
    return authz.status


def account_json(urls: Urls, account: AccountRow) -> dict[str, Any]:
    doc: dict[str, Any] = {"status": account.status, "contact": list(account.contact),
                           "orders": urls.orders(account.id), "createdAt": rfc3339(account.created_at)}
    if account.eab_kid:
        doc["externalAccountBinding"] = {"kid": account.eab_kid}
    return doc


def order_json(urls: Urls, order: OrderRow, authzs: list[AuthzRow], now: datetime) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "status": order_status(order, now),
        "expires": rfc3339(order.expires_at),
        "identifiers": [{"type": t, "value": v} for t, v in order.identifiers],
        "authorizations": [urls.authz(a.id) for a in authzs],
        "finalize": urls.finalize(order.id),
    }
    if order.error:
        doc["error"] = order.error
    if order.cert_serial and order.status == "valid":
        doc["certificate"] = urls.certificate(order.cert_serial)
    if order.replaces:
        doc["replaces"] = order.replaces
    return doc


def challenge_json(urls: Urls, challenge: ChallengeRow) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": challenge.type, "url": urls.challenge(challenge.id), "status": challenge.status,
                           "token": challenge.token}
    if challenge.validated_at:
        doc["validated"] = rfc3339(challenge.validated_at)
    if challenge.error:
        doc["error"] = challenge.error
    return doc


def authz_json(urls: Urls, authz: AuthzRow, challenges: list[ChallengeRow], now: datetime) -> dict[str, Any]:
    status = authz_status(authz, now)
    # A valid authorization lists only the challenge that succeeded (section 7.1.4).
    shown = [c for c in challenges if c.status == "valid"] if status == "valid" else challenges
    doc: dict[str, Any] = {"identifier": {"type": authz.type, "value": authz.value}, "status": status,
                           "expires": rfc3339(authz.expires_at), "challenges": [challenge_json(urls, c) for c in shown]}
    if authz.wildcard:
        doc["wildcard"] = True
    return doc
