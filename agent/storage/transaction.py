"""What the repositories of one transaction share (``StoreTx`` is the unit of work that
holds them): the connection, the dialect, the seat-pool row once locked, and the seat writes
deferred to the end of a block."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from agent.storage.records import PoolRow


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


def per_key(conn: Connection, sql: str, params: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """PostgreSQL: ``sql`` (psycopg placeholders) once per parameter tuple, in one
    pipelined batch (psycopg's executemany), in this transaction; the rows of all of
    them, in order. Each statement looks up one key of an index, which has the same plan
    however stale the table's statistics are; a statement over a whole list does not
    (autovacuum may be off, or not yet caught up with a group filled in minutes)."""
    if not params:
        return []
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
