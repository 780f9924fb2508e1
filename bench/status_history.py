"""The status page's seats-per-day read as the ledger grows.

Bulk-inserts N ledger entries spread over the last 30 days (one in seven a ``queue`` entry),
then times ``seat_history`` for a 30-day chart: once with a fresh per-process summary of ended
days (a worker's first view), then again with it (every later view), and once without it.

    python bench/status_history.py --db sqlite --entries 1000000
    python bench/status_history.py --db postgres --entries 1000000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from agent.domain.billing import BillingTerms
from agent.services.seat_history import ClosedDays, seat_history
from agent.storage.store import Store
from agent.storage.tables import seat_ledger

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scim_load as sl  # noqa: E402

DAYS = 30
BATCH = 50_000


def seed(store: Store, entries: int, now: datetime) -> None:
    span = DAYS * 86_400
    with store.write() as tx:
        rows = []
        for i in range(entries):
            rows.append(
                {
                    "at": now - timedelta(seconds=span * (entries - i) / entries),
                    "kind": "queue" if i % 7 == 0 else "grant",
                    "cause": "bench",
                    "user_id": None,
                    "user_name": f"u{i}",
                    "detail": None,
                    "seats_after": entries,
                    "consumed_after": i,
                    "cost": None,
                    "request_id": None,
                }
            )
            if len(rows) == BATCH:
                tx.conn.execute(seat_ledger.insert(), rows)
                rows = []
        if rows:
            tx.conn.execute(seat_ledger.insert(), rows)


def timed(store: Store, now: datetime, closed: ClosedDays | None) -> float:
    terms = BillingTerms(Decimal(5), "monthly", None)
    start = time.perf_counter()
    history = seat_history(store, terms, now, DAYS, closed=closed)
    elapsed = time.perf_counter() - start
    assert len(history.days) == DAYS
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    now = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    with tempfile.TemporaryDirectory() as workdir:
        with sl.scratch_database(args.db, args.pg, Path(workdir)) as (url, schema):
            store = Store.from_url(url)
            store.upgrade(1000, now - timedelta(days=DAYS + 1))
            seed(store, args.entries, now)
            sl.vacuum_analyze(args.pg, schema)
            closed = ClosedDays()
            first = timed(store, now, closed)
            later = min(timed(store, now, closed) for _ in range(5))
            uncached = timed(store, now, None)
            store.dispose()
    print(f"{args.db}, {args.entries:,} ledger entries over {DAYS} days:")
    print(f"  first view of a worker  {first:.3f} s")
    print(f"  later views             {later * 1000:.1f} ms")
    print(f"  without the day summary {uncached:.3f} s")


if __name__ == "__main__":
    main()
