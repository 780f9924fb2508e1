"""Migrations and the store on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import inspect, update

from agent.storage import migrate
from agent.storage.records import SeatState
from agent.storage.store import Store
from agent.storage.tables import seat_pool

NOW = datetime(2026, 11, 2, tzinfo=UTC)


def test_migrations_upgrade_and_downgrade(db_url):
    store = Store.from_url(db_url)
    try:
        store.upgrade(5, NOW)
        assert migrate.is_current(store.engine)
        tables = set(inspect(store.engine).get_table_names())
        assert {"users", "groups", "group_members", "user_values", "seat_pool"} <= tables
        migrate.downgrade(store.engine, "base")
        assert migrate.current_revision(store.engine) is None
        assert "users" not in set(inspect(store.engine).get_table_names())
        store.upgrade(5, NOW)
        assert store.is_ready()
    finally:
        store.dispose()


def test_upgrade_is_idempotent_and_keeps_the_pool(db_url):
    store = Store.from_url(db_url)
    try:
        store.upgrade(5, NOW)
        with store.write() as tx:
            tx.pool.update(7, 0, NOW)
        store.upgrade(5, NOW)
        with store.read() as tx:
            assert tx.pool.current().seats == 7
            assert [e.kind for e in tx.ledger.entries()] == ["licenses"]
    finally:
        store.dispose()


def test_store_round_trips_plain_records(db_url):
    store = Store.from_url(db_url)
    try:
        store.upgrade(5, NOW)
        resource = {"userName": "Ann", "active": True, "emails": [{"value": "A@x", "type": "work"}]}
        with store.write() as tx:
            tx.users.insert(
                "u1", resource, SeatState(license_state="licensed", holds_seat=True), NOW
            )
        with store.read() as tx:
            record = tx.users.get("u1")
            assert record is not None
            assert record.resource == resource
            assert record.created == NOW
            assert record.seat.holds_seat is True
            assert tx.users.name_taken("ANN") is True
            assert tx.users.get("nope") is None
    finally:
        store.dispose()


def test_a_failed_write_changes_nothing(db_url):
    store = Store.from_url(db_url)
    try:
        store.upgrade(5, NOW)
        try:
            with store.write() as tx:
                tx.users.insert("u1", {"userName": "a", "active": True}, SeatState(), NOW)
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        with store.read() as tx:
            assert tx.users.get("u1") is None
    finally:
        store.dispose()


def test_migrations_match_the_table_definitions(db_url):
    """Alembic's autogenerate finds nothing to do after `upgrade head`: tables.py and the
    migrations describe the same schema."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from agent.storage.tables import metadata

    store = Store.from_url(db_url)
    try:
        store.upgrade(5, NOW)
        with store.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, metadata)
        assert diff == [], diff
    finally:
        store.dispose()


def _user(name: str) -> dict:
    return {"userName": name, "active": True}


def test_the_user_total_follows_inserts_deletes_and_failed_inserts(db_url):
    """An unfiltered page's totalResults comes from seat_pool.users_total, not COUNT(*)."""
    store = Store.from_url(db_url)
    try:
        store.upgrade(5, NOW)
        with store.write() as tx:
            for i in range(5):
                tx.users.insert(f"u{i}", _user(f"user{i}"), SeatState(), NOW)
        with store.write() as tx:
            tx.users.delete("u1")
            tx.users.delete("no-such-user")  # deletes nothing, changes nothing
        try:
            with store.write() as tx:
                tx.users.insert("u9", _user("user9"), SeatState(), NOW)
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass
        with store.read() as tx:
            assert tx.users.recount() == (4, 4)
            # A page that is full (count 2 of 4) must ask for the total: it reads the counter.
            page = tx.user_pages.page(None, [], 1, 2)
            assert page.total == 4 and len(page.items) == 2
    finally:
        store.dispose()


def test_every_unfiltered_page_is_the_forward_walk_including_those_found_by_bucket(
    db_url, monkeypatch
):
    """Pages past the first bucket of the user order start at the bucket holding them
    (agent.storage.user_order; buckets of 8 seq values here, so 47 users span six). Whatever
    the page size, offset and deletions, every page must be exactly the slice a forward walk
    gives, with totalResults the number of users, and the buckets must really be used."""
    from sqlalchemy import event

    from agent.storage import user_order

    monkeypatch.setattr(user_order, "BUCKET_SIZE", 8)
    store = Store.from_url(db_url)
    try:
        store.upgrade(100, NOW)
        with store.write() as tx:
            for i in range(47):
                tx.users.insert(f"u{i:03d}", _user(f"user{i:03d}"), SeatState(), NOW)
            # Holes at the start, middle and end; bucket 2 (seq 16..23) loses every user.
            for i in (0, 5, 30, 46, *range(15, 23)):
                tx.users.delete(f"u{i:03d}")
        gone = {0, 5, 30, 46, *range(15, 23)}
        expected = [f"u{i:03d}" for i in range(47) if i not in gone]
        assert len(expected) == 35
        statements: list[str] = []

        def capture(conn, cursor, statement, parameters, context, executemany):
            statements.append(statement)

        event.listen(store.engine, "before_cursor_execute", capture)
        with store.read() as tx:
            for count in (1, 7, 10, 35, 50):
                for start in range(1, 40):
                    statements.clear()
                    page = tx.user_pages.page(None, [], start, count)
                    got = [r.id for r in page.items]
                    assert got == expected[start - 1 : start - 1 + count], (start, count)
                    assert page.total == 35, (start, count)
                    by_bucket = any("user_order_buckets" in s for s in statements)
                    # Past the last user there is nothing to walk: no page statement at all.
                    assert by_bucket == (8 <= start - 1 < 35), (start, count, statements)
            assert tx.user_pages.page(None, [], 36, 10).items == []
            assert tx.user_pages.page(None, [], 36, 10).total == 35
            assert tx.user_pages.page(None, [], 30, 0).total == 35
    finally:
        store.dispose()


def test_migration_0003_counts_existing_users_and_reconcile_repairs_the_total(db_url):
    store = Store.from_url(db_url)
    try:
        store.upgrade(5, NOW)
        with store.write() as tx:
            for i in range(3):
                tx.users.insert(f"u{i}", _user(f"user{i}"), SeatState(), NOW)
        migrate.downgrade(store.engine, "0002")
        store.upgrade(5, NOW)  # 0003 again, on a database that already holds 3 users
        with store.read() as tx:
            assert tx.user_pages.page(None, [], 1, 1).total == 3
        with store.write() as tx:  # a write that bypassed the store (a bulk import)
            tx.conn.execute(update(seat_pool).values(users_total=0))
        with store.write() as tx:
            assert tx.users.recount() == (0, 3)
        with store.read() as tx:
            assert tx.user_pages.page(None, [], 1, 1).total == 3
    finally:
        store.dispose()


def _plan_loops(node: dict) -> int:
    """The largest 'Actual Loops' of any node of an EXPLAIN (ANALYZE, FORMAT JSON) plan."""
    own = int(node.get("Actual Loops", 1))
    return max([own] + [_plan_loops(child) for child in node.get("Plans", [])])


def tx_seq(tx, user_id: str) -> int:
    from sqlalchemy import select

    from agent.storage.tables import users

    return int(tx.conn.execute(select(users.c.seq).where(users.c.id == user_id)).scalar_one())


def test_a_lookup_without_planner_statistics_never_loops_over_every_user(pg_url, monkeypatch):
    """A new PostgreSQL table has no statistics until its first ANALYZE (autovacuum may be off
    or not yet there). The page query once became a nested loop re-scanning the users for
    each user (3,000 loops, 2 s for one lookup at 3,000 users). Every statement a filtered
    lookup and a deep page run must stay free of such loops even then."""
    from sqlalchemy import event, text

    from agent.scim.filter import parse_filter
    from agent.storage import cursor_pages, filter_sql, user_order

    monkeypatch.setattr(user_order, "BUCKET_SIZE", 256)  # deep pages found by the buckets
    store = Store.from_url(pg_url)
    try:
        store.upgrade(5000, NOW)
        with store.write() as tx:
            for i in range(3000):
                tx.users.insert(f"u{i:05d}", _user(f"user{i:05d}@x"), SeatState(), NOW)
            # Rows carry their groups (a correlated subquery): every user in one big group.
            tx.groups.insert("g1", {"displayName": "everyone"}, NOW)
            tx.groups.add_members("g1", [f"u{i:05d}" for i in range(3000)])
        with store.read() as tx:
            stats = tx.conn.execute(
                text(
                    "SELECT count(*) FROM pg_stats"
                    " WHERE schemaname = current_schema() AND tablename = 'users'"
                )
            ).scalar_one()
        assert stats == 0  # really no statistics
        statements: list[tuple[str, object]] = []

        def capture(conn, cursor, statement, parameters, context, executemany):
            if statement.lstrip().upper().startswith("SELECT"):
                statements.append((statement, parameters))

        event.listen(store.engine, "before_cursor_execute", capture)
        where = filter_sql.user_where(parse_filter('userName eq "user02500@x"', "User"))
        with store.read() as tx:
            page = tx.user_pages.page(where, [], 1, 100)
            assert [r.id for r in page.items] == ["u02500"]
            assert page.items[0].groups == [("g1", "everyone")]
            deep = tx.user_pages.page(None, [], 2901, 100)
            assert [r.id for r in deep.items] == [f"u{i:05d}" for i in range(2900, 3000)]
            middle = tx.user_pages.page(None, [], 1001, 100)  # walked forward, then read by key
            assert [r.id for r in middle.items] == [f"u{i:05d}" for i in range(1000, 1100)]
            broad = filter_sql.user_where(parse_filter('userName sw "user01"', "User"))
            second = tx.user_pages.page(broad, [], 101, 100)  # a filtered page past the first
            assert [r.id for r in second.items] == [f"u{i:05d}" for i in range(1100, 1200)]
            lookup = filter_sql.user_lookup(parse_filter('userName eq "user02500@x"', "User"))
            assert lookup is not None
            assert [r.id for r in tx.user_pages.lookup(lookup, 1, 100).items] == ["u02500"]
            assert tx.user_pages.lookup(lookup, 2, 100).total == 1  # past the first page: counted
            # Cursor pages (RFC 9865): a keyset walk, unfiltered and filtered, both directions.
            after = cursor_pages.user_page(tx, None, after=tx_seq(tx, "u01500"), count=100)
            assert [r.id for r in after.items] == [f"u{i:05d}" for i in range(1501, 1601)]
            before = cursor_pages.user_page(tx, broad, before=tx_seq(tx, "u01150"), count=100)
            assert [r.id for r in before.items] == [f"u{i:05d}" for i in range(1050, 1150)]
        event.remove(store.engine, "before_cursor_execute", capture)
        assert statements
        raw = store.engine.raw_connection()
        try:
            cursor = raw.cursor()
            for statement, parameters in statements:
                cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters)
                plan = cursor.fetchone()[0][0]["Plan"]
                assert _plan_loops(plan) <= 100, (statement, plan)
        finally:
            raw.close()
    finally:
        store.dispose()


def test_a_read_refuses_to_write_and_changes_nothing(db_url):
    """Store.read runs only SELECTs: on PostgreSQL it has no transaction, so a write there
    would commit at once. The engine refuses it before it reaches the database."""
    import pytest
    from sqlalchemy import select

    from agent.storage.engine import WriteInRead

    store = Store.from_url(db_url)
    try:
        store.upgrade(5, NOW)
        with store.write() as tx:
            tx.users.insert("u1", _user("user1"), SeatState(), NOW)
        with pytest.raises(WriteInRead):
            with store.read() as tx:
                tx.users.delete("u1")
        with pytest.raises(WriteInRead):
            with store.read() as tx:
                tx.conn.execute(update(seat_pool).values(seats=99))
        with store.read() as tx:
            assert tx.users.get("u1") is not None
            assert tx.conn.execute(select(seat_pool.c.seats)).scalar_one() == 5
    finally:
        store.dispose()


def test_a_postgresql_read_opens_no_transaction(pg_url):
    """No BEGIN/COMMIT round trips for a read: every statement is its own transaction, as
    READ COMMITTED gives every statement its own snapshot anyway."""
    from sqlalchemy import text

    store = Store.from_url(pg_url)
    try:
        store.upgrade(5, NOW)
        with store.read() as tx:
            tx.conn.execute(text("SELECT pg_sleep(0.01)"))
            # Inside a transaction now() is its start, earlier than this statement's start.
            alone = tx.conn.execute(text("SELECT now() = statement_timestamp()")).scalar_one()
        assert alone is True
        with store.write() as tx:  # a write is one transaction
            tx.conn.execute(text("SELECT pg_sleep(0.01)"))
            alone = tx.conn.execute(text("SELECT now() = statement_timestamp()")).scalar_one()
        assert alone is False
    finally:
        store.dispose()


def _kill_pooled_backends(store: Store, pg_url: str, name: str) -> None:
    """Terminate the server processes behind the store's pooled connections (application_name
    ``name``), as a PostgreSQL restart or an idle timeout would, without the pool noticing."""
    import psycopg
    from sqlalchemy import text

    from agent.storage.engine import normalize_url

    with store.read() as tx:  # at least one connection in the pool
        tx.conn.execute(text("SELECT 1"))
    dsn = normalize_url(pg_url).replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as killer:
        killed = killer.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = %s",
            (name,),
        ).fetchone()[0]
    assert killed >= 1


def _named_store(pg_url: str, ping_after: float) -> tuple[Store, str]:
    import uuid

    from agent.storage.engine import make_engine

    name = f"seat-test-{uuid.uuid4().hex[:8]}"
    engine = make_engine(
        pg_url, ping_after_seconds=ping_after, connect_args={"application_name": name}
    )
    return Store(engine), name


def test_an_idle_pooled_connection_that_died_is_replaced_unseen(pg_url):
    """Idle longer than ping_after_seconds: pinged at checkout, found dead, replaced; the
    read that follows never sees it."""
    from sqlalchemy import text

    store, name = _named_store(pg_url, ping_after=0)
    try:
        store.upgrade(5, NOW)
        _kill_pooled_backends(store, pg_url, name)
        with store.read() as tx:
            assert tx.conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        store.dispose()


def test_a_connection_that_died_a_moment_after_use_fails_once_then_the_pool_recovers(pg_url):
    """Used a moment ago: not pinged (no round trip per request). If the server went away in
    that moment, that one read fails with a disconnect (a retryable 503 on /scim) and the
    pool is invalidated, so the next read gets a new connection."""
    import pytest
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    store, name = _named_store(pg_url, ping_after=3600)
    try:
        store.upgrade(5, NOW)
        _kill_pooled_backends(store, pg_url, name)
        with pytest.raises(OperationalError) as failed:
            with store.read() as tx:
                tx.conn.execute(text("SELECT 1"))
        assert failed.value.connection_invalidated
        for _ in range(3):  # every pooled connection was replaced, not just the one that failed
            with store.read() as tx:
                assert tx.conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        store.dispose()


def _lookup_users_fixture(tx) -> None:
    """Users whose lookups are easy to get wrong: case, LIKE wildcards, non-ASCII, an
    externalId and a title several users share, no title at all, and groups."""
    people = [
        ("u1", {"userName": "Ann@X", "externalId": "e1", "title": "Boss"}),
        ("u2", {"userName": "a%n@x", "externalId": "shared", "title": "boss"}),
        ("u3", {"userName": "a_n@x", "externalId": "shared", "title": "BOSS"}),
        ("u4", {"userName": "ÄNNE@x", "externalId": "shared"}),
        ("u5", {"userName": "anne@x", "externalId": "Shared", "displayName": "Anne"}),
    ]
    for uid, resource in people:
        tx.users.insert(uid, {**resource, "active": True}, SeatState(), NOW)
    for gid, name in [("g1", "beta"), ("g2", "Alpha"), ("g3", "gamma")]:
        tx.groups.insert(gid, {"displayName": name}, NOW)
        tx.groups.add_members(gid, ["u2", "u3"])


LOOKUPS = [
    'userName eq "ann@x"',
    'userName eq "ANN@X"',
    'username eq "a%n@x"',
    'userName eq "a_n@x"',
    'userName eq "änne@X"',
    'userName eq "nobody"',
    'userName eq ""',
    'externalId eq "shared"',
    'externalId eq "SHARED"',
    'id eq "u3"',
    'id eq "U3"',
    'title eq "boss"',
    'displayName eq "ANNE"',
    'name.givenName eq "x"',
]


def test_a_lookup_gives_exactly_the_page_of_its_general_filter(db_url):
    """UserPages.lookup (statements built once per attribute) against UserPages.page with
    the clause user_where builds: the same users, order, groups and totalResults, for every
    page shape, on both databases."""
    from agent.scim.filter import parse_filter
    from agent.storage import filter_sql

    store = Store.from_url(db_url)
    try:
        store.upgrade(50, NOW)
        with store.write() as tx:
            _lookup_users_fixture(tx)
        shapes = [(1, 100), (1, 1), (2, 1), (3, 1), (2, 2), (1, 0), (4, 10), (99, 5)]
        with store.read() as tx:
            for text in LOOKUPS:
                expr = parse_filter(text, "User")
                lookup = filter_sql.user_lookup(expr)
                assert lookup is not None, text
                where = filter_sql.user_where(expr)
                for start, count in shapes:
                    fast = tx.user_pages.lookup(lookup, start, count)
                    general = tx.user_pages.page(where, [], start, count)
                    got = (fast.total, [(r.id, r.groups) for r in fast.items])
                    want = (general.total, [(r.id, r.groups) for r in general.items])
                    assert got == want, (text, start, count)
            shared = filter_sql.user_lookup(parse_filter('externalId eq "shared"', "User"))
            assert shared is not None
            page = tx.user_pages.lookup(shared, 1, 2)
            assert (page.total, [r.id for r in page.items]) == (3, ["u2", "u3"])
            assert page.items[0].groups == [("g2", "Alpha"), ("g1", "beta"), ("g3", "gamma")]
    finally:
        store.dispose()


def test_only_a_single_eq_on_a_column_is_a_lookup():
    from agent.scim.filter import parse_filter
    from agent.storage import filter_sql

    for text in [
        'userName ne "a"',
        'userName sw "a"',
        'emails.value eq "a@x"',
        'emails[type eq "work"].value eq "a@x"',
        "active eq true",
        'meta.lastModified eq "2026-01-01T00:00:00Z"',
        'userName eq "a" and title eq "b"',
        'not (userName eq "a")',
        'groups.display eq "x"',
        "userName eq null",
    ]:
        assert filter_sql.user_lookup(parse_filter(text, "User")) is None, text


def test_a_user_reads_its_groups_in_display_name_order_on_both_databases(db_url):
    store = Store.from_url(db_url)
    try:
        store.upgrade(50, NOW)
        with store.write() as tx:
            _lookup_users_fixture(tx)
        with store.read() as tx:
            want = [("g2", "Alpha"), ("g1", "beta"), ("g3", "gamma")]
            record = tx.users.get("u3")
            assert record is not None and record.groups == want
            assert [r.groups for r in tx.user_pages.page(None, [], 1, 5).items] == [
                [],
                want,
                want,
                [],
                [],
            ]
            bare = tx.users.get("u3", with_groups=False)
            assert bare is not None and bare.groups == []
    finally:
        store.dispose()


def _plan_rows(node: dict) -> int:
    """The most rows any node of an EXPLAIN (ANALYZE, FORMAT JSON) plan produced."""
    own = int(node.get("Actual Rows", 0)) * int(node.get("Actual Loops", 1))
    return max([own] + [_plan_rows(child) for child in node.get("Plans", [])])


def test_removing_members_touches_only_their_keys_whatever_the_statistics(pg_url):
    """Entra's pre-2020 ``members`` remove with a value list, and the groups of the users a
    membership change re-decides. Statistics taken while a group was small once made the
    list statements read every membership row (423 ms to remove 100 members at 100,000).
    Each member now goes by its own key."""
    from sqlalchemy import func, select, text

    from agent.storage.groups import GROUPS_OF_USER_SQL, REMOVE_MEMBER_SQL
    from agent.storage.tables import group_members

    store = Store.from_url(pg_url)
    try:
        store.upgrade(5000, NOW)
        ids = [f"u{i:05d}" for i in range(3000)]
        with store.write() as tx:
            for uid in ids:
                tx.users.insert(uid, _user(f"{uid}@x"), SeatState(), NOW)
            tx.groups.insert("g1", {"displayName": "everyone"}, NOW)
            tx.groups.add_members("g1", ids[:10])
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE group_members"))  # statistics of a 10-member group
        with store.write() as tx:
            tx.groups.add_members("g1", ids[10:])
        with store.write() as tx:
            tx.groups.insert("g2", {"displayName": "few"}, NOW)
            tx.groups.add_members("g2", [ids[5], ids[6]])
            got = tx.groups.names_by_user([ids[5], ids[7], "nobody"])
            assert {k: sorted(v) for k, v in got.items()} == {
                ids[5]: ["everyone", "few"],
                ids[7]: ["everyone"],
                "nobody": [],
            }
            assert tx.groups.names_by_user([]) == {}
            asked = [ids[2999], "nobody", ids[5], ids[5], ids[1500]]
            assert tx.groups.remove_members("g1", asked) == [ids[2999], ids[5], ids[1500]]
            assert tx.groups.remove_members("g1", []) == []
            assert tx.groups.names_by_user([ids[5]]) == {ids[5]: ["few"]}
        with store.read() as tx:
            left = tx.conn.execute(
                select(func.count())
                .select_from(group_members)
                .where(group_members.c.group_id == "g1")
            ).scalar_one()
            assert left == 2997
        raw = store.engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + REMOVE_MEMBER_SQL, ("g1", ids[7]))
            plan = cursor.fetchone()[0][0]["Plan"]
            raw.rollback()
            assert _plan_rows(plan) <= 1, plan
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + GROUPS_OF_USER_SQL, (ids[6],))
            plan = cursor.fetchone()[0][0]["Plan"]
            raw.rollback()
            assert _plan_rows(plan) <= 2, plan  # the user's two memberships, not the 2,997
        finally:
            raw.close()
    finally:
        store.dispose()


def test_a_lost_server_during_a_member_removal_is_a_retryable_error(pg_url):
    """The per-key statements go to psycopg directly; a lost server must still surface as
    SQLAlchemy's OperationalError (a 503 on /scim) with the dead connection invalidated."""
    import psycopg
    import pytest
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    store = Store.from_url(pg_url)
    try:
        store.upgrade(5, NOW)
        with store.write() as tx:
            tx.users.insert("u1", _user("u1@x"), SeatState(), NOW)
            tx.groups.insert("g1", {"displayName": "g"}, NOW)
            tx.groups.add_members("g1", ["u1"])
        raised: list[BaseException] = []
        with pytest.raises(OperationalError):
            with store.write() as tx:
                pid = tx.conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
                dsn = pg_url.split("?")[0].replace("postgresql+psycopg://", "postgresql://")
                with psycopg.connect(dsn, autocommit=True) as admin:
                    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                try:
                    tx.groups.remove_members("g1", ["u1"])
                except BaseException as err:  # what the call itself raised, not the rollback
                    raised.append(err)
                    raise
        assert isinstance(raised[0], OperationalError), raised
        assert raised[0].connection_invalidated
        with store.write() as tx:  # nothing was removed, and the store works again
            assert tx.groups.remove_members("g1", ["u1"]) == ["u1"]
    finally:
        store.dispose()


def test_no_connection_keeps_a_plan_made_while_a_table_was_small(pg_url):
    """psycopg prepares a statement on the server after five runs, and PostgreSQL may then
    cache a generic plan: one made while group_members held a few rows is a sequential scan,
    and without an ANALYZE it stayed cached on that connection as the group grew (14 ms
    instead of 1.3 ms to remove 100 members at 2,700). Every execution is planned afresh."""
    from sqlalchemy import text

    from agent.storage.engine import make_engine

    setup = Store.from_url(pg_url)
    setup.upgrade(5000, NOW)
    setup.dispose()
    store = Store(make_engine(pg_url, pool_size=1, max_overflow=0))  # one connection
    try:
        ids = [f"u{i:05d}" for i in range(2000)]
        with store.write() as tx:
            for uid in ids:
                tx.users.insert(uid, _user(f"{uid}@x"), SeatState(), NOW)
            tx.groups.insert("g1", {"displayName": "grows"}, NOW)
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE group_members"))  # empty
        for _ in range(3):  # the removal statement runs (and is prepared) on a tiny table
            with store.write() as tx:
                tx.groups.add_members("g1", ids[:4])
                assert tx.groups.remove_members("g1", ids[:4]) == ids[:4]
        with store.write() as tx:
            tx.groups.add_members("g1", ids)
        seq_scans = text(
            "SELECT seq_scan FROM pg_stat_xact_user_tables"  # this backend's, not yet flushed
            " WHERE relname = 'group_members' AND schemaname = current_schema()"
        )
        with store.write() as tx:
            before = tx.conn.execute(seq_scans).scalar_one()
            assert tx.groups.remove_members("g1", ids[1000:1100]) == ids[1000:1100]
            assert tx.conn.execute(seq_scans).scalar_one() == before
    finally:
        store.dispose()
