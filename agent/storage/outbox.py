"""Outbox, alert-state, downstream-link, reduction and lease rows: plain functions on a StoreTx.

Outbox rows are written in the same transaction as the change they announce, so an accepted
change is never lost; a worker delivers them later (agent.services.delivery).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update

from agent.storage.rows import utc
from agent.storage.store import StoreTx
from agent.storage.tables import alert_state, downstream_links, leases, outbox, users

IN_CHUNK = 500  # keys bound per IN (...) list


@dataclass(frozen=True)
class OutboxMessage:
    seq: int
    kind: str
    key: str
    payload: dict[str, Any]
    created: datetime
    available_at: datetime
    attempts: int
    last_error: str | None


def enqueue(tx: StoreTx, kind: str, key: str, payload: dict[str, Any], now: datetime) -> None:
    tx.conn.execute(
        insert(outbox).values(
            kind=kind,
            key=key,
            payload=json.dumps(payload, default=str),
            created=now,
            available_at=now,
            attempts=0,
        )
    )


def message_of(row: Any) -> OutboxMessage:
    return OutboxMessage(
        seq=row.seq,
        kind=row.kind,
        key=row.key,
        payload=json.loads(row.payload),
        created=utc(row.created),  # type: ignore[arg-type]
        available_at=utc(row.available_at),  # type: ignore[arg-type]
        attempts=row.attempts,
        last_error=row.last_error,
    )


def due(tx: StoreTx, now: datetime, limit: int = 100, kinds: tuple[str, ...] | None = None):
    """Undelivered messages whose time has come, oldest first, at most one per key (the
    oldest undelivered of that key: messages for one user are delivered in order)."""
    older = outbox.alias("older")
    blocked = (
        select(older.c.seq)
        .where(
            older.c.key == outbox.c.key,
            older.c.seq < outbox.c.seq,
            older.c.delivered_at.is_(None),
        )
        .exists()
    )
    q = (
        select(outbox)
        .where(outbox.c.delivered_at.is_(None), outbox.c.available_at <= now, ~blocked)
        .order_by(outbox.c.seq)
        .limit(limit)
    )
    if kinds is not None:
        q = q.where(outbox.c.kind.in_(list(kinds)))
    return [message_of(r) for r in tx.conn.execute(q)]


def mark_delivered(tx: StoreTx, seq: int, now: datetime) -> None:
    tx.conn.execute(
        update(outbox)
        .where(outbox.c.seq == seq, outbox.c.delivered_at.is_(None))
        .values(delivered_at=now)
    )


def mark_failed(tx: StoreTx, seq: int, error: str, retry_at: datetime) -> None:
    tx.conn.execute(
        update(outbox)
        .where(outbox.c.seq == seq)
        .values(attempts=outbox.c.attempts + 1, last_error=error[:2000], available_at=retry_at)
    )


def depth(tx: StoreTx) -> dict[str, int]:
    q = (
        select(outbox.c.kind, func.count())
        .where(outbox.c.delivered_at.is_(None))
        .group_by(outbox.c.kind)
    )
    return {r[0]: int(r[1]) for r in tx.conn.execute(q)}


def failing(tx: StoreTx, min_attempts: int) -> list[OutboxMessage]:
    q = (
        select(outbox)
        .where(outbox.c.delivered_at.is_(None), outbox.c.attempts >= min_attempts)
        .order_by(outbox.c.seq)
        .limit(100)
    )
    return [message_of(r) for r in tx.conn.execute(q)]


def pending_keys(tx: StoreTx, keys: Sequence[str], kinds: Sequence[str]) -> int:
    """How many of ``keys`` (user ids) still have an undelivered message of one of ``kinds``,
    asked ``IN_CHUNK`` keys at a time."""
    pending = 0
    for start in range(0, len(keys), IN_CHUNK):
        pending += tx.conn.execute(
            select(func.count(func.distinct(outbox.c.key))).where(
                outbox.c.delivered_at.is_(None),
                outbox.c.kind.in_(tuple(kinds)),
                outbox.c.key.in_(keys[start : start + IN_CHUNK]),
            )
        ).scalar_one()
    return int(pending)


@dataclass(frozen=True)
class Outage:
    """Downstream (non-email) delivery that keeps failing, for one alert per outage."""

    failing: int  # undelivered messages that failed at least alert_after_attempts times
    pending: int  # every undelivered downstream message
    oldest: OutboxMessage  # the oldest failing message


def outage(tx: StoreTx, min_attempts: int, except_kind: str) -> Outage | None:
    """Undelivered messages of every kind but ``except_kind`` that failed ``min_attempts``
    times or more: how many, how many such messages wait in all, and the oldest failing one;
    None when none is failing."""
    waiting = (outbox.c.delivered_at.is_(None), outbox.c.kind != except_kind)
    failing_rows = (*waiting, outbox.c.attempts >= min_attempts)
    count = tx.conn.execute(
        select(func.count()).select_from(outbox).where(*failing_rows)
    ).scalar_one()
    if not count:
        return None
    oldest = tx.conn.execute(
        select(outbox).where(*failing_rows).order_by(outbox.c.seq).limit(1)
    ).first()
    pending = tx.conn.execute(select(func.count()).select_from(outbox).where(*waiting)).scalar_one()
    return Outage(int(count), int(pending), message_of(oldest))


def oldest_pending_created(tx: StoreTx) -> datetime | None:
    """When the oldest undelivered message was written; None when nothing waits."""
    oldest = tx.conn.execute(
        select(func.min(outbox.c.created)).where(outbox.c.delivered_at.is_(None))
    ).scalar()
    return utc(oldest)


def purge_delivered(tx: StoreTx, before: datetime) -> int:
    result = tx.conn.execute(
        delete(outbox).where(outbox.c.delivered_at.is_not(None), outbox.c.delivered_at < before)
    )
    return int(result.rowcount or 0)


# -- alert deduplication ---------------------------------------------------------------------


def alert_keys(tx: StoreTx, prefix: str, state: str) -> set[str]:
    """Alert keys starting with ``prefix`` (a LIKE pattern: ``%`` and ``_`` in it match
    anything) whose recorded state is ``state``."""
    q = select(alert_state.c.key).where(
        alert_state.c.key.like(f"{prefix}%"), alert_state.c.state == state
    )
    return {row[0] for row in tx.conn.execute(q)}


def alert_state_of(tx: StoreTx, key: str) -> str | None:
    """The state last recorded for alert ``key``, None when it was never raised."""
    return tx.conn.execute(select(alert_state.c.state).where(alert_state.c.key == key)).scalar()


def alert_changed(tx: StoreTx, key: str, state: str, now: datetime) -> bool:
    """Record ``state`` for ``key``; True when it differs from the last one (alert once)."""
    current = alert_state_of(tx, key)
    if current == state:
        return False
    if current is None:
        tx.conn.execute(insert(alert_state).values(key=key, state=state, sent_at=now))
    else:
        tx.conn.execute(
            update(alert_state).where(alert_state.c.key == key).values(state=state, sent_at=now)
        )
    return True


# -- downstream links ------------------------------------------------------------------------


def remote_id(tx: StoreTx, user_id: str) -> str | None:
    return tx.conn.execute(
        select(downstream_links.c.remote_id).where(downstream_links.c.user_id == user_id)
    ).scalar()


def link(tx: StoreTx, user_id: str, remote: str, now: datetime) -> None:
    if remote_id(tx, user_id) is None:
        tx.conn.execute(
            insert(downstream_links).values(user_id=user_id, remote_id=remote, pushed_at=now)
        )
    else:
        tx.conn.execute(
            update(downstream_links)
            .where(downstream_links.c.user_id == user_id)
            .values(remote_id=remote, pushed_at=now)
        )


def users_by_remote_id(tx: StoreTx) -> dict[str, str]:
    """{downstream id: user id} of every recorded link (read once per downstream listing:
    one scan, rather than one per page on a column without an index)."""
    rows = tx.conn.execute(select(downstream_links.c.remote_id, downstream_links.c.user_id))
    return {r[0]: r[1] for r in rows}


def unlink(tx: StoreTx, user_id: str) -> None:
    tx.conn.execute(delete(downstream_links).where(downstream_links.c.user_id == user_id))


def remote_ids(tx: StoreTx, user_ids: Sequence[str]) -> dict[str, str]:
    """The links of ``user_ids`` that exist, asked ``IN_CHUNK`` ids at a time."""
    found: dict[str, str] = {}
    for start in range(0, len(user_ids), IN_CHUNK):
        q = select(downstream_links.c.user_id, downstream_links.c.remote_id).where(
            downstream_links.c.user_id.in_(user_ids[start : start + IN_CHUNK])
        )
        found.update({r[0]: r[1] for r in tx.conn.execute(q)})
    return found


def set_link(tx: StoreTx, user_id: str, remote: str, now: datetime, *, exists: bool) -> None:
    """``link`` for a caller that already read whether the user has a link (one statement)."""
    if exists:
        tx.conn.execute(
            update(downstream_links)
            .where(downstream_links.c.user_id == user_id)
            .values(remote_id=remote, pushed_at=now)
        )
    else:
        tx.conn.execute(
            insert(downstream_links).values(user_id=user_id, remote_id=remote, pushed_at=now)
        )


def count_links(tx: StoreTx, prefix: str, license_state: str | None = None) -> int:
    """How many links' downstream id starts with ``prefix`` (a LIKE pattern), of users in
    ``license_state`` when given."""
    q = select(func.count()).where(downstream_links.c.remote_id.like(f"{prefix}%"))
    if license_state is None:
        q = q.select_from(downstream_links)
    else:
        q = q.select_from(
            downstream_links.join(users, users.c.id == downstream_links.c.user_id)
        ).where(users.c.license_state == license_state)
    return int(tx.conn.execute(q).scalar_one())


# -- leases ----------------------------------------------------------------------------------


def acquire_lease(tx: StoreTx, name: str, holder: str, now: datetime, until: datetime) -> bool:
    """Take or renew the lease ``name``; True when ``holder`` holds it until ``until``.

    Runs inside a write transaction (which serialises writers), so two contenders never both
    see the lease free.
    """
    row = tx.conn.execute(select(leases).where(leases.c.name == name)).first()
    if row is None:
        tx.conn.execute(insert(leases).values(name=name, holder=holder, expires_at=until))
        return True
    expires = utc(row.expires_at)
    if row.holder == holder or expires is None or expires <= now:
        tx.conn.execute(
            update(leases)
            .where(
                leases.c.name == name,
                or_(leases.c.holder == holder, leases.c.expires_at <= now),
            )
            .values(holder=holder, expires_at=until)
        )
        return True
    return False


def release_lease(tx: StoreTx, name: str, holder: str) -> None:
    tx.conn.execute(delete(leases).where(and_(leases.c.name == name, leases.c.holder == holder)))


def lease_holder(tx: StoreTx, name: str, now: datetime) -> str | None:
    row = tx.conn.execute(select(leases).where(leases.c.name == name)).first()
    if row is None or utc(row.expires_at) <= now:  # type: ignore[operator]
        return None
    return str(row.holder)
