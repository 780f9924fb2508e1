"""Cost of the seat decision on the SCIM create path.

Creates users through the real Flask app (in process, no network) on SQLite or PostgreSQL and
reports the latency of POST /Users and, separately, of ``SeatEngine.settle`` (the seat
decision: read pool, decide, update pool, ledger) measured inside the same requests.

    python bench/seat_decision.py --db sqlite --users 5000
    python bench/seat_decision.py --db postgres --users 5000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from agent.app import create_app
from agent.config import settings_from_mapping
from agent.services.seats import SeatEngine

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scim_load as sl  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--on-full", default="refuse", choices=["refuse", "queue"])
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="seat-decision-") as tmp:
        with sl.scratch_database(args.db, sl.PG_BASE, Path(tmp)) as (url, _schema):
            # Half the users get a seat, the rest hit the limit (refused or queued).
            seats = args.users // 2
            settings = settings_from_mapping(
                {
                    "database": {"url": url},
                    "auth": {"scim_token": "t", "admin_token": "a"},
                    "license": {"seats": seats, "on_full": args.on_full},
                }
            )
            settle_times: list[float] = []
            original = SeatEngine.settle

            def timed(self, *a, **kw):  # type: ignore[no-untyped-def]
                t0 = time.perf_counter()
                try:
                    return original(self, *a, **kw)
                finally:
                    settle_times.append(time.perf_counter() - t0)

            SeatEngine.settle = timed  # type: ignore[method-assign]
            app = create_app(settings)
            client = app.test_client()
            headers = {"Authorization": "Bearer t"}
            granted, limited = [], []
            try:
                for i in range(args.users):
                    t0 = time.perf_counter()
                    r = client.post(
                        "/scim/v2/Users",
                        json={"userName": f"u{i}", "active": True},
                        headers=headers,
                    )
                    elapsed = time.perf_counter() - t0
                    (granted if i < seats else limited).append(elapsed)
                    assert r.status_code in (201, 403), r.get_data(as_text=True)
            finally:
                SeatEngine.settle = original  # type: ignore[method-assign]
                app.extensions["seat_agent"].store.dispose()

    print(f"db={args.db} users={args.users} seats={seats} on_full={args.on_full}")
    print(f"{'what':32} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name, values in (
        ("POST /Users, seat granted", granted),
        (f"POST /Users, at limit ({args.on_full})", limited),
        ("SeatEngine.settle (decision)", settle_times),
    ):
        print(
            f"{name:32} {len(values):>6} {pct(values, 0.5):>8.2f} {pct(values, 0.99):>8.2f} "
            f"{statistics.mean(values) * 1000:>8.2f}"
        )


if __name__ == "__main__":
    main()
