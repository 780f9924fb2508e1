"""SQLite writers take turns on a lock file beside the database (agent.storage.engine.WriterQueue)
before BEGIN IMMEDIATE, across threads and processes, and lose no update doing so."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select, text

from agent.storage.engine import make_engine, writer_queue
from agent.storage.store import Store
from agent.storage.tables import seat_ledger, seat_pool, users

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def _store(path: Path) -> Store:
    store = Store.from_url(f"sqlite:///{path}")
    store.upgrade(1000, NOW)
    return store


def _sqlite_lock_free(path: Path) -> bool:
    """Whether SQLite's write lock can be taken now (BEGIN IMMEDIATE without waiting)."""
    import sqlite3

    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


def test_a_writer_waits_for_the_lock_file_before_it_takes_sqlites_lock(tmp_path):
    db = tmp_path / "agent.db"
    store = _store(db)
    lock_file = writer_queue(str(db)).lock_path
    assert lock_file == f"{os.path.realpath(db)}.writers"
    entered = threading.Event()
    done = threading.Event()

    def write() -> None:
        with store.write() as tx:
            entered.set()
            tx.pool.update(7, 0, NOW)
        done.set()

    # Another process's writer holds the queue: this one waits in the kernel, before BEGIN.
    fd = os.open(lock_file, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert not entered.wait(0.3)
        assert _sqlite_lock_free(db)  # it holds no SQLite lock while it waits
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    writer.join(10)
    assert done.is_set()
    with store.read() as tx:
        assert tx.pool.current().seats == 7
    # Its turn ended with the transaction: the queue is free again.
    fd = os.open(lock_file, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
    store.dispose()


def test_a_failed_write_gives_up_its_turn(tmp_path):
    db = tmp_path / "agent.db"
    store = _store(db)
    try:
        with store.write() as tx:
            tx.conn.execute(text("SELECT no_such_column FROM seat_pool"))
    except Exception:
        pass
    with store.write() as tx:  # would wait forever if the turn were still held
        tx.pool.update(9, 0, NOW)
    with store.read() as tx:
        assert tx.pool.current().seats == 9
    store.dispose()


def test_writers_in_two_processes_and_threads_lose_no_update(tmp_path):
    """Two processes, four threads each, every write a read-modify-write of the pool row (the
    seat decision's pattern) plus a user insert: all of them land."""
    db = tmp_path / "agent.db"
    _store(db).dispose()
    script = textwrap.dedent(
        f"""
        import sys, threading, uuid
        from datetime import UTC, datetime
        from agent.scim.resources import normalize_user
        from agent.storage.records import SeatState
        from agent.storage.store import Store

        store = Store.from_url("sqlite:///{db}")
        now = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)

        def work(tag):
            for i in range(25):
                with store.write() as tx:
                    pool = tx.pool.current()
                    tx.pool.update(pool.seats, pool.consumed + 1, now)
                    name = f"{{sys.argv[1]}}-{{tag}}-{{i}}@example.com"
                    tx.users.insert(
                        str(uuid.uuid4()), normalize_user({{"userName": name}}),
                        SeatState(holds_seat=True), now,
                    )
                    tx.ledger.append(at=now, kind="grant", cause="test", seats_after=pool.seats,
                                     consumed_after=pool.consumed + 1)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, name], stderr=subprocess.PIPE)
        for name in ("a", "b")
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    engine = make_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        consumed, total = conn.execute(select(seat_pool.c.consumed, seat_pool.c.users_total)).one()
        assert (consumed, total) == (200, 200)
        assert conn.execute(select(func.count()).select_from(users)).scalar() == 200
        grants = select(func.count()).where(seat_ledger.c.kind == "grant")
        assert conn.execute(grants).scalar() == 200
    engine.dispose()
