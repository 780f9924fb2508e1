"""Group PATCH cost against group size, in process (no network, no other load).

Seeds --members users by bulk insert, then adds them to one group in PATCH batches of --batch
members (default 100) through the Flask test client, timing each batch; prints the median batch
time from every tenth of --members on. At every tenth it also removes the batch just added
(``members[value eq "..."]`` for one member, Entra's ``members`` remove with a value list for
more) and adds it back, five times, and prints the median removal. A flat row means the cost
does not depend on the group's size.

    python bench/group_batches.py --db sqlite   --members 50000
    python bench/group_batches.py --db postgres --members 50000
    python bench/group_batches.py --db sqlite   --members 50000 --batch 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scim_load  # noqa: E402

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--pg", default=scim_load.PG_BASE, help="PostgreSQL base URL (a schema is made)")
    p.add_argument("--members", type=int, default=50_000, help="size the group reaches")
    p.add_argument("--batch", type=int, default=100, help="members per PATCH")
    args = p.parse_args(argv)

    from agent.app import create_app
    from agent.config import settings_from_mapping

    n = args.members
    with tempfile.TemporaryDirectory(prefix="seat-groups-") as tmp:
        with scim_load.scratch_database(args.db, args.pg, Path(tmp)) as (url, schema):
            ids, _ = scim_load.seed_bulk(url, n, n, time.monotonic() + 3600)
            scim_load.vacuum_analyze(args.pg, schema)
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
            times: list[float] = []
            removals: list[tuple[int, float]] = []
            batch = args.batch
            every = max(batch, n // 10)

            def patch(operation: dict) -> float:
                body = {"schemas": [PATCH], "Operations": [operation]}
                t = time.perf_counter()
                r = client.patch(f"/scim/v2/Groups/{group}", json=body, headers=headers)
                took = time.perf_counter() - t
                if r.status_code not in (200, 204):
                    raise RuntimeError(f"{r.status_code} {r.get_data(as_text=True)}")
                return took

            for start in range(0, n, batch):
                members = ids[start : start + batch]
                add = {"op": "add", "path": "members", "value": [{"value": u} for u in members]}
                times.append(patch(add))
                if (start + batch) % every == 0 or start + batch >= n:
                    if len(members) == 1:
                        gone = {"op": "remove", "path": f'members[value eq "{members[0]}"]'}
                    else:
                        gone = {
                            "op": "remove",
                            "path": "members",
                            "value": [{"value": u} for u in members],
                        }
                    samples = []
                    for _ in range(5):
                        samples.append(patch(gone))
                        patch(add)
                    removals.append((start + len(members), statistics.median(samples)))
            app.extensions["seat_agent"].store.dispose()
    step = max(1, len(times) // 10)
    cells = [
        f"{i * batch / 1000:g}k: {statistics.median(times[i : i + step]) * 1000:.1f}"
        for i in range(0, len(times) - step + 1, step)
    ]
    print(f"{args.db}, {n} members in batches of {batch}; median ms per batch from each size on:")
    print("  add:    " + "  ".join(cells))
    print(
        "  remove: "
        + "  ".join(f"{size / 1000:g}k: {took * 1000:.1f}" for size, took in removals)
        + "  (median of 5 at that size)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
