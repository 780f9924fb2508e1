"""Rows of the ``refusals`` table (refused demand): plain functions on a StoreTx.

Every activation the pool could not serve with a seat is one row: ``refused`` (a 403 to the
IdP), ``queued`` (waiting for a seat) or ``fallback`` (given the free fallback role), with the
user, the moment, the path it came in on and the pool at that moment. Append-only, so the
counts per outcome only grow (a Prometheus counter reads them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Date, cast, func, insert, select

from agent.storage.rows import utc
from agent.storage.store import StoreTx
from agent.storage.tables import refusals

OUTCOMES = ("refused", "queued", "fallback")


@dataclass(frozen=True)
class RefusalRow:
    seq: int
    at: datetime
    outcome: str
    user_id: str | None
    user_name: str | None
    path: str
    licensed: int
    consumed: int
    queued: int
    request: str | None = None


def record(
    tx: StoreTx,
    *,
    at: datetime,
    outcome: str,
    path: str,
    licensed: int,
    consumed: int,
    queued: int,
    user_id: str | None = None,
    user_name: str | None = None,
    request: str | None = None,
) -> None:
    """Append one refusal (never deferred: it is no seat write)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown refusal outcome {outcome!r}")
    tx.conn.execute(
        insert(refusals).values(
            at=at,
            outcome=outcome,
            user_id=user_id,
            user_name=user_name[:255] if user_name else user_name,
            path=path[:64],
            licensed=licensed,
            consumed=consumed,
            queued=queued,
            request_id=request,
        )
    )


def _row(r: Any) -> RefusalRow:
    return RefusalRow(
        seq=r.seq,
        at=utc(r.at),  # type: ignore[arg-type]
        outcome=r.outcome,
        user_id=r.user_id,
        user_name=r.user_name,
        path=r.path,
        licensed=r.licensed,
        consumed=r.consumed,
        queued=r.queued,
        request=r.request_id,
    )


def page(
    tx: StoreTx, *, since: datetime | None = None, after: int | None = None, limit: int = 100
) -> list[RefusalRow]:
    """Refusals in time order from ``since`` and after the row ``after`` (a seq: keyset
    paging, so a page costs the same however many came before)."""
    q = select(refusals).order_by(refusals.c.seq)
    if since is not None:
        q = q.where(refusals.c.at >= since)
    if after is not None:
        q = q.where(refusals.c.seq > after)
    return [_row(r) for r in tx.conn.execute(q.limit(limit))]


def totals(tx: StoreTx, since: datetime | None = None) -> dict[str, int]:
    """Count per outcome (every outcome present, zero when none), from ``since`` if given."""
    q = select(refusals.c.outcome, func.count()).group_by(refusals.c.outcome)
    if since is not None:
        q = q.where(refusals.c.at >= since)
    counts = dict.fromkeys(OUTCOMES, 0)
    for outcome, n in tx.conn.execute(q):
        counts[outcome] = int(n)
    return counts


def per_day(tx: StoreTx, since: datetime) -> list[tuple[date, dict[str, int]]]:
    """Counts per outcome per UTC day from ``since``, oldest day first (days without any
    refusal are left out). Times are stored in UTC on both databases."""
    if tx.is_postgres:
        day: Any = cast(func.timezone("UTC", refusals.c.at), Date)
    else:
        day = func.substr(refusals.c.at, 1, 10)
    q = (
        select(day.label("day"), refusals.c.outcome, func.count())
        .where(refusals.c.at >= since)
        .group_by(day, refusals.c.outcome)
        .order_by(day)
    )
    days: dict[date, dict[str, int]] = {}
    for d, outcome, n in tx.conn.execute(q):
        key = d if isinstance(d, date) else date.fromisoformat(str(d))
        days.setdefault(key, dict.fromkeys(OUTCOMES, 0))[outcome] = int(n)
    return sorted(days.items())
