"""The seat ledger: append-only entries of every change to the pool and to who holds a seat,
and what billing and alerts read back from it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, insert, select

from agent.storage.records import LedgerEntry
from agent.storage.rows import utc
from agent.storage.tables import seat_ledger, users
from agent.storage.transaction import Transaction
from agent.storage.write_behind import DriverStatement

LEDGER_INSERT = insert(seat_ledger)
_ENTRY_COLUMNS = (
    "at",
    "kind",
    "cause",
    "user_id",
    "user_name",
    "detail",
    "request_id",
    "seats_after",
    "consumed_after",
    "cost",
)
# One entry, queued with the transaction's other writes (agent.storage.write_behind).
_QUEUED_ENTRY = DriverStatement(insert(seat_ledger).inline(), _ENTRY_COLUMNS)
_FREE_SEATS = seat_ledger.c.seats_after - seat_ledger.c.consumed_after
# Ledger kinds that show a user held a seat at that moment (metered billing, seed 002).
_HELD_A_SEAT = ("grant", "promote", "release")


def _ledger_entry(r: Any) -> LedgerEntry:
    return LedgerEntry(
        seq=r.seq,
        at=utc(r.at),  # type: ignore[arg-type]
        kind=r.kind,
        user_id=r.user_id,
        user_name=r.user_name,
        cause=r.cause,
        detail=r.detail,
        seats_after=r.seats_after,
        consumed_after=r.consumed_after,
        cost=Decimal(r.cost) if r.cost is not None else None,
        request=r.request_id,
    )


class SeatLedger:
    """The seat ledger of one transaction."""

    def __init__(self, tx: Transaction):
        self._tx = tx
        self.conn = tx.conn

    def append(
        self,
        *,
        at: datetime,
        kind: str,
        cause: str,
        seats_after: int,
        consumed_after: int,
        user_id: str | None = None,
        user_name: str | None = None,
        detail: str | None = None,
        cost: Decimal | None = None,
        request: str | None = None,
    ) -> None:
        """Append one entry. ``request`` is the X-Request-Id of the call that caused it."""
        entry = {
            "at": at,
            "kind": kind,
            "cause": cause,
            "user_id": user_id,
            "user_name": user_name,
            "detail": detail,
            "request_id": request,
            "seats_after": seats_after,
            "consumed_after": consumed_after,
            "cost": cost,
        }
        if self._tx.deferred is not None:
            self._tx.deferred.ledger.append(entry)
            return
        self._tx.writes.add(_QUEUED_ENTRY, entry)

    def entries(
        self,
        since: datetime | None = None,
        limit: int = 1000,
        kinds: Sequence[str] | None = None,
        newest_first: bool = False,
        after: int | None = None,
    ) -> list[LedgerEntry]:
        q = select(seat_ledger).order_by(
            seat_ledger.c.seq.desc() if newest_first else seat_ledger.c.seq
        )
        if since is not None:
            q = q.where(seat_ledger.c.at >= since)
        if after is not None:
            q = q.where(seat_ledger.c.seq > after)
        if kinds is not None:
            q = q.where(seat_ledger.c.kind.in_(list(kinds)))
        rows = self.conn.execute(q.limit(limit)).all()
        return [_ledger_entry(r) for r in rows]

    def seat_since(self, user_ids: Sequence[str]) -> dict[str, datetime]:
        """When each of these users was last given a seat (its newest ``grant`` or ``promote``
        ledger entry); users never given one are absent."""
        out: dict[str, datetime] = {}
        ids = list(user_ids)
        for start in range(0, len(ids), 500):
            q = (
                select(seat_ledger.c.user_id, func.max(seat_ledger.c.at))
                .where(
                    seat_ledger.c.user_id.in_(ids[start : start + 500]),
                    seat_ledger.c.kind.in_(("grant", "promote")),
                )
                .group_by(seat_ledger.c.user_id)
            )
            for user_id, at in self.conn.execute(q):
                out[user_id] = utc(at)  # type: ignore[assignment]
        return out

    def peak(self, start: datetime, end: datetime) -> tuple[int, int] | None:
        """Highest seats held and seats consumed recorded in [start, end), with the state in
        force at ``start`` (the last entry before it) counted too."""
        before = self.state_at(start)
        row = self.conn.execute(
            select(
                func.max(seat_ledger.c.seats_after), func.max(seat_ledger.c.consumed_after)
            ).where(seat_ledger.c.at >= start, seat_ledger.c.at < end)
        ).one()
        peaks = [p for p in (before, (row[0], row[1]) if row[0] is not None else None) if p]
        if not peaks:
            return None
        return max(p[0] for p in peaks), max(p[1] for p in peaks)

    def state_at(self, moment: datetime) -> tuple[int, int] | None:
        """(seats, consumed) in force at ``moment``, from the last ledger entry at or before it."""
        row = self.conn.execute(
            select(seat_ledger.c.seats_after, seat_ledger.c.consumed_after)
            .where(seat_ledger.c.at <= moment)
            .order_by(seat_ledger.c.seq.desc())
            .limit(1)
        ).first()
        return (row[0], row[1]) if row else None

    def released_since(self, user_id: str, cause: str, since: datetime) -> bool:
        """Whether the ledger has a ``release`` of ``user_id`` with ``cause`` at or after
        ``since`` (a reduction recognises the seats its own deactivations freed)."""
        found = self.conn.execute(
            select(seat_ledger.c.seq)
            .where(
                seat_ledger.c.user_id == user_id,
                seat_ledger.c.kind == "release",
                seat_ledger.c.cause == cause,
                seat_ledger.c.at >= since,
            )
            .limit(1)
        ).first()
        return found is not None

    def free_seats_at(self, moment: datetime) -> int | None:
        """Seats free (seats minus consumed) by the latest ledger entry at or before
        ``moment``, by entry time; None before the first entry."""
        row = self.conn.execute(
            select(_FREE_SEATS)
            .where(seat_ledger.c.at <= moment)
            .order_by(seat_ledger.c.at.desc())
            .limit(1)
        ).first()
        return int(row[0]) if row is not None else None

    def free_seats_dipped_below(self, threshold: int, after: datetime, until: datetime) -> bool:
        """Whether a ledger entry in (``after``, ``until``] left fewer than ``threshold``
        seats free."""
        dipped = self.conn.execute(
            select(seat_ledger.c.seq)
            .where(seat_ledger.c.at > after, seat_ledger.c.at <= until, _FREE_SEATS < threshold)
            .limit(1)
        ).first()
        return dipped is not None

    def metered_last_activity(self, since: datetime) -> list[datetime]:
        """Last sign of activity of each user who holds no seat now but may still be billed on
        a metered plan (seed 002: deactivated users "if they were active within the last
        month", including "users who registered within the last month").

        * a deactivated user: the later of its ``last_active_at`` (the moment it was
          deactivated) and ``created`` (registering counts, even when created inactive);
        * any user, deleted ones included, that held a seat at some moment since ``since``:
          its latest ``grant``/``promote``/``release`` entry in the append-only seat ledger,
          which keeps the user id after the user row is gone.

        Users holding a seat now are left out: they are counted as consumed.
        """
        latest: dict[str, datetime] = {}

        def seen(user_id: str, at: datetime | None) -> None:
            if at is not None and (user_id not in latest or at > latest[user_id]):
                latest[user_id] = at

        q = select(users.c.id, users.c.last_active_at, users.c.created).where(
            users.c.active.is_(False), users.c.holds_seat.is_(False)
        )
        for r in self.conn.execute(q):
            seen(r[0], utc(r[1]))
            seen(r[0], utc(r[2]))
        holding = (
            select(users.c.id)
            .where(users.c.id == seat_ledger.c.user_id, users.c.holds_seat.is_(True))
            .exists()
        )
        q2 = (
            select(seat_ledger.c.user_id, func.max(seat_ledger.c.at))
            .where(
                seat_ledger.c.at >= since,
                seat_ledger.c.kind.in_(_HELD_A_SEAT),
                seat_ledger.c.user_id.is_not(None),
                ~holding,
            )
            .group_by(seat_ledger.c.user_id)
        )
        for uid, at in self.conn.execute(q2):
            seen(uid, utc(at))
        return list(latest.values())
