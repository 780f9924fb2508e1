"""Counted buckets of the user order: a page of the unfiltered user list at any offset in
bounded time (RFC 7644 §3.4.2.4 ``startIndex``, issue 13).

Users are listed in ``seq`` order. ``user_order_buckets`` holds, for each run of
``BUCKET_SIZE`` consecutive seq values (bucket ``seq // BUCKET_SIZE``), how many users it
holds. Every insert and delete of a user changes its bucket's count in the same transaction
(``count_in``), so the buckets are always exactly the users of the snapshot a reader sees.

A page at offset k (``page_keys``) is one statement, so one snapshot even on PostgreSQL under
READ COMMITTED without a transaction: a running sum over the bucket rows (one per 8,192 seq
values: 123 rows at 1,000,000 users) finds the first bucket whose running sum passes k and
the users before it, and the walk over ``ix_users_seq`` starts at that bucket's first seq and
skips fewer than ``BUCKET_SIZE`` entries. Without the buckets a page walked k entries.

The size balances the two parts: at 1,000,000 users on SQLite a row of the running sum cost
about 2 µs and an index entry skipped about 40 ns (``bench/page_statements.py``), so 1,024
seq values a bucket spent 4.6 ms on the 977 bucket rows (the sum runs twice, once per
scalar subquery) and next to nothing on the walk; 8,192 spend about an eighth of that on the
sums and at most 0.3 ms on the walk. The bucket rows grow with the highest seq: at
10,000,000 users the sums cost what 1,024 did at 1,000,000.

The newest bucket is written by every insert: a hot row. It adds no serialisation: every
insert and delete already updates the seat-pool row (``users_total``) in its transaction, and
every write transaction takes the seat-pool lock first (``Store.write``), so writers are
already one at a time; the bucket is written after the pool row, so the lock order is the same
for all.

Filtered and sorted lists do not use the buckets (their order is not ``seq`` alone, or their
positions depend on the filter): they walk their matches as before, and cursor paging
(``agent.scim.cursor``) is flat at any depth for them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    Select,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from agent.storage.tables import user_order_buckets, users
from agent.storage.write_behind import DriverStatement, WriteBehind

# Seq values per bucket: a page walks fewer than this many index entries past the running sum.
# The migration that created the table filled it with 8,192 (0005); changing it needs a
# migration that refills the table.
BUCKET_SIZE = 8192

_buckets = user_order_buckets


def _upsert(is_postgres: bool) -> Any:
    """``users += :n`` for bucket ``:b``, creating the row when it is the bucket's first user."""
    stmt = (pg_insert if is_postgres else sqlite_insert)(_buckets).values(
        bucket=bindparam("b"), users=bindparam("n")
    )
    return stmt.on_conflict_do_update(
        index_elements=[_buckets.c.bucket], set_={"users": _buckets.c.users + stmt.excluded.users}
    )


_UPSERT = {True: _upsert(True), False: _upsert(False)}


def count_in(conn: Connection, seqs: Iterable[int], delta: int) -> None:
    """Add ``delta`` (1: inserted, -1: deleted) to the bucket of each of ``seqs``, in the
    caller's transaction: one upsert per bucket touched."""
    per_bucket = Counter(seq // BUCKET_SIZE for seq in seqs)
    if not per_bucket:
        return
    rows = [{"b": b, "n": n * delta} for b, n in sorted(per_bucket.items())]
    conn.execute(_UPSERT[conn.dialect.name == "postgresql"], rows)


def _page_keys() -> Select[tuple[int]]:
    """The seqs at positions [offset, offset + count) of all users in seq order, in one
    statement: the bucket holding position ``offset`` by a running sum of the bucket counts,
    then ``seq >= bucket start ORDER BY seq OFFSET (offset - users before it) LIMIT count``.
    Past the last user there is no such bucket, and no row. Bound by ``page_params``."""
    b = _buckets
    offset = bindparam("bucket_offset", type_=Integer())
    running = select(
        b.c.bucket,
        b.c.users,
        func.sum(b.c.users).over(order_by=b.c.bucket).label("upto"),
    ).subquery("running")
    # Two uncorrelated scalar subqueries, each run once per statement (a read connection
    # takes no WITH, agent.storage.engine._read_guard; OFFSET takes no column). Running sums
    # only grow, so the bucket holding position ``offset`` is the first whose sum passes it,
    # and the users before it are the largest sum that does not: aggregates, no sort.
    first_bucket = select(func.min(running.c.bucket)).where(running.c.upto > offset)
    before = select(func.max(running.c.upto)).where(running.c.upto <= offset)
    start = first_bucket.scalar_subquery() * bindparam("bucket_size", type_=Integer())
    return (
        select(users.c.seq)
        .where(users.c.seq >= start)
        .order_by(users.c.seq)
        .offset(offset - func.coalesce(before.scalar_subquery(), 0))
        .limit(bindparam("bucket_count", type_=Integer()))
    )


# Built once (a page pays for neither building nor cache-keying it), bound per page.
PAGE_KEYS = _page_keys()


def page_params(offset: int, count: int) -> dict[str, int]:
    """The parameters of ``PAGE_KEYS`` for the page of ``count`` users at ``offset``."""
    return {"bucket_offset": offset, "bucket_count": count, "bucket_size": BUCKET_SIZE}


def _counted_by_id(is_postgres: bool, delta: int) -> DriverStatement:
    """``users += delta`` for the bucket of the user ``:d_id``, the user's seq read in the
    statement itself; nothing when the user is not there."""
    make = pg_insert if is_postgres else sqlite_insert
    bucket = users.c.seq // bindparam("d_bucket_size", type_=Integer())
    stmt = make(_buckets).from_select(
        ["bucket", "users"],
        select(bucket, literal_column(str(delta))).where(users.c.id == bindparam("d_id")),
    )
    return DriverStatement(
        stmt.on_conflict_do_update(
            index_elements=[_buckets.c.bucket],
            set_={"users": _buckets.c.users + stmt.excluded.users},
        )
    )


_COUNTED_BY_ID = {
    (pg, delta): _counted_by_id(pg, delta) for pg in (True, False) for delta in (1, -1)
}


def queue_count(writes: WriteBehind, is_postgres: bool, user_id: str, delta: int) -> None:
    """Queue ``delta`` (1: inserted, -1: about to be deleted) on the bucket of ``user_id``
    with the transaction's other writes (agent.storage.write_behind), so the insert that
    makes the user's seq or the delete that ends it need not return it: queue it after the
    user's insert, or before its delete."""
    writes.add(
        _COUNTED_BY_ID[(is_postgres, delta)], {"d_id": user_id, "d_bucket_size": BUCKET_SIZE}
    )


def page_keys(offset: int, count: int) -> Select[tuple[int]]:
    """``PAGE_KEYS`` with its parameters bound (a statement on its own: plans, benchmarks)."""
    return PAGE_KEYS.params(page_params(offset, count))


def counted(conn: Connection) -> dict[int, int]:
    """Bucket -> users as stored (empty buckets left out)."""
    q = select(_buckets.c.bucket, _buckets.c.users).where(_buckets.c.users != 0)
    return {int(bucket): int(n) for bucket, n in conn.execute(q)}


def actual(conn: Connection) -> dict[int, int]:
    """Bucket -> users as COUNT(*) of the users table finds them."""
    bucket = users.c.seq // BUCKET_SIZE
    q = select(bucket, func.count()).group_by(bucket)
    return {int(b): int(n) for b, n in conn.execute(q)}


def recount(conn: Connection) -> bool:
    """Rewrite the bucket counts from the users table (reconcile repairs what a write that
    bypassed the store left behind); whether they were wrong. In a write transaction."""
    found = actual(conn)
    if counted(conn) == found:
        return False
    conn.execute(delete(_buckets))
    if found:
        conn.execute(insert(_buckets), [{"bucket": b, "users": n} for b, n in found.items()])
    return True
