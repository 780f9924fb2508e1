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
import resource
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

from agent.bootstrap import build_agent
from agent.config import settings_from_mapping
from agent.jobs.tasks import Jobs

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scim_load as sl  # noqa: E402


def seed(agent, n: int) -> None:  # type: ignore[no-untyped-def]
    """Bulk-insert N users with the rows a SCIM create writes and the seat state the policy
    gives them (seats >= N, so every user who wants a seat holds one): one in ten inactive,
    one in seven an Assistant."""
    sl.bulk_insert(
        agent,
        (
            (
                str(uuid.uuid4()),
                {
                    "userName": f"user{i:07d}@example.com",
                    "active": i % 10 != 0,
                    "name": {"givenName": "U", "familyName": str(i)},
                    "emails": [{"value": f"user{i:07d}@example.com", "type": "work"}],
                    "roles": [{"value": "Assistant" if i % 7 == 0 else "Member"}],
                },
            )
            for i in range(n)
        ),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--users", type=int, default=10000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="seat-reconcile-") as tmp:
        with sl.scratch_database(args.db, sl.PG_BASE, Path(tmp)) as (url, _schema):
            base = {
                "database": {"url": url},
                "auth": {"scim_token": "t", "admin_token": "a"},
                "license": {"seats": args.users},
            }
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
    print(f"db={args.db} users={args.users} (seeded in {seeded:.1f} s by bulk insert)")
    print(f"routine reconcile (nothing to repair): {routine_s:.2f} s")
    print(f"  peak Python allocations (tracemalloc, second run): {routine_peak / 1e6:.1f} MB")
    print(f"reconcile after a policy change: {elapsed:.2f} s")
    print(f"  users re-decided: {len(report.resettled)}")
    print(f"process peak RSS: before {rss_before / 1024:.0f} MB, after {rss_after / 1024:.0f} MB")


if __name__ == "__main__":
    main()
