"""The store's cost of one page of 100 users at random depths, in process (no HTTP, no
rendering): the offset walk seat-agent ran before the counted buckets (forward, or from the end
past the middle), the walk from the counted bucket (agent.storage.user_order) and the keyset
walk of a cursor page (agent.storage.cursor_pages). Each variant reads the page's keys only,
and then also its rows (records with their groups) through the store.

The variants take turns at every random depth (A B C, B C A, ...), so a host that slows down
for a while slows all of them alike: compare the variants of one run.

    python bench/page_statements.py --db sqlite   --users 1000000
    python bench/page_statements.py --db postgres --users 1000000

Seeding writes minimal user rows (no JSON worth the name) in 10,000-row statements, then sets
the user total and the bucket counts from the rows (reconcile's recount); on PostgreSQL the
tables are then VACUUM ANALYZEd.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scim_load import PG_BASE, pct, scratch_database, table, vacuum_analyze  # noqa: E402

NOW = datetime(2026, 12, 3, tzinfo=UTC)


def seed(store: Any, n: int) -> None:
    from sqlalchemy import insert

    from agent.storage.tables import users

    batch = 10_000
    for start in range(0, n, batch):
        rows = [
            {
                "seq": i + 1,
                "id": f"u{i:09d}",
                "user_name": f"user{i:09d}@bench.example",
                "user_name_ci": f"user{i:09d}@bench.example",
                "active": True,
                "created": NOW,
                "last_modified": NOW,
                "version": 1,
                "resource": f'{{"userName":"user{i:09d}@bench.example","active":true}}',
                "app_status": "Active",
                "license_state": "free",
                "holds_seat": False,
                "on_fallback": False,
            }
            for i in range(start, min(n, start + batch))
        ]
        with store.write() as tx:
            tx.conn.execute(insert(users), rows)
    with store.write() as tx:
        tx.users.recount()  # the user total and the counted buckets, from the rows
    if store.engine.dialect.name == "postgresql":
        with store.engine.begin() as conn:
            conn.exec_driver_sql(f"SELECT setval('users_seq_seq', {n})")


def offset_walk_keys(offset: int, count: int, total: int) -> Any:
    """The keys statement seat-agent ran for an unfiltered page before the counted buckets
    (667fcf1): a forward OFFSET walk, or from the last user backwards past the middle."""
    from sqlalchemy import case, select

    from agent.storage.tables import users
    from agent.storage.users import USERS_TOTAL

    if offset * 2 <= total:
        return select(users.c.seq).order_by(users.c.seq).offset(offset).limit(count)
    t = USERS_TOTAL.scalar_subquery()
    skip = case((t > offset + count, t - offset - count), else_=0)
    take = case((t - offset >= count, count), (t > offset, t - offset), else_=0)
    return select(users.c.seq).order_by(users.c.seq.desc()).offset(skip).limit(take)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--pg", default=PG_BASE, help="PostgreSQL base URL (a schema is created)")
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--requests", type=int, default=300, help="random depths, each variant once")
    p.add_argument("--random-seed", type=int, default=7)
    args = p.parse_args(argv)

    from agent.storage import cursor_pages, user_order
    from agent.storage.store import Store
    from agent.storage.tables import users

    count = 100
    with tempfile.TemporaryDirectory(prefix="seat-pages-") as tmp:
        with scratch_database(args.db, args.pg, Path(tmp)) as (url, schema):
            store = Store.from_url(url)
            try:
                store.upgrade(10, NOW)
                t0 = time.perf_counter()
                seed(store, args.users)
                vacuum_analyze(args.pg, schema)
                print(
                    f"{args.db}: {args.users} users seeded in {time.perf_counter() - t0:.0f} s; "
                    f"{args.requests} random depths, page of {count}"
                )
                n = args.users

                def keys(statement: Callable[[int], tuple[Any, dict]]) -> Callable[[int], None]:
                    def run(offset: int) -> None:
                        with store.read() as tx:
                            got = tx.conn.execute(*statement(offset)).all()
                        assert len(got) == count, (offset, len(got))

                    return run

                def page(offset: int) -> None:
                    with store.read() as tx:
                        assert len(tx.user_pages.page(None, [], offset + 1, count).items) == count

                def cursor_page(offset: int) -> None:
                    with store.read() as tx:  # seqs are 1..n: after seq k starts at offset k
                        got = cursor_pages.user_page(tx, None, after=offset, count=count)
                    assert len(got.items) == count

                variants: dict[str, Callable[[int], None]] = {
                    "keys: offset walk (before, 667fcf1)": keys(
                        lambda k: (offset_walk_keys(k, count, n), {})
                    ),
                    "keys: counted buckets (after)": keys(
                        lambda k: (user_order.PAGE_KEYS, user_order.page_params(k, count))
                    ),
                    "keys: cursor keyset": keys(
                        lambda k: (cursor_pages._keys(users.c.seq, None, k, None, count - 1), {})
                    ),
                    "page with rows: startIndex (after)": page,
                    "page with rows: cursor": cursor_page,
                }
                times: dict[str, list[float]] = {name: [] for name in variants}
                rng = random.Random(args.random_seed)
                names = list(variants)
                for i in range(args.requests):
                    offset = rng.randrange(user_order.BUCKET_SIZE, n - count)
                    for name in names[i % len(names) :] + names[: i % len(names)]:
                        t = time.perf_counter()
                        variants[name](offset)
                        times[name].append(time.perf_counter() - t)
                rows = []
                for name, lat in times.items():
                    lat.sort()
                    rows.append(
                        [
                            name,
                            str(len(lat)),
                            f"{pct(lat, 50) * 1000:.2f}",
                            f"{pct(lat, 99) * 1000:.2f}",
                        ]
                    )
                print(table(rows, ["statement", "runs", "p50 ms", "p99 ms"]))
            finally:
                store.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
