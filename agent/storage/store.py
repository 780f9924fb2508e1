"""The store: the database's entry point and the unit of work over SQLAlchemy Core for SQLite
and PostgreSQL.

``Store.write()`` opens a write transaction that first takes the seat-pool lock
(BEGIN IMMEDIATE on SQLite, ``SELECT ... FOR UPDATE`` on PostgreSQL), so every seat decision
and the write it guards are one atomic step across workers and hosts. ``StoreTx`` is one
transaction: its repositories (``tx.users``, ``tx.user_pages``, ``tx.groups``, ``tx.pool``,
``tx.ledger``, ``tx.state``) share its connection and state and return plain dataclasses
(agent.storage.records). The writes of a SCIM change whose results nobody reads (the pool
row, the ledger entry, the user row) are queued and sent together, before the next statement
or with the COMMIT (agent.storage.write_behind): one exchange with PostgreSQL instead of one
each, all of them before the transaction commits and the request is answered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Engine, insert, select, text

from agent.storage import migrate
from agent.storage.engine import READ, WRITE, make_engine
from agent.storage.groups import Groups
from agent.storage.ledger import SeatLedger
from agent.storage.seat_pool import SeatPool
from agent.storage.state import AgentState
from agent.storage.tables import seat_pool
from agent.storage.transaction import Transaction
from agent.storage.user_pages import UserPages
from agent.storage.users import Users


class AtCommit(Protocol):
    """Work gathered during a write transaction and written at its end (``StoreTx.at_commit``)."""

    def flush(self, tx: StoreTx) -> None: ...


_AtCommit = TypeVar("_AtCommit", bound=AtCommit)


class StoreTx(Transaction):
    """One transaction, the unit of work: its repositories share its connection, the seat-pool
    row once locked, the deferred seat writes and the work to do at commit."""

    def __init__(self, conn: Connection):
        super().__init__(conn)
        self._at_commit: dict[str, AtCommit] = {}
        self.users = Users(self)
        self.user_pages = UserPages(self, self.users)
        self.groups = Groups(self)
        self.pool = SeatPool(self)
        self.ledger = SeatLedger(self)
        self.state = AgentState(self)

    def at_commit(self, name: str, factory: Callable[[], _AtCommit]) -> _AtCommit:
        """The ``name`` object of this write transaction (made by ``factory`` on first use),
        whose ``flush(tx)`` runs once when the transaction's work is done, just before it
        commits, after any deferred seat writes: it sees the transaction's final state. (The
        webhook events describe what a transaction changed, not its intermediate steps.)"""
        existing = self._at_commit.get(name)
        if existing is None:
            existing = self._at_commit[name] = factory()
        return existing  # type: ignore[return-value]

    def flush_at_commit(self) -> None:
        """Run the ``at_commit`` work (Store.write calls it as the transaction ends)."""
        while self._at_commit:
            name = next(iter(self._at_commit))
            self._at_commit.pop(name).flush(self)


class Store:
    """Entry point to the database: migrations, transactions."""

    def __init__(self, engine: Engine):
        self.engine = engine

    @classmethod
    def from_url(cls, url: str) -> Store:
        return cls(make_engine(url))

    def upgrade(self, initial_seats: int, now: datetime) -> None:
        """Apply migrations and make sure the seat pool row exists."""
        migrate.upgrade(self.engine)
        with self.engine.connect().execution_options(**{WRITE: True}) as conn:
            with conn.begin():
                exists = conn.execute(select(seat_pool.c.id).where(seat_pool.c.id == 1)).first()
                if exists is None and conn.dialect.name == "postgresql":
                    # Hosts starting together: the first to lock creates the pool row.
                    conn.execute(text("LOCK TABLE seat_pool IN EXCLUSIVE MODE"))
                    exists = conn.execute(select(seat_pool.c.id).where(seat_pool.c.id == 1)).first()
                if exists is None:
                    conn.execute(
                        insert(seat_pool).values(id=1, seats=initial_seats, consumed=0, updated=now)
                    )
                    StoreTx(conn).ledger.append(
                        at=now,
                        kind="licenses",
                        cause="config",
                        detail="initial license count from [license] seats",
                        seats_after=initial_seats,
                        consumed_after=0,
                    )

    def is_ready(self) -> bool:
        return migrate.is_current(self.engine)

    @contextmanager
    def write(self, user_id: str | None = None) -> Iterator[StoreTx]:
        """A write transaction holding the seat-pool lock for its whole life.

        On PostgreSQL the driver is put in autocommit mode and the transaction is begun by the
        lock itself, BEGIN and the lock in one exchange (SeatPool.lock). The lock is the first
        statement, so nothing runs outside the transaction; COMMIT and ROLLBACK go through the
        driver as usual (psycopg ends the transaction the server reports, autocommit or not),
        and the connection leaves autocommit mode when it goes back to the pool.

        ``user_id``: the user the transaction reads first (``tx.users.get``), whose row then
        comes in the lock's exchange on PostgreSQL (read after the lock is held, so it is
        what the previous lock holder committed)."""
        options: dict[str, Any] = {WRITE: True}
        if self.engine.dialect.name == "postgresql":
            options["isolation_level"] = "AUTOCOMMIT"
        with self.engine.connect().execution_options(**options) as conn:
            with conn.begin():
                tx = StoreTx(conn)
                also = [tx.users.read_with_lock(user_id)] if user_id and tx.is_postgres else []
                rows = tx.pool.lock(also)
                if user_id and also:
                    tx.users.keep(user_id, rows[0])
                yield tx
                tx.flush_at_commit()

    @contextmanager
    def read(self) -> Iterator[StoreTx]:
        """A read. Only SELECTs may run in it (``engine.READ``). On SQLite one transaction, one
        snapshot. On PostgreSQL no transaction at all: under READ COMMITTED every statement
        takes its own snapshot inside a transaction too, so BEGIN and COMMIT would only add
        two round trips to every SCIM GET; whatever must be one snapshot is one statement."""
        options: dict[str, Any] = {READ: True}
        if self.engine.dialect.name == "postgresql":
            options["isolation_level"] = "AUTOCOMMIT"
        with self.engine.connect().execution_options(**options) as conn:
            with conn.begin():
                yield StoreTx(conn)

    def dispose(self) -> None:
        self.engine.dispose()
