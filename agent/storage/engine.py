"""Engine construction for SQLite (WAL, immediate write transactions) and PostgreSQL."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import make_url

from agent.storage import write_behind
from agent.storage.access import READ, WRITE, WriteInRead

__all__ = ["READ", "WRITE", "WriteInRead", "make_engine"]

log = logging.getLogger("seat_agent.storage")

# A pooled PostgreSQL connection idle longer than this is pinged before it is handed out.
PING_AFTER_SECONDS = 10.0
# How long a SQLite writer waits for its turn (as SQLite's busy_timeout did): then the
# request fails with "database is locked" (a 503 on /scim) instead of hanging.
WRITER_WAIT_SECONDS = 30.0


def normalize_url(url: str) -> str:
    """Use psycopg 3 for ``postgresql://`` URLs (SQLAlchemy's default driver is psycopg2)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def sqlite_file(url: str) -> str | None:
    """The database file of a SQLite URL as written in it; None for other databases and for
    in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        return parsed.database
    return None


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create the engine; on SQLite, writes take the database lock at BEGIN (BEGIN IMMEDIATE).

    Statement parameters are hidden from error messages (``hide_parameters``): they are
    request data.

    SQLite's default deferred transactions upgrade to a write lock only at the first write, so
    two transactions that both read the seat pool and then write could interleave; BEGIN
    IMMEDIATE makes the read-decide-write of a seat decision one atomic step across processes.
    """
    url = normalize_url(url)
    # A failed statement's message would carry its bound values (userNames, filter values,
    # e-mail addresses) into the error log; request bodies and filters are
    # never logged (docs/deployment.md, "Logs").
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            **kwargs,
        )
        _sqlite_events(engine, writer_queue(sqlite_file(url)))
    else:
        ping_after = kwargs.pop("ping_after_seconds", PING_AFTER_SECONDS)
        kwargs.setdefault("pool_size", 5)
        engine = create_engine(url, **kwargs)
        _ping_when_idle(engine, ping_after)
        _custom_plans(engine)
    _read_guard(engine)
    write_behind.install(engine)
    return engine


def _ping_when_idle(engine: Engine, ping_after: float) -> None:
    """Ping a pooled connection before handing it out only if it sat idle ``ping_after``
    seconds or more; a dead one is replaced (DisconnectionError makes the pool retry).

    SQLAlchemy's ``pool_pre_ping`` pings at every checkout: a round trip as long as the query
    itself on every SCIM GET. A connection used a moment ago is alive unless the server went
    away in that moment, and then the disconnect SQLAlchemy sees on its first statement
    invalidates the whole pool: that request is a 503 (retried by the IdP), the next ones get
    new connections. Connections that idled, which a restart, a failover or an idle timeout
    can have killed unseen, are checked first.
    """

    @event.listens_for(engine, "checkin")
    def _used(_dbapi_connection: Any, record: Any) -> None:
        record.info["seat_used_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        used = record.info.get("seat_used_at")
        if used is None or time.monotonic() - used < ping_after:
            return  # new (just connected), or used a moment ago
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            if not dbapi_connection.autocommit:
                dbapi_connection.rollback()
        except Exception as err:
            raise exc.DisconnectionError(f"pooled connection dead after idling: {err}") from err


def _custom_plans(engine: Engine) -> None:
    """Plan every statement for its parameters and the tables as they are now.

    psycopg prepares a statement on the server once a connection has run it five times, and
    PostgreSQL then keeps a generic plan for it when that looks no dearer than the custom ones.
    A plan made while a table was small (a new deployment, a group being filled) is a
    sequential scan, and it stays cached on that connection as the table grows: nothing
    replans it but an ANALYZE of the table, and autovacuum may be off or behind. Removing 100
    members from a 2,700-member group took 14 ms on the connection holding such a plan and
    1.3 ms on the others. ``plan_cache_mode = force_custom_plan`` keeps the prepared statement
    (no new parse) and plans each execution afresh: about 0.1 ms on a lookup, 2 ms on a PATCH
    adding 100 members (docs/performance.md).
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        try:
            dbapi_connection.execute("SET plan_cache_mode = force_custom_plan")
        finally:
            dbapi_connection.autocommit = autocommit


def _read_guard(engine: Engine) -> None:
    """Refuse any statement but SELECT on a read connection (``Store.read``). On PostgreSQL a
    read runs without a transaction, so a write there would commit statement by statement."""

    @event.listens_for(engine, "before_cursor_execute")
    def _only_select(
        conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, _many: bool
    ) -> None:
        if conn.get_execution_options().get(READ) and statement.lstrip()[:6].upper() not in (
            "SELECT",
            "BEGIN",  # SQLite's own BEGIN (deferred) for a read
        ):
            raise WriteInRead(f"not a read: {statement[:80]!r}")


class WriterQueue:
    """SQLite writers of one database file take turns here, before BEGIN IMMEDIATE.

    SQLite has one write lock per database. A writer that finds it taken waits in SQLite's
    busy handler, which sleeps and retries in growing steps (up to 100 ms): it is not woken
    when the lock frees, so at four concurrent writers a write's p99 was 100 to 170 ms of
    sleeping (docs/performance.md, "Writes"). Here a writer waits where it is woken at once:
    on a ``threading.Lock`` against the other threads of its process, then on an exclusive
    ``flock`` of a lock file beside the database against other processes (gunicorn workers,
    the scheduler, the command line); the kernel hands the lock over when its holder lets go.
    ``release`` runs when the connection goes back to the pool, after its COMMIT or ROLLBACK.

    This only orders the writers: BEGIN IMMEDIATE still takes SQLite's own lock, which is
    what keeps a seat decision and its write atomic. A process that does not queue here (an
    older version during an upgrade) still waits in the busy handler, as before. A lock file
    that cannot be opened (a read-only directory) leaves only the thread lock. A process
    killed while holding the lock loses it with its file descriptors.
    """

    def __init__(self, lock_path: str | None):
        self.lock_path = lock_path
        self._threads = threading.Lock()
        self._fd: int | None = None
        self._fd_pid: int | None = None

    def _file(self) -> int | None:
        """The lock file, opened once per process (a forked worker opens its own: flock
        locks belong to an open file, which a fork would share with the parent)."""
        if self.lock_path is None:
            return None
        if self._fd is None or self._fd_pid != os.getpid():
            try:
                self._fd = os.open(self.lock_path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as err:
                log.warning("SQLite writers queue within each process only: %s", err)
                self.lock_path = None
                return None
            self._fd_pid = os.getpid()
        return self._fd

    def acquire(self) -> None:
        if not self._threads.acquire(timeout=WRITER_WAIT_SECONDS):
            raise exc.OperationalError("BEGIN IMMEDIATE", None, TimeoutError("database is locked"))
        try:
            fd = self._file()
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise

    def release(self) -> None:
        try:
            if self._fd is not None and self._fd_pid == os.getpid():
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()


_QUEUES: dict[str | None, WriterQueue] = {}
_QUEUES_LOCK = threading.Lock()


def writer_queue(database: str | None) -> WriterQueue:
    """The queue of a SQLite database file, shared by every engine of this process on it."""
    key = os.path.realpath(database) if database else None
    with _QUEUES_LOCK:
        found = _QUEUES.get(key)
        if found is None:
            found = _QUEUES[key] = WriterQueue(f"{key}.writers" if key else None)
        return found


def _sqlite_events(engine: Engine, writers: WriterQueue) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Straight to the driver: SQLAlchemy's statement machinery for a bare BEGIN cost as
        # much as the indexed probe of a lookup.
        write = conn.get_execution_options().get(WRITE, False)
        if not write:
            conn.connection.driver_connection.execute("BEGIN")
            return
        info = conn.connection.info  # the pool record's: what checkin is given
        if _QUEUED not in info:
            writers.acquire()
            info[_QUEUED] = writers
        conn.connection.driver_connection.execute("BEGIN IMMEDIATE")

    @event.listens_for(engine, "checkin")
    def _done(_dbapi_connection: Any, record: Any) -> None:
        # Back in the pool: its transaction committed or rolled back (the pool's reset).
        queued = record.info.pop(_QUEUED, None) if record is not None else None
        if queued is not None:
            queued.release()


_QUEUED = "seat_writer_queued"


def shown_url(url: str) -> str:
    """The URL as an error message may show it: any password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: nothing in it to hide
        return url
