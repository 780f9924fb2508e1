"""Reconcile time and peak memory as users grow.

Seeds N users by bulk insert (the rows a SCIM create writes, with the seat state the policy
gives them), then runs the reconcile job function once in a fresh process-local
measurement: wall time and the peak of Python allocations (tracemalloc) during reconcile,
plus the process's peak RSS.

    python bench/reconcile.py --db sqlite --users 10000
    python bench/reconcile.py --db postgres --users 100000
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
import tracemalloc
import uuid

from sqlalchemy import create_engine, insert, text

from agent.bootstrap import build_agent
from agent.config import settings_from_mapping
from agent.domain import license as lic
from agent.jobs.tasks import Jobs
from agent.services.seats import directory_state
from agent.storage.store import user_columns, user_value_rows
from agent.storage.tables import user_values, users

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def seed(agent, n: int) -> None:  # type: ignore[no-untyped-def]
    """Bulk-insert N users with the rows a SCIM create writes (users, user_values) and the seat
    state the policy gives them (seats >= N, so every user who wants a seat holds one)."""
    now = agent.clock()
    policy = agent.seats.policy
    consumed = 0
    for start in range(0, n, 5000):
        user_rows, value_rows = [], []
        for i in range(start, min(n, start + 5000)):
            uid = str(uuid.uuid4())
            res = {
                "userName": f"user{i:07d}@example.com",
                "active": i % 10 != 0,
                "name": {"givenName": "U", "familyName": str(i)},
                "emails": [{"value": f"user{i:07d}@example.com", "type": "work"}],
                "roles": [{"value": "Assistant" if i % 7 == 0 else "Member"}],
            }
            state = directory_state(res, ())
            wants = lic.wants_seat(policy, state)
            consumed += wants
            status = lic.app_status(policy, state)
            user_rows.append(
                {
                    "id": uid,
                    **user_columns(res),
                    "created": now,
                    "last_modified": now,
                    "version": 1,
                    "resource": json.dumps(res),
                    "app_status": status,
                    "license_state": "licensed"
                    if wants
                    else ("free" if state.active else "inactive"),
                    "holds_seat": wants,
                    "on_fallback": False,
                }
            )
            value_rows.extend(user_value_rows(uid, res))
        with agent.store.write() as tx:
            tx.conn.execute(insert(users), user_rows)
            tx.conn.execute(insert(user_values), value_rows)
    with agent.store.write() as tx:
        tx.set_pool(tx.pool().seats, consumed, now)
        tx.recount_users()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--users", type=int, default=10000)
    args = ap.parse_args()
    schema = None
    if args.db == "sqlite":
        url = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    else:
        schema = "bench_" + uuid.uuid4().hex[:8]
        with create_engine(PG).begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        url = f"{PG}?options=-csearch_path%3D{schema}"
    base = {
        "database": {"url": url},
        "auth": {"scim_token": "t", "admin_token": "a"},
        "license": {"seats": args.users},
    }
    try:
        agent = build_agent(settings_from_mapping(base))
        t0 = time.perf_counter()
        seed(agent, args.users)
        seeded = time.perf_counter() - t0
        # A routine run: nothing changed since the users were written. Timed on its own, then
        # run again under tracemalloc (which slows Python down) for the allocation peak.
        t0 = time.perf_counter()
        routine = Jobs(agent).reconcile()
        routine_s = time.perf_counter() - t0
        assert not routine.resettled, routine.resettled[:5]
        tracemalloc.start()
        Jobs(agent).reconcile()
        _, routine_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        agent.store.dispose()
        # The operator now declares Assistant free: reconcile must re-decide 1/7 of the users.
        changed = {**base, "license": {**base["license"], "free_roles": ["Assistant"]}}
        agent = build_agent(settings_from_mapping(changed))
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        report = Jobs(agent).reconcile()
        elapsed = time.perf_counter() - t0
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        agent.store.dispose()
    finally:
        if schema:
            with create_engine(PG).begin() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    print(f"db={args.db} users={args.users} (seeded in {seeded:.1f} s by bulk insert)")
    print(f"routine reconcile (nothing to repair): {routine_s:.2f} s")
    print(f"  peak Python allocations (tracemalloc, second run): {routine_peak / 1e6:.1f} MB")
    print(f"reconcile after a policy change: {elapsed:.2f} s")
    print(f"  users re-decided: {len(report.resettled)}")
    print(f"process peak RSS: before {rss_before / 1024:.0f} MB, after {rss_after / 1024:.0f} MB")


if __name__ == "__main__":
    main()
