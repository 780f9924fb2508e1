"""SQLAlchemy Core tables: the one description of the schema, for SQLite and PostgreSQL.

Filterable SCIM attributes live in columns so filters (RFC 7644 §3.4.2.2) become indexed SQL;
the full resource is kept as JSON text so nothing the IdP sent is lost. Multi-valued
attributes (emails, phoneNumbers, roles, ...) are rows of ``user_values`` so that value-path
filters such as ``emails[type eq "work"].value`` are an indexed EXISTS. Group membership is
its own table, so adding or removing one member costs the same for any group size.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

TS = DateTime(timezone=True)

users = Table(
    "users",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("user_name", String(255), nullable=False),
    # RFC 7643 §4.1.1: userName is case-insensitive; the lowered copy carries the unique index.
    Column("user_name_ci", String(255), nullable=False, unique=True),
    Column("external_id", String(255), index=True),
    Column("display_name", String(255)),
    Column("nick_name", String(255)),
    Column("title", String(255)),
    Column("user_type", String(255)),
    Column("locale", String(64)),
    Column("timezone", String(64)),
    Column("preferred_language", String(64)),
    Column("profile_url", String(1024)),
    Column("given_name", String(255)),
    Column("family_name", String(255)),
    Column("formatted_name", String(512)),
    Column("active", Boolean, nullable=False, index=True),
    Column("employee_number", String(255)),
    Column("department", String(255)),
    Column("organization", String(255)),
    Column("division", String(255)),
    Column("cost_center", String(255)),
    Column("manager_id", String(255)),
    Column("created", TS, nullable=False),
    Column("last_modified", TS, nullable=False, index=True),
    Column("version", Integer, nullable=False, default=1),
    Column("resource", Text, nullable=False),
    # Seat state (seat engine): the mapped application status and the seat held.
    Column("app_status", String(64), nullable=False, default="Active"),
    Column("license_state", String(16), nullable=False, default="free", index=True),
    Column("holds_seat", Boolean, nullable=False, default=False, index=True),
    Column("on_fallback", Boolean, nullable=False, default=False),
    Column("queued_at", TS, index=True),
    Column("last_active_at", TS),
    Column("deactivated_at", TS),
    # A narrow copy of the row order: list pages find their keys by walking this index, not
    # the wide rows (SQLite stores each row, JSON included, in the rowid tree).
    Index("ix_users_seq", "seq"),
)

# Counted buckets of the user order (agent.storage.user_order): how many users each run of
# BUCKET_SIZE consecutive seq values holds, changed in the transaction of every user insert and
# delete, so an unfiltered page at any offset finds its start without walking the users before it.
user_order_buckets = Table(
    "user_order_buckets",
    metadata,
    Column("bucket", Integer, primary_key=True, autoincrement=False),  # seq // BUCKET_SIZE
    Column("users", Integer, nullable=False),
)

user_values = Table(
    "user_values",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("attr", String(32), nullable=False),
    Column("type", String(64)),
    Column("value_ci", String(1024)),
    Column("is_primary", Boolean, nullable=False, default=False),
    Index("ix_user_values_attr_value", "attr", "value_ci"),
    Index("ix_user_values_user", "user_id"),
)

groups = Table(
    "groups",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("display_name", String(255), nullable=False),
    Column("display_name_ci", String(255), nullable=False, unique=True),
    Column("external_id", String(255), index=True),
    Column("created", TS, nullable=False),
    Column("last_modified", TS, nullable=False, index=True),
    Column("version", Integer, nullable=False, default=1),
    Column("resource", Text, nullable=False),
)

group_members = Table(
    "group_members",
    metadata,
    Column("group_id", String(36), ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_group_members_user", "user_id"),
)

# The seat pool: one row, locked by every seat decision (SELECT ... FOR UPDATE on PostgreSQL,
# BEGIN IMMEDIATE on SQLite) so the decision and the write are one atomic step.
seat_pool = Table(
    "seat_pool",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("seats", Integer, nullable=False),
    Column("consumed", Integer, nullable=False, default=0),
    Column("updated", TS, nullable=False),
    # Users stored, changed with every insert and delete: totalResults of an unfiltered list.
    Column("users_total", Integer, nullable=False, server_default="0"),
)

# Append-only: every change to seats held or consumed, with its cause.
seat_ledger = Table(
    "seat_ledger",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("at", TS, nullable=False, index=True),
    Column("kind", String(32), nullable=False),
    Column("user_id", String(36), index=True),  # a user's seat history ("seat since")
    Column("user_name", String(255)),
    Column("cause", String(64), nullable=False),
    Column("detail", Text),
    Column("seats_after", Integer, nullable=False),
    Column("consumed_after", Integer, nullable=False),
    Column("cost", Numeric(12, 2)),
    Column("request_id", String(128)),  # X-Request-Id of the call that caused it
)

# Generated secrets and other small agent state (token hashes of the embedded default).
agent_state = Table(
    "agent_state",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# Transactional outbox: every change the agent must push downstream (and every alert email) is
# written here in the same transaction as the change, then delivered by a worker with retries.
outbox = Table(
    "outbox",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),  # push_user | delete_user | email
    Column("key", String(255), nullable=False),  # user id or alert key: one in flight per key
    Column("payload", Text, nullable=False),
    Column("created", TS, nullable=False),
    Column("available_at", TS, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Column("delivered_at", TS),
    Index("ix_outbox_due", "delivered_at", "available_at"),
    Index("ix_outbox_key", "key", "seq"),
)

# Alert deduplication: the last state each alert key was reported in.
alert_state = Table(
    "alert_state",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("state", String(255), nullable=False),
    Column("sent_at", TS, nullable=False),
)

# Which downstream id each user has (idempotent pushes: a resend never duplicates a user).
downstream_links = Table(
    "downstream_links",
    metadata,
    Column("user_id", String(36), primary_key=True),
    Column("remote_id", String(255), nullable=False),
    Column("pushed_at", TS, nullable=False),
)

# Reduce-users-then-licenses workflows (seed 000), persisted so they resume after a restart.
reductions = Table(
    "reductions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("target", Integer, nullable=False),
    Column("state", String(40), nullable=False, index=True),
    Column("created", TS, nullable=False),
    Column("updated", TS, nullable=False),
    Column("plan", Text, nullable=False),  # JSON: candidates with reasons, counts, window
    Column("reason", Text),  # why cancelled/failed/waiting
    Column("history", Text, nullable=False),  # JSON list of {at, state, note}
    Column("proposed_by", String(64), nullable=False),
)

# Leases: exactly one scheduler runs across processes and hosts.
leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("expires_at", TS, nullable=False),
)

# Refused demand (issue 14): every activation the pool could not serve with a seat (refused,
# queued or put on the fallback role), with who, when, which path and the pool at that moment.
# Append-only; a refusal rolls its own transaction back, so it is written in one of its own.
refusals = Table(
    "refusals",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("at", TS, nullable=False, index=True),
    Column("outcome", String(16), nullable=False),  # refused | queued | fallback
    Column("user_id", String(36)),
    Column("user_name", String(255)),
    Column("path", String(64), nullable=False),  # "scim POST /Users", "group membership", ...
    Column("licensed", Integer, nullable=False),
    Column("consumed", Integer, nullable=False),
    Column("queued", Integer, nullable=False),
    Column("request_id", String(128)),
)
