"""The seat ledger summed up per UTC day, for the status page's chart: a fixed number of
grouped statements, whatever the number of users or entries (no row is read into Python).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import case, func, select

from agent.domain.seat_history import LedgerDay
from agent.storage.store import StoreTx
from agent.storage.tables import seat_ledger


def _day(tx: StoreTx) -> Any:
    """The entry's UTC day as 'YYYY-MM-DD' text. SQLite keeps the UTC wall time as text;
    PostgreSQL converts from timestamptz explicitly (the session's time zone may be another)."""
    if tx.is_postgres:
        return func.to_char(func.timezone("UTC", seat_ledger.c.at), "YYYY-MM-DD")
    return func.substr(seat_ledger.c.at, 1, 10)


def ledger_days(tx: StoreTx, start: datetime, end: datetime) -> list[LedgerDay]:
    """Each UTC day in [start, end) that has ledger entries: the highest seats and consumed
    written that day, the values after its last entry, and how many users were queued."""
    day = _day(tx).label("day")
    grouped = (
        select(
            day,
            func.max(seat_ledger.c.seats_after),
            func.max(seat_ledger.c.consumed_after),
            func.sum(case((seat_ledger.c.kind == "queue", 1), else_=0)),
            func.max(seat_ledger.c.seq),
        )
        .where(seat_ledger.c.at >= start, seat_ledger.c.at < end)
        .group_by(day)
    )
    rows = tx.conn.execute(grouped).all()
    last_seqs = [r[4] for r in rows]
    closing: dict[int, tuple[int, int]] = {}
    if last_seqs:
        closed = select(
            seat_ledger.c.seq, seat_ledger.c.seats_after, seat_ledger.c.consumed_after
        ).where(seat_ledger.c.seq.in_(last_seqs))
        closing = {r[0]: (r[1], r[2]) for r in tx.conn.execute(closed)}
    out = [
        LedgerDay(
            day=date.fromisoformat(r[0]),
            seats_peak=int(r[1]),
            consumed_peak=int(r[2]),
            seats_close=closing[r[4]][0],
            consumed_close=closing[r[4]][1],
            queued=int(r[3] or 0),
        )
        for r in rows
    ]
    return sorted(out, key=lambda d: d.day)


def state_before(tx: StoreTx, moment: datetime) -> tuple[int, int] | None:
    """(seats, consumed) after the last entry written before ``moment``; None if none was."""
    row = tx.conn.execute(
        select(seat_ledger.c.seats_after, seat_ledger.c.consumed_after)
        .where(seat_ledger.c.at < moment)
        .order_by(seat_ledger.c.at.desc(), seat_ledger.c.seq.desc())
        .limit(1)
    ).first()
    return (int(row[0]), int(row[1])) if row else None
