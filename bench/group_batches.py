"""Group PATCH cost against group size, in process (no network, no other load).

Seeds --users users by bulk insert, then adds them to one group in PATCH batches of 100
members through the Flask test client, timing each batch; prints the median batch time at
every 5,000 members (or every tenth of --members). A flat row means the cost does not depend on
the group's size.

    python bench/group_batches.py --db sqlite   --members 50000
    python bench/group_batches.py --db postgres --members 50000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scim_load  # noqa: E402

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--pg", default=scim_load.PG_BASE, help="PostgreSQL base URL (a schema is made)")
    p.add_argument("--members", type=int, default=50_000, help="size the group reaches")
    args = p.parse_args(argv)

    from agent.app import create_app
    from agent.config import settings_from_mapping

    n = args.members
    with tempfile.TemporaryDirectory(prefix="seat-groups-") as tmp:
        schema = None
        if args.db == "postgres":
            import psycopg

            schema = "bench_" + uuid.uuid4().hex[:10]
            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(f"CREATE SCHEMA {schema}")
            url = f"{args.pg}?options=-csearch_path%3D{schema}"
        else:
            url = f"sqlite:///{tmp}/groups.db"
        try:
            ids, _ = scim_load.seed_bulk(url, n, n, time.monotonic() + 3600)
            if schema:
                with psycopg.connect(args.pg, autocommit=True) as conn:
                    conn.execute(f"SET search_path = {schema}")
                    conn.execute("VACUUM ANALYZE")
            settings = settings_from_mapping(
                {
                    "database": {"url": url},
                    "auth": {"scim_token": "t", "admin_token": "a"},
                    "license": {"seats": n, "on_full": "refuse"},
                }
            )
            app = create_app(settings)
            client = app.test_client()
            headers = {"Authorization": "Bearer t"}
            made = client.post("/scim/v2/Groups", json={"displayName": "big"}, headers=headers)
            group = made.get_json()["id"]
            times = []
            for start in range(0, n, 100):
                body = {
                    "schemas": [PATCH],
                    "Operations": [
                        {
                            "op": "add",
                            "path": "members",
                            "value": [{"value": u} for u in ids[start : start + 100]],
                        }
                    ],
                }
                t = time.perf_counter()
                r = client.patch(f"/scim/v2/Groups/{group}", json=body, headers=headers)
                times.append(time.perf_counter() - t)
                if r.status_code not in (200, 204):
                    print(f"batch at {start}: {r.status_code} {r.get_data(as_text=True)}")
                    return 1
            app.extensions["seat_agent"].store.dispose()
        finally:
            if schema:
                with psycopg.connect(args.pg, autocommit=True) as conn:
                    conn.execute(f"DROP SCHEMA {schema} CASCADE")
    step = max(1, len(times) // 10)
    cells = [
        f"{i * 100 // 1000}k: {statistics.median(times[i : i + step]) * 1000:.1f}"
        for i in range(0, len(times) - step + 1, step)
    ]
    print(f"{args.db}, {n} members in batches of 100; median ms per batch from each size on:")
    print("  " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
