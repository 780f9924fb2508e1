"""Writes whose results nobody reads, sent together: before the transaction's next statement,
or before its COMMIT.

A SCIM create is a seat-pool update, a ledger entry, the user row and its multi-valued rows;
a DELETE a pool update, a ledger entry and the delete. None of them returns anything the
request needs. Sent one by one, each is a round trip to PostgreSQL (a context switch to its
backend and back, 0.2 ms and more on a busy two-core machine) and a pass through SQLAlchemy's
execution machinery (about 0.1 ms of Python), all while the seat-pool lock is held, so every
other writer waits for them too. Here they are queued and sent at once: on PostgreSQL in one
pipeline (psycopg's pipeline mode: one network exchange for all of them), on SQLite straight
through the driver's cursor.

Order is kept: every statement the transaction runs through SQLAlchemy first sends what is
queued (``before_cursor_execute``), and so does COMMIT; a rollback drops the queue, which
the database never saw. A queued write that fails (a constraint) raises from the statement or
COMMIT that sent it, as a ``sqlalchemy.exc.DBAPIError`` like any other, and the transaction
rolls back. Callers that must answer for a failure themselves (a userName in use is a 409)
call ``WriteBehind.send`` where they can.

Statements are compiled once per dialect (``DriverStatement``) with SQLAlchemy's own
compiler and type processors, so the SQL and the values are exactly what ``conn.execute``
would have sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from agent.storage.access import READ, WriteInRead

_KEY = "seat_write_behind"


@dataclass(frozen=True)
class _Compiled:
    sql: str
    positional: tuple[str, ...] | None  # parameter order (SQLite's ?), None for named
    processors: dict[str, Any]
    compiled: Any


class DriverStatement:
    """A Core statement compiled once per dialect, run on the DBAPI cursor: an INSERT,
    UPDATE or DELETE queued, or a SELECT that goes with the seat-pool lock.

    ``column_keys``: for an INSERT without ``.values()``, the columns it sets (as
    ``conn.execute(insert(t), {...})`` would take them from the first parameter set).

    ``unique``: (a unique index's name, what to raise when it refuses the statement, made from
    the statement's values): a queued statement that breaks that index raises this instead of
    the driver's IntegrityError, from whichever statement or COMMIT sends it.
    """

    def __init__(
        self,
        statement: ClauseElement,
        column_keys: tuple[str, ...] | None = None,
        unique: tuple[str, Callable[[Mapping[str, Any]], Exception]] | None = None,
    ):
        self.statement = statement
        self.column_keys = column_keys
        self.unique = unique
        self._by_dialect: dict[str, _Compiled] = {}

    def _compiled(self, dialect: Dialect) -> _Compiled:
        found = self._by_dialect.get(dialect.name)
        if found is not None:
            return found
        kw: dict[str, Any] = {}
        if self.column_keys is not None:
            kw["column_keys"] = list(self.column_keys)
        compiled = self.statement.compile(dialect=dialect, **kw)
        assert isinstance(compiled, SQLCompiler)
        processors = {}
        for bind, name in compiled.bind_names.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                processors[name] = process
        positional = tuple(compiled.positiontup) if compiled.positiontup is not None else None
        made = _Compiled(compiled.string, positional, processors, compiled)
        return self._by_dialect.setdefault(dialect.name, made)

    def parameters(self, dialect: Dialect, values: Mapping[str, Any]) -> Any:
        """The DBAPI parameters for ``values`` (bind name -> value)."""
        c = self._compiled(dialect)
        params = c.compiled.construct_params(values)
        for name, process in c.processors.items():
            if name in params:
                params[name] = process(params[name])
        if c.positional is not None:
            return tuple(params[name] for name in c.positional)
        return params

    def sql(self, dialect: Dialect) -> str:
        return self._compiled(dialect).sql


class WriteBehind:
    """The queued writes of one transaction's connection (see the module docstring)."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.dialect = conn.dialect
        self.queue: list[tuple[DriverStatement, Mapping[str, Any]]] = []
        conn.info[_KEY] = self

    def add(self, statement: DriverStatement, values: Mapping[str, Any]) -> None:
        if self.conn.get_execution_options().get(READ):
            raise WriteInRead(f"not a read: {statement.sql(self.dialect)[:80]!r}")
        self.queue.append((statement, values))

    def holds(self, values: Mapping[str, Any]) -> bool:
        """Whether these very values are still queued (not sent yet)."""
        return any(queued is values for _, queued in self.queue)

    def send(self, commit: bool = False) -> None:
        """Send the queue now (in order); a failure raises here as a DBAPIError. ``commit``:
        end the transaction with them (PostgreSQL: COMMIT in the same pipeline, one exchange
        instead of two; the driver's own commit then finds nothing to do)."""
        self.fetch([], commit=commit)

    def fetch(
        self, queries: list[tuple[str, Any]], commit: bool = False, begin: bool = False
    ) -> list[tuple[Any, ...] | None]:
        """Send the queue, then run ``queries`` (driver SQL and parameters), all in one
        exchange on PostgreSQL; the first row of each query. For the seat-pool lock and the
        reads that go with it (SeatPool.lock). ``begin``: start the transaction in the same
        exchange (PostgreSQL, a connection in autocommit mode: Store.write)."""
        if not self.queue and not queries and not commit:
            return []
        postgres = self.dialect.name == "postgresql"
        batch, self.queue = self.queue, []
        work = [(s.sql(self.dialect), s.parameters(self.dialect, v)) for s, v in batch]
        if begin and postgres:
            work.insert(0, ("BEGIN", None))
        if commit and postgres:
            work.append(("COMMIT", None))
        driver = self.conn.connection.driver_connection
        cursor = driver.cursor()  # type: ignore[union-attr]
        # Named rows (PostgreSQL): agent.storage.rows reads a record's columns by name.
        factory = {"row_factory": namedtuple_row} if postgres else {}
        readers = [driver.cursor(**factory) for _ in queries]  # type: ignore[union-attr]
        try:
            if postgres:
                with driver.pipeline():  # type: ignore[union-attr]
                    for sql, params in work:
                        cursor.execute(sql, params)
                    for reader, (sql, params) in zip(readers, queries, strict=True):
                        reader.execute(sql, params)
            else:
                for sql, params in work:
                    cursor.execute(sql, params)
                for reader, (sql, params) in zip(readers, queries, strict=True):
                    reader.execute(sql, params)
            return [reader.fetchone() for reader in readers]
        except (psycopg.Error, self.dialect.loaded_dbapi.Error) as err:
            gone = self.dialect.is_disconnect(err, driver, cursor)  # type: ignore[arg-type]
            if gone:
                self.conn.invalidate(err)
            refused = _refusal(batch, err, self.dialect.loaded_dbapi.IntegrityError)
            if refused is not None:
                raise refused from err
            everything = work + queries
            sql, params = everything[0] if len(everything) == 1 else ("(queued writes)", None)
            raise DBAPIError.instance(
                sql, params, err, self.dialect.loaded_dbapi.Error, connection_invalidated=gone
            ) from err
        finally:
            cursor.close()
            for reader in readers:
                reader.close()

    def drop(self) -> None:
        self.queue = []


def _refusal(
    batch: list[tuple[DriverStatement, Mapping[str, Any]]], err: Exception, integrity: type
) -> Exception | None:
    """What a queued statement of ``batch`` with ``unique`` raises for ``err``, if ``err`` is
    that index refusing it: named by psycopg's diagnostics (not its message, whose detail
    quotes the value), or in SQLite's message ("UNIQUE constraint failed: users.user_name_ci",
    no value)."""
    if not isinstance(err, integrity):
        return None
    named = (err.diag.constraint_name or "") if isinstance(err, psycopg.Error) else str(err)
    for statement, values in batch:
        if statement.unique is not None and statement.unique[0] in named:
            return statement.unique[1](values)
    return None


def write_behind(conn: Connection) -> WriteBehind:
    """The connection's queue, made on first use."""
    found = conn.info.get(_KEY)
    return found if isinstance(found, WriteBehind) else WriteBehind(conn)


def send_queued(conn: Connection) -> None:
    """Send the connection's queue, if it has one (before a statement run past SQLAlchemy)."""
    found = _queue_of(conn)
    if found is not None:
        found.send()


def _queue_of(conn: Connection, take: bool = False) -> WriteBehind | None:
    """The connection's queue, if any (``take``: and forget it). An invalidated connection
    (the server went away) has none: its transaction is lost with everything queued."""
    if conn.invalidated:
        return None
    found = conn.info.pop(_KEY, None) if take else conn.info.get(_KEY)
    return found if isinstance(found, WriteBehind) else None


def install(engine: Engine) -> None:
    """Send the queue before every statement and before COMMIT; drop it on ROLLBACK (and
    at BEGIN, in case a transaction ended without either, an invalidated connection)."""

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        _queue_of(conn, take=True)

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Connection, *_args: Any) -> None:
        found = _queue_of(conn)
        if found is not None and found.queue:
            found.send()

    @event.listens_for(engine, "commit")
    def _commit(conn: Connection) -> None:
        found = _queue_of(conn, take=True)
        if found is not None and found.queue:
            found.send(commit=True)

    @event.listens_for(engine, "rollback")
    def _rollback(conn: Connection) -> None:
        found = _queue_of(conn, take=True)
        if found is not None:
            found.drop()
