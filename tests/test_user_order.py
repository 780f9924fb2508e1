"""Counted buckets of the user order (agent.storage.user_order) on SQLite and PostgreSQL: the
counts stay exactly COUNT(*) per bucket through inserts, deletes, failed inserts and rollbacks,
concurrent writers included; every page is the slice of the seq order; migration 0005 fills the
buckets of an existing database; the deep-page statement walks an index range, not the table."""

from __future__ import annotations

import itertools
import json
import threading
from datetime import UTC, datetime

import pytest
from conftest import bounded_examples
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import insert, select, text

from agent.storage import migrate, user_order
from agent.storage.errors import Conflict
from agent.storage.records import SeatState
from agent.storage.rows import user_columns
from agent.storage.store import Store
from agent.storage.tables import users

NOW = datetime(2026, 11, 2, tzinfo=UTC)
BOUNDED = bounded_examples(25, shared_store=True)
_ids = itertools.count()


def _user(name: str) -> dict:
    return {"userName": name, "active": True}


def _order(tx) -> list[str]:
    return list(tx.conn.execute(select(users.c.id).order_by(users.c.seq)).scalars())


@pytest.fixture
def small_buckets(monkeypatch):
    """Buckets of 4 seq values, so a few dozen users span many buckets."""
    monkeypatch.setattr(user_order, "BUCKET_SIZE", 4)


@pytest.fixture
def store(db_url, small_buckets):
    store = Store.from_url(db_url)
    store.upgrade(10_000, NOW)
    yield store
    store.dispose()


# An operation: insert n users, delete the users at some positions, insert a taken userName
# (refused, Conflict), or any of them in a transaction that then rolls back.
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), st.integers(1, 9)),
        st.tuples(st.just("delete"), st.lists(st.integers(0, 200), max_size=6)),
        st.tuples(st.just("taken"), st.just(0)),
    ),
    min_size=1,
    max_size=6,
)


@BOUNDED
@given(ops=_ops, rolled_back=st.booleans(), count=st.integers(1, 9))
def test_bucket_counts_are_count_per_bucket_after_any_inserts_and_deletes(
    store, ops, rolled_back, count
):
    with store.read() as tx:
        before = user_order.counted(tx.conn)
    try:
        with store.write() as tx:
            for op, arg in ops:
                if op == "insert":
                    for _ in range(arg):
                        uid = f"u{next(_ids)}"
                        tx.users.insert(uid, _user(uid), SeatState(), NOW)
                elif op == "delete":
                    present = _order(tx)
                    for i in arg:
                        if present:
                            tx.users.delete(present[i % len(present)])
                elif present := _order(tx):
                    # Refused by the unique index when the insert is sent (by the next
                    # statement, here the order read): the transaction is then over (on
                    # PostgreSQL it is aborted) and rolls back, as a refused SCIM create does.
                    tx.users.insert("dup", _user(_name(tx, present[0])), SeatState(), NOW)
                    _order(tx)
                    raise AssertionError("a taken userName was stored")
            if rolled_back:
                raise _RolledBack
    except (_RolledBack, Conflict) as ended:
        rolled_back = True
        assert isinstance(ended, _RolledBack) or any(op == "taken" for op, _ in ops)
    with store.read() as tx:
        assert user_order.counted(tx.conn) == user_order.actual(tx.conn)
        if rolled_back:
            assert user_order.counted(tx.conn) == before
        order = _order(tx)
        total = len(order)
        for start in {*range(1, total + 2, max(1, total // 12)), max(total, 1), total + 1}:
            page = tx.user_pages.page(None, [], start, count)
            assert [r.id for r in page.items] == order[start - 1 : start - 1 + count], start
            assert page.total == total


class _RolledBack(Exception):
    pass


def _name(tx, user_id: str) -> str:
    row = tx.conn.execute(select(users.c.user_name).where(users.c.id == user_id)).scalar_one()
    return str(row).upper()  # the same userName in another case: still taken


def test_buckets_stay_exact_with_concurrent_writers(db_url, small_buckets):
    """Writers insert and delete in their own transactions while a reader checks, each time in
    one snapshot, that the buckets are COUNT(*) per bucket and that a deep page is the slice of
    the seq order: the buckets change in the same transaction as the users."""
    store = Store.from_url(db_url)
    try:
        store.upgrade(10_000, NOW)
        with store.write() as tx:
            for i in range(40):
                tx.users.insert(f"seed{i}", _user(f"seed{i}"), SeatState(), NOW)
        stop = threading.Event()
        errors: list[BaseException] = []

        def writer(k: int) -> None:
            try:
                for i in range(30):
                    with store.write() as tx:
                        tx.users.insert(f"w{k}-{i}", _user(f"w{k}-{i}"), SeatState(), NOW)
                        if i % 3 == 0:
                            tx.users.delete(f"seed{k * 10 + i // 3}")
                    if stop.is_set():
                        return
            except BaseException as err:  # surfaced by the main thread
                errors.append(err)

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        checks = 0
        try:
            while any(t.is_alive() for t in threads) or checks < 5:
                with _snapshot(store) as conn:
                    assert user_order.counted(conn) == user_order.actual(conn)
                    order = list(conn.execute(select(users.c.seq).order_by(users.c.seq)).scalars())
                    deep = list(conn.execute(user_order.page_keys(9, 7)).scalars())
                    assert deep == order[9:16]
                checks += 1
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not errors, errors
        with store.read() as tx:
            assert user_order.counted(tx.conn) == user_order.actual(tx.conn)
            assert tx.users.count() == 40 + 90 - 30
    finally:
        store.dispose()


class _snapshot:
    """One snapshot for several statements: SQLite's read transaction; on PostgreSQL a
    REPEATABLE READ transaction (a store read has none: each statement is its own snapshot)."""

    def __init__(self, store: Store):
        self.store = store

    def __enter__(self):
        self.conn = self.store.engine.connect()
        if self.conn.dialect.name == "postgresql":
            self.conn = self.conn.execution_options(isolation_level="REPEATABLE READ")
        self.tx = self.conn.begin()
        return self.conn

    def __exit__(self, *exc):
        self.tx.rollback()
        self.conn.close()


def _raw_user(seq: int) -> dict:
    resource = _user(f"raw{seq}@x")
    return {
        "seq": seq,
        "id": f"raw{seq}",
        **user_columns(resource),
        "created": NOW,
        "last_modified": NOW,
        "version": 1,
        "resource": json.dumps(resource),
        "app_status": "Active",
        "license_state": "free",
        "holds_seat": False,
        "on_fallback": False,
    }


def test_migration_0005_fills_the_buckets_of_an_existing_database(db_url):
    """Users stored before 0005 (seqs spread over several buckets of 8,192, with gaps) are
    counted by the migration, and pages at any depth are then the slices of the seq order."""
    store = Store.from_url(db_url)
    try:
        store.upgrade(10_000, NOW)
        migrate.downgrade(store.engine, "0004")
        seqs = [1, 2, 3, 8191, 8192, 8193, 16383, 40000, 40001, 81919, 700_000]
        with store.engine.begin() as conn:  # as a store before 0005 left them
            conn.execute(insert(users), [_raw_user(s) for s in seqs])
            conn.execute(text(f"UPDATE seat_pool SET users_total = {len(seqs)}"))
        store.upgrade(10_000, NOW)
        with store.read() as tx:
            assert user_order.counted(tx.conn) == {0: 4, 1: 3, 4: 2, 9: 1, 85: 1}
            assert user_order.counted(tx.conn) == user_order.actual(tx.conn)
        if store.engine.dialect.name == "postgresql":  # explicit seqs: move the sequence on
            with store.engine.begin() as conn:
                conn.execute(text("SELECT setval('users_seq_seq', 700000)"))
        with store.write() as tx:  # kept from now on by the store
            tx.users.insert("new", _user("new"), SeatState(), NOW)
            tx.users.delete("raw8192")
        with store.read() as tx:
            assert user_order.counted(tx.conn) == user_order.actual(tx.conn)
            expected = [f"raw{s}" for s in seqs if s != 8192] + ["new"]
            for start in range(1, len(expected) + 1):
                page = tx.user_pages.page(None, [], start, 3)
                assert [r.id for r in page.items] == expected[start - 1 : start + 2], start
    finally:
        store.dispose()


def test_reconcile_recount_repairs_buckets_a_bulk_write_left_wrong(db_url, small_buckets):
    store = Store.from_url(db_url)
    try:
        store.upgrade(10_000, NOW)
        with store.write() as tx:
            tx.conn.execute(insert(users), [_raw_user(s) for s in (3, 9, 10, 11, 40)])
            tx.conn.execute(text("UPDATE seat_pool SET users_total = 5"))
        with store.read() as tx:
            assert user_order.counted(tx.conn) != user_order.actual(tx.conn)
        with store.write() as tx:
            tx.users.recount()
        with store.read() as tx:
            assert user_order.counted(tx.conn) == {0: 1, 2: 3, 10: 1}
            assert [r.id for r in tx.user_pages.page(None, [], 5, 2).items] == ["raw40"]
    finally:
        store.dispose()


def test_a_deep_page_on_sqlite_searches_a_range_of_the_seq_index(tmp_path):
    """SQLite's plan for a deep page: the users are an index range from the bucket's first seq
    (SEARCH ... (seq>?)), never a scan of the table or of the whole index."""
    store = Store.from_url(f"sqlite:///{tmp_path}/plan.db")
    try:
        store.upgrade(5, NOW)
        statement = user_order.page_keys(900_000, 100)
        with store.engine.connect() as conn:
            sql = str(statement.compile(conn, compile_kwargs={"literal_binds": True}))
            plan = [row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql)]
        assert "SEARCH users USING COVERING INDEX ix_users_seq (seq>?)" in plan, plan
        assert not [p for p in plan if p.startswith("SCAN users")], plan
    finally:
        store.dispose()
