"""What the repositories of one transaction share (``StoreTx`` is the unit of work that
holds them): the connection, the dialect, the seat-pool row once locked, and the seat writes
deferred to the end of a block."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import Connection, Integer, bindparam, func, update
from sqlalchemy.exc import DBAPIError

from agent.storage.records import PoolRow
from agent.storage.tables import seat_pool
from agent.storage.write_behind import DriverStatement, WriteBehind, send_queued, write_behind

# The seat-pool row's change of one transaction, queued (Transaction.change_pool): counts
# given are set, the others kept; the user total moves by ``n``.
_POOL_CHANGE = DriverStatement(
    update(seat_pool)
    .where(seat_pool.c.id == 1)
    .values(
        seats=func.coalesce(bindparam("p_seats", type_=Integer()), seat_pool.c.seats),
        consumed=func.coalesce(bindparam("p_consumed", type_=Integer()), seat_pool.c.consumed),
        updated=func.coalesce(
            bindparam("p_updated", type_=seat_pool.c.updated.type), seat_pool.c.updated
        ),
        users_total=seat_pool.c.users_total + bindparam("n", type_=Integer()),
    )
)


@dataclass
class DeferredWrites:
    """Pool update, ledger entries and seat-state changes kept for one bulk write
    (``SeatPool.deferred_writes``)."""

    pool: dict[str, Any] | None = None
    ledger: list[dict[str, Any]] = field(default_factory=list)
    seats: list[dict[str, Any]] = field(default_factory=list)


class Transaction:
    """One transaction's connection and shared state."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.is_postgres = conn.dialect.name == "postgresql"
        # The pool row as this transaction last wrote or read it, once it holds the lock:
        # nobody else can change the row until it commits, so it need not be read again.
        self.pool_row: PoolRow | None = None
        self.deferred: DeferredWrites | None = None
        self._pool_change: dict[str, Any] | None = None
        # Reduction ceilings read in this transaction, by workflow states; forgotten when it
        # writes a workflow (agent.storage.reductions).
        self.ceilings: dict[tuple[str, ...], int | None] = {}
        # Whether any user may be queued for a seat: unknown (True) until the seat-pool lock
        # reads it; then true once this transaction queues a user. Nobody else can queue one
        # meanwhile: every write holds the lock.
        self.may_have_queued = True
        # A user's row read in the lock's exchange, for the first Users.get (Users.keep).
        self.kept_user_row: tuple[str, Any] | None = None

    def seat_written(self, license_state: str | None) -> None:
        """A user's seat state is being written with this license state."""
        if license_state == "queued":
            self.may_have_queued = True

    @property
    def writes(self) -> WriteBehind:
        """This transaction's queued writes (agent.storage.write_behind). Asked for by every
        write, so a row read with the lock is not handed out after one."""
        self.kept_user_row = None
        return write_behind(self.conn)

    def change_pool(
        self,
        *,
        seats: int | None = None,
        consumed: int | None = None,
        updated: Any = None,
        users: int = 0,
    ) -> None:
        """Queue a change of the seat-pool row, merged into the one still queued: a create's
        seat grant and its user count are one UPDATE. (Merging is safe: any statement that
        could read the row first sends the queue, and the next change queues a new one.)"""
        writes = self.writes
        change = self._pool_change
        if change is None or not writes.holds(change):
            change = {"p_seats": None, "p_consumed": None, "p_updated": None, "n": 0}
            writes.add(_POOL_CHANGE, change)
            self._pool_change = change
        if seats is not None:
            change["p_seats"] = seats
        if consumed is not None:
            change["p_consumed"] = consumed
        if updated is not None:
            change["p_updated"] = updated
        change["n"] += users


def per_key(conn: Connection, sql: str, params: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """PostgreSQL: ``sql`` (psycopg placeholders) once per parameter tuple, in one
    pipelined batch (psycopg's executemany), in this transaction; the rows of all of
    them, in order. Each statement looks up one key of an index, which has the same plan
    however stale the table's statistics are; a statement over a whole list does not
    (autovacuum may be off, or not yet caught up with a group filled in minutes)."""
    if not params:
        return []
    send_queued(conn)  # what the transaction wrote before, in order
    driver = conn.connection.driver_connection
    cursor = driver.cursor()  # type: ignore[union-attr]
    try:
        cursor.executemany(sql, params, returning=True)
        rows: list[tuple[Any, ...]] = []
        while True:
            rows.extend(cursor.fetchall())
            if not cursor.nextset():
                return rows
    except psycopg.Error as err:
        # As SQLAlchemy raises it for its own statements (a lost server is an
        # OperationalError, a retryable 503 on /scim), the dead connection invalidated.
        gone = conn.dialect.is_disconnect(err, driver, cursor)  # type: ignore[arg-type]
        if gone:
            conn.invalidate(err)
        raise DBAPIError.instance(
            sql, params, err, psycopg.Error, connection_invalidated=gone
        ) from err
    finally:
        cursor.close()
