"""The seat pool row: its lock (the one every seat decision and the write it guards hold),
its counts, and the seat writes a job defers to one bulk write at the end of a block."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, exists, func, select, update

from agent.domain.reduction import SEAT_HOLDING_STATES
from agent.storage.ledger import LEDGER_INSERT
from agent.storage.records import PoolRow
from agent.storage.tables import reductions, seat_pool, users
from agent.storage.transaction import DeferredWrites, Transaction
from agent.storage.users import SET_SEAT

# Hot statements built once: SQLAlchemy memoises a statement's cache key per object, so the
# seat decision does not pay for building and keying its statements on every call.
_POOL = select(seat_pool.c.seats, seat_pool.c.consumed).where(seat_pool.c.id == 1)
# What every write reads as it takes the lock: the pool, the ceiling of the reductions that
# hold seats (the seat decision's and the queue's) and whether anyone is queued (the queue is
# served after each freed seat). SQLite: one statement, BEGIN IMMEDIATE holds the lock before
# it runs. PostgreSQL: three statements in one pipeline, the lock first, so the other two
# (each with its own READ COMMITTED snapshot, taken once the lock is held) see what the
# previous lock holder committed; folded into the FOR UPDATE statement they would see the
# snapshot taken before it waited for the lock.
_HOLDING = tuple(SEAT_HOLDING_STATES)
_CEILING = (
    select(func.min(reductions.c.target)).where(reductions.c.state.in_(_HOLDING)).scalar_subquery()
)
_ANY_QUEUED = exists().where(users.c.license_state == "queued")
# SQLite: driver SQL, run on the driver's cursor (SQLAlchemy's execution machinery costs
# about as much as the statement, on every write).
_SQLITE_LOCK = (
    "SELECT seats, consumed,"
    f" (SELECT min(target) FROM reductions WHERE state IN ({', '.join('?' * len(_HOLDING))})),"
    " EXISTS (SELECT 1 FROM users WHERE license_state = 'queued')"
    " FROM seat_pool WHERE id = 1",
    _HOLDING,
)
_PG_LOCK = [
    ("SELECT seats, consumed FROM seat_pool WHERE id = 1 FOR UPDATE", None),
    ("SELECT min(target) FROM reductions WHERE state = ANY(%s)", (list(_HOLDING),)),
    ("SELECT EXISTS (SELECT 1 FROM users WHERE license_state = 'queued')", None),
]
_SET_POOL = (
    update(seat_pool)
    .where(seat_pool.c.id == 1)
    .values(
        seats=bindparam("p_seats"), consumed=bindparam("p_consumed"), updated=bindparam("p_updated")
    )
)


class SeatPool:
    """The seat pool of one transaction."""

    def __init__(self, tx: Transaction):
        self._tx = tx
        self.conn = tx.conn
        self.is_postgres = tx.is_postgres

    def lock(self, also: Sequence[tuple[str, Any]] = ()) -> list[Any]:
        """Take the seat-pool lock (a write transaction's first statement) and read the pool,
        the seat-holding reductions' ceiling and whether anyone is queued. On PostgreSQL
        ``also`` (driver queries, each after the lock with a snapshot of its own) go in the
        same exchange; their first rows are returned (SQLite: none, nothing to save)."""
        rest: list[Any] = []
        if self.is_postgres:
            # Store.write leaves the driver in autocommit mode, so that BEGIN goes in the
            # same exchange as the lock (psycopg would send its own BEGIN alone first).
            begin = bool(self.conn.connection.driver_connection.autocommit)  # type: ignore[union-attr]
            pool, ceiling, queued, *rest = self._tx.writes.fetch([*_PG_LOCK, *also], begin=begin)
            assert pool is not None and ceiling is not None and queued is not None
            seats, consumed, target, anyone = pool[0], pool[1], ceiling[0], queued[0]
        else:
            (row,) = self._tx.writes.fetch([_SQLITE_LOCK])
            assert row is not None
            seats, consumed, target, anyone = row
        self._tx.ceilings[_HOLDING] = int(target) if target is not None else None
        self._tx.may_have_queued = bool(anyone)
        self._tx.pool_row = PoolRow(seats=seats, consumed=consumed)
        return rest

    def current(self) -> PoolRow:
        if self._tx.pool_row is not None:
            return self._tx.pool_row
        row = self.conn.execute(_POOL).one()
        return PoolRow(seats=row.seats, consumed=row.consumed)

    def update(self, seats: int, consumed: int, now: datetime) -> None:
        if self._tx.pool_row is not None:
            self._tx.pool_row = PoolRow(seats=seats, consumed=consumed)
        params = {"p_seats": seats, "p_consumed": consumed, "p_updated": now}
        if self._tx.deferred is not None:
            self._tx.deferred.pool = params
            return
        self._tx.change_pool(seats=seats, consumed=consumed, updated=now)

    @contextmanager
    def deferred_writes(self) -> Iterator[None]:
        """Inside the block, pool updates, ledger entries and seat-state changes are kept and
        written in bulk when it ends (one pool update, one executemany each), for a job that
        re-decides many users in one transaction. Reads of the ledger or of a user's seat
        state inside the block would not see them: callers only read before the block."""
        if self._tx.pool_row is None:
            raise RuntimeError("deferred seat writes need the seat-pool lock (a write tx)")
        deferred = self._tx.deferred = DeferredWrites()
        try:
            yield
        finally:
            self._tx.deferred = None
        if deferred.pool is not None:
            self.conn.execute(_SET_POOL, deferred.pool)
        if deferred.ledger:
            self.conn.execute(LEDGER_INSERT, deferred.ledger)
        if deferred.seats:
            self.conn.execute(SET_SEAT, deferred.seats)
