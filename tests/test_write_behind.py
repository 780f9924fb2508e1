"""Queued writes (agent.storage.write_behind) land in order, before the statement that follows
them and before COMMIT, vanish on ROLLBACK, and fail like any other statement."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from agent.storage.store import Store
from agent.storage.tables import agent_state, seat_ledger, seat_pool
from agent.storage.write_behind import DriverStatement, write_behind

NOW = datetime(2026, 12, 3, 9, 0, 0, 123456, tzinfo=UTC)
SET_SEATS = DriverStatement(
    update(seat_pool).where(seat_pool.c.id == 1).values(seats=bindparam("seats"))
)
LEDGER = DriverStatement(
    insert(seat_ledger).inline(),
    ("at", "kind", "cause", "seats_after", "consumed_after", "detail"),
)
STATE = DriverStatement(insert(agent_state).inline(), ("key", "value"))


def _entry(detail: str) -> dict:
    return {
        "at": NOW,
        "kind": "licenses",
        "cause": "test",
        "seats_after": 5,
        "consumed_after": 0,
        "detail": detail,
    }


@pytest.fixture
def store(db_url):
    s = Store.from_url(db_url)
    s.upgrade(10, NOW)
    yield s
    s.dispose()


def test_queued_writes_are_sent_before_the_next_statement_in_order(store):
    with store.write() as tx:
        queue = write_behind(tx.conn)
        queue.add(SET_SEATS, {"seats": 11})
        queue.add(SET_SEATS, {"seats": 12})
        queue.add(LEDGER, _entry("queued"))
        assert queue.queue
        seats = tx.conn.execute(select(seat_pool.c.seats)).scalar()
        assert seats == 12  # both updates, in order, before this SELECT
        assert not queue.queue
    with store.read() as tx:
        entries = tx.ledger.entries(kinds=["licenses"])
    assert entries[-1].detail == "queued"
    assert entries[-1].at == NOW  # the dialect's own datetime handling


def test_queued_writes_are_sent_at_commit_and_dropped_on_rollback(store):
    with store.write() as tx:
        write_behind(tx.conn).add(LEDGER, _entry("committed"))
    with pytest.raises(RuntimeError), store.write() as tx:
        write_behind(tx.conn).add(LEDGER, _entry("rolled back"))
        raise RuntimeError("changed my mind")
    with store.write() as tx:  # a new transaction does not inherit a dropped queue
        tx.conn.execute(select(func.count()).select_from(seat_ledger))
    with store.read() as tx:
        details = [e.detail for e in tx.ledger.entries(kinds=["licenses"])]
    assert "committed" in details
    assert "rolled back" not in details


def test_a_failing_queued_write_fails_the_transaction(store):
    with store.write() as tx:
        tx.state.put("k", "v")
    with pytest.raises(IntegrityError), store.write() as tx:
        queue = write_behind(tx.conn)
        queue.add(LEDGER, _entry("lost with the rest"))
        queue.add(STATE, {"key": "k", "value": "again"})  # primary key taken
    with store.read() as tx:
        details = [e.detail for e in tx.ledger.entries(kinds=["licenses"])]
        assert tx.state.get("k") == "v"
    assert "lost with the rest" not in details


def test_send_raises_where_the_caller_can_answer_for_it(store):
    with store.write() as tx:
        tx.state.put("k", "v")
    with store.write() as tx:
        queue = write_behind(tx.conn)
        queue.add(STATE, {"key": "k", "value": "again"})
        with pytest.raises(IntegrityError):
            queue.send()
        tx.conn.rollback()


def test_a_postgresql_write_holds_the_pool_lock_in_one_transaction_to_its_end(pg_url):
    """Store.write begins the transaction in the lock's own exchange (the driver is in
    autocommit mode): the lock must still be held, and the writes atomic, until COMMIT."""
    import psycopg
    from sqlalchemy.engine import make_url

    store = Store.from_url(pg_url)
    store.upgrade(10, NOW)
    url = make_url(pg_url).set(drivername="postgresql")
    other = psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)
    try:
        with pytest.raises(RuntimeError), store.write() as tx:
            tx.pool.update(99, 0, NOW)
            tx.state.put("k", "v")
            tx.conn.execute(select(seat_pool.c.seats))  # the queue is sent: written, uncommitted
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute("SELECT 1 FROM seat_pool WHERE id = 1 FOR UPDATE NOWAIT")
            assert other.execute("SELECT seats FROM seat_pool").fetchone() == (10,)
            raise RuntimeError("rolled back")
        assert other.execute("SELECT seats FROM seat_pool").fetchone() == (10,)
        assert other.execute("SELECT count(*) FROM agent_state WHERE key = 'k'").fetchone() == (0,)
        with store.write() as tx:
            tx.pool.update(12, 0, NOW)
        assert other.execute("SELECT seats FROM seat_pool").fetchone() == (12,)
        # The connection went back to the pool out of autocommit mode.
        with store.engine.connect() as conn:
            assert conn.connection.driver_connection.autocommit is False
    finally:
        other.close()
        store.dispose()


def test_the_user_read_with_the_lock_is_not_handed_out_after_a_write(db_url):
    """Store.write(user_id) reads the user in the lock's exchange (PostgreSQL); the first
    tx.users.get gets that row, unless the transaction wrote something since."""
    from agent.storage.records import SeatState

    store = Store.from_url(db_url)
    store.upgrade(10, NOW)
    try:
        with store.write() as tx:
            tx.users.insert("u1", {"userName": "one@example.com", "active": True}, SeatState(), NOW)
        with store.write("u1") as tx:
            assert tx.users.get("u1").user_name == "one@example.com"
        with store.write("nobody") as tx:
            assert tx.users.get("nobody") is None
        with store.write("u1") as tx:
            tx.users.delete("u1")
            assert tx.users.get("u1") is None  # not the row read before the delete
    finally:
        store.dispose()
