"""The tables. Migrations (``migrations/versions``) create and change them; this module
is what the code reads and writes through."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, LargeBinary, MetaData, String, Table, Text, text

metadata = MetaData()
_REVOKED_WITH_SHARD = "status = 'revoked' AND crl_shard IS NOT NULL"

certificates = Table(
    "certificates", metadata,
    Column("serial", String(40), primary_key=True),  # hex; the PRIMARY KEY is the UNIQUE reservation
    Column("provisioner", String(128), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("sans", Text, nullable=False),  # JSON list
    Column("status", String(16), nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("not_before", DateTime(timezone=True), nullable=False),
    Column("not_after", DateTime(timezone=True), nullable=False),
    Column("der", LargeBinary, nullable=True),
    Column("fingerprint_sha256", String(64), nullable=True),
    Column("renewed_from", String(40), nullable=True),
    Column("token_jti", String(128), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revocation_reason", String(64), nullable=True),
    Column("superseded_by", String(40), nullable=True),  # migration 0004: the renewal of this one
    Column("issuer_sha256", String(64), nullable=True),  # migration 0005: the signing CA's fingerprint
    # migration 0009: the CRL shard named in the certificate's CRL Distribution Points (NULL: none)
    Column("crl_shard", Integer, nullable=True),
    # migration 0012: the CSR key (SPKI SHA-256), so a retry of a bootstrap redemption can match it
    Column("spki_sha256", String(64), nullable=True),
    Index("ix_certificates_status_not_after", "status", "not_after"),
    Index("ix_certificates_renewed_from", "renewed_from"),
    Index("ix_certificates_issuer", "issuer_sha256", "status", "not_after"),
    Index("ix_certificates_revoked_at", "revoked_at"),  # migration 0008: the OCSP responders' poll
    Index("ix_certificates_token_jti", "token_jti"),  # migration 0012: a redemption's retry finds its intent
    # A shard's CRL entries (store/crls.py): revoked certificates with a shard only, and covering
    # the query, so generating a shard reads just its entries, however large the ledger.
    Index("ix_certificates_crl", "issuer_sha256", "crl_shard", "status", "not_after", "serial", "revoked_at",
          "revocation_reason", sqlite_where=text(_REVOKED_WITH_SHARD), postgresql_where=text(_REVOKED_WITH_SHARD)),
)

used_tokens = Table(
    "used_tokens", metadata,
    Column("jti", String(128), primary_key=True),  # a second redemption violates the key: replay
    Column("kind", String(16), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

audit_log = Table(
    "audit_log", metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(255), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(255), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("detail", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

audit_head = Table(
    "audit_head", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

# -- ACME (RFC 8555): migration 0002 ------------------------------------------------------------

acme_nonces = Table(
    "acme_nonces", metadata,
    Column("nonce", String(32), primary_key=True),  # deleting the row redeems it: single use everywhere
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("retry", Integer, nullable=False),  # from newNonce or a refusal: exempt from the rejection test knob
    # Migration 0003: the client address (IPv6: its /64) it was minted for; each keeps a few.
    Column("source", String(64), nullable=False, server_default=""),
    # Migration 0013: only the unauthenticated ones (retry = 1), the rows the per-client trim
    # reads; a redemption rewrites its row as retry = 0 and then moves no index entry.
    Index("ix_acme_nonces_source", "source", "expires_at", sqlite_where=text("retry = 1"),
          postgresql_where=text("retry = 1")),
)

acme_accounts = Table(
    "acme_accounts", metadata,
    Column("id", String(32), primary_key=True),
    Column("provisioner", String(128), nullable=False),
    Column("thumbprint", String(64), nullable=False),  # RFC 7638, base64url
    Column("jwk", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("contact", Text, nullable=False),  # JSON list
    Column("eab_kid", String(255), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ux_acme_accounts_key", "provisioner", "thumbprint", unique=True),
)

acme_orders = Table(
    "acme_orders", metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", String(32), nullable=False),
    Column("provisioner", String(128), nullable=False),
    Column("status", String(16), nullable=False),  # pending|ready|processing|valid|invalid (stored)
    Column("identifiers", Text, nullable=False),  # JSON list of {type, value}
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("error", Text, nullable=True),  # JSON problem
    Column("cert_serial", String(40), nullable=True),
    Column("replaces", String(255), nullable=True),
    # migration 0012: when the finalize began (an order processing for long was cut by a crash)
    Column("finalize_started_at", DateTime(timezone=True), nullable=True),
    Index("ix_acme_orders_account", "account_id"),
    Index("ix_acme_orders_cert", "cert_serial"),
)

acme_authzs = Table(
    "acme_authzs", metadata,
    Column("id", String(32), primary_key=True),
    Column("order_id", String(32), nullable=False),
    Column("account_id", String(32), nullable=False),
    Column("type", String(8), nullable=False),
    Column("value", String(255), nullable=False),  # without the "*." of a wildcard
    Column("wildcard", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_acme_authzs_order", "order_id"),
    Index("ix_acme_authzs_account_value", "account_id", "value"),
)

acme_challenges = Table(
    "acme_challenges", metadata,
    Column("id", String(32), primary_key=True),
    Column("authz_id", String(32), nullable=False),
    Column("type", String(16), nullable=False),
    Column("token", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("validated_at", DateTime(timezone=True), nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("error", Text, nullable=True),  # JSON problem
    Index("ix_acme_challenges_authz", "authz_id"),
)


# -- refusals in aggregate: migration 0003 --------------------------------------------------------

refusals = Table(
    "refusals", metadata,
    # Unauthenticated refusals, one row per interval, source address and reason, with a count:
    # a flood of junk requests moves a counter instead of adding audit entries.
    Column("interval_start", DateTime(timezone=True), primary_key=True),
    Column("source", String(64), primary_key=True),
    Column("reason", String(96), primary_key=True),
    Column("count", BigInteger, nullable=False),
    Column("last_at", DateTime(timezone=True), nullable=False),
)


# -- CA rotation: migration 0005 ------------------------------------------------------------------

rotations = Table(
    "rotations", metadata,
    # One rotation of the intermediate or the root, moved through its states by ca.rotation.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # intermediate | root
    Column("state", String(16), nullable=False),  # prepared ... retired, or rolled_back
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("prepared_at", DateTime(timezone=True), nullable=True),
    Column("published_at", DateTime(timezone=True), nullable=True),
    Column("adopted_at", DateTime(timezone=True), nullable=True),
    Column("active_at", DateTime(timezone=True), nullable=True),
    Column("retiring_at", DateTime(timezone=True), nullable=True),
    Column("retired_at", DateTime(timezone=True), nullable=True),
    Column("rolled_back_at", DateTime(timezone=True), nullable=True),
    Column("deadline_at", DateTime(timezone=True), nullable=True),  # when the current state should be left
    Column("bundle_version", BigInteger, nullable=True),  # the first bundle version with the new material
    Column("old_intermediate_sha256", String(64), nullable=False),
    Column("old_root_sha256", String(64), nullable=False),
    Column("new_intermediate_sha256", String(64), nullable=True),
    Column("new_root_sha256", String(64), nullable=True),
    Column("cross_sha256", String(64), nullable=True),
    Column("paths", Text, nullable=False),  # JSON: the material's files, relative to the home
    Column("forced_laggards", Text, nullable=False, server_default="[]"),  # JSON list
    Index("ix_rotations_state", "state"),
)


# -- the fleet: migration 0006 -------------------------------------------------------------------

relying_parties = Table(
    "relying_parties", metadata,
    # One row per party (an agent's certificate, or a service reporting its loaded bundle): the
    # certificate's identity plus the instance id the party keeps, so two replicas are two rows.
    Column("party", String(320), primary_key=True),  # "<identity>#<instance>"
    Column("identity", String(255), nullable=False),
    Column("instance", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # agent | service
    Column("serial", String(40), nullable=False),  # of the certificate that authenticated the last check-in
    Column("not_after", DateTime(timezone=True), nullable=False),
    Column("bundle_version", BigInteger, nullable=True),
    Column("bundle_sha256", String(64), nullable=True),
    Column("endpoint_serial", String(40), nullable=True),  # what --verify-endpoint serves
    Column("failures", Integer, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("agent_version", String(64), nullable=False),
    Column("interval_seconds", Integer, nullable=False),  # the party's check-in interval: stale after 3
    Column("first_seen", DateTime(timezone=True), nullable=False),
    Column("last_checkin", DateTime(timezone=True), nullable=False),
    Column("last_jti", String(128), nullable=True),  # a check-in proof is not accepted twice in a row
    # A pending renew-now: due from renew_after, for the certificate renew_serial (cleared by a
    # check-in authenticated by that certificate's renewal).
    Column("renew_after", DateTime(timezone=True), nullable=True),
    Column("renew_serial", String(40), nullable=True),
    Index("ix_relying_parties_last_checkin", "last_checkin"),
    Index("ix_relying_parties_identity", "identity"),
)


# -- the trust bundle's versions: migration 0007 ------------------------------------------------

bundle_versions = Table(
    "bundle_versions", metadata,
    Column("version", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("sha256", String(64), nullable=False),  # hex SHA-256 of the PEM bytes served
    Column("pem", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


# -- revocation lists: migration 0009 -----------------------------------------------------------

crls = Table(
    "crls", metadata,
    # One row per issuing intermediate and shard: the newest CRL (what every replica serves) and
    # the bookkeeping that makes exactly one replica generate it (``store/crls.py``).
    Column("issuer_id", String(16), primary_key=True),  # the first 16 hex digits of issuer_sha256: the URL's
    Column("shard", Integer, primary_key=True, autoincrement=False),
    Column("issuer_sha256", String(64), nullable=False),
    Column("shards", Integer, nullable=False),  # how many shards the issuer's certificates are spread over
    Column("number", BigInteger, nullable=False),  # the CRL number claimed last (0: none yet)
    Column("period", BigInteger, nullable=False),  # the generation period it was claimed for (-1: none)
    Column("claimed_at", DateTime(timezone=True), nullable=True),
    Column("dirty_at", DateTime(timezone=True), nullable=True),  # a revocation since the claim
    Column("der_number", BigInteger, nullable=False),  # the CRL number of der (0: none yet)
    Column("der", LargeBinary, nullable=True),
    Column("this_update", DateTime(timezone=True), nullable=True),
    Column("next_update", DateTime(timezone=True), nullable=True),
    Column("entries", Integer, nullable=False),
)


# -- migrating off self-signed certificates: migration 0010 ---------------------------------------

migrate_boundaries = Table(
    "migrate_boundaries", metadata,
    # One server identity (by SPKI) and every client location that trusts it, as `migrate plan
    # --save` found them (``plan``: JSON, with the checksums each location must still have).
    Column("id", String(16), primary_key=True),  # the first hex digits of the SPKI SHA-256
    Column("spki_sha256", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # planned issued trusted switched verified retired done
    Column("plan", Text, nullable=False),
    Column("rank", Integer, nullable=False),  # the plan's risk order, lowest first
    Column("blocking", Text, nullable=True),  # what the last refused step said to fix
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("moved_at", DateTime(timezone=True), nullable=False),
)

migrate_journal = Table(
    "migrate_journal", metadata,
    # Each step's intent, recorded before any file is written: the files it writes with their
    # checksums before and after, the backups and the staged copies (``migrate/journal.py``).
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("boundary_id", String(16), nullable=False),
    Column("step", String(16), nullable=False),  # the state the step leads to
    Column("from_state", String(16), nullable=False),
    Column("status", String(16), nullable=False),  # pending | done | rolled_back | abandoned
    Column("writes", Text, nullable=False),  # JSON list
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("done_at", DateTime(timezone=True), nullable=True),
    Index("ix_migrate_journal_boundary", "boundary_id", "seq"),
)


# -- emergency replacement: migration 0011 ------------------------------------------------------

emergencies = Table(
    "emergencies", metadata,
    # One `trustyard emergency`: what it selected and why, and how long the old certificates live on.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("selector", Text, nullable=False),  # JSON: {"kind": ..., "value": ...}
    Column("reason", String(64), nullable=False),  # the revocation reason of the old certificates
    Column("grace_seconds", Integer, nullable=False),
    Column("require_bootstrap", Integer, nullable=False),  # 1: the old certificate renews nothing
    Column("count", Integer, nullable=False),
)

emergency_certs = Table(
    "emergency_certs", metadata,
    # One row per certificate an emergency replaces (a certificate is in at most one emergency).
    Column("serial", String(40), primary_key=True),
    Column("emergency_id", Integer, nullable=False),
    Column("identity", String(255), nullable=False),
    Column("sans", Text, nullable=False),  # JSON list
    Column("provisioner", String(128), nullable=False),
    Column("spki_sha256", String(64), nullable=False),  # its key: refused for any further issuance
    Column("fleet", Integer, nullable=False),  # 1: a relying party checked in with it (replaced = seen serving)
    Column("deadline_at", DateTime(timezone=True), nullable=False),  # the grace runs out
    Column("state", String(16), nullable=False),  # pending | replaced | unreachable
    Column("replacement", String(40), nullable=True),
    Column("claimed_at", DateTime(timezone=True), nullable=True),  # the revocation claim (compare-and-set)
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("token_jti", String(128), nullable=True),  # the bootstrap token `emergency tokens` minted for it
    Index("ix_emergency_certs_spki", "spki_sha256"),
    Index("ix_emergency_certs_emergency", "emergency_id", "state"),
    Index("ix_emergency_certs_deadline", "state", "deadline_at"),
    Index("ix_emergency_certs_token", "token_jti"),
)
