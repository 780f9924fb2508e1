"""What a request costs seat-agent before any storage: server CPU per request of routes that do
less and less, through the same `seat-agent serve` (gunicorn, the buffering worker, Flask,
authentication, the request log and metrics) as every other benchmark.

    python bench/request_floor.py --db sqlite
    python bench/request_floor.py --db postgres --requests 2000

`GET /ServiceProviderConfig` touches no database: its CPU is the floor every SCIM request
pays. `GET /Users/{id}` adds a read, `GET /Users/<unknown>` a read that finds nothing, and
`DELETE /Users/{id}` a write transaction (the users deleted are created first, not timed).
Compare the floor with scim2-server's whole DELETE in `bench/scim_writes.py`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lean_http import LeanSession  # noqa: E402
from scim_load import PG_BASE, SCIM_TOKEN, Server, host_probe, table, user_body  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--pg", default=PG_BASE, help="PostgreSQL base URL (a schema is created)")
    p.add_argument("--requests", type=int, default=1000, help="requests per route")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=4)
    args = p.parse_args(argv)

    n = args.requests
    server = Server(
        args.db, n + 1000, args.workers, args.pg, Path(tempfile.mkdtemp()), args.threads
    )
    server.start()
    try:
        session = LeanSession(
            {"Authorization": f"Bearer {SCIM_TOKEN}", "Content-Type": "application/scim+json"}
        )
        base = server.base
        ids = []
        for i in range(n):
            made = session.request(
                "POST",
                base + "/Users",
                json=user_body(f"floor{i}.{uuid.uuid4().hex[:6]}@x.example"),
            )
            made.raise_for_status()
            ids.append(made.json()["id"])
        # Let the embedded scheduler finish its start (its first jobs run then): its CPU is
        # in the server's figure.
        time.sleep(5)
        routes = [
            ("GET /ServiceProviderConfig", lambda i: ("GET", "/ServiceProviderConfig"), 200),
            ("GET /Users/{id}", lambda i: ("GET", f"/Users/{ids[i]}"), 200),
            ("GET /Users/<unknown id>", lambda i: ("GET", f"/Users/{uuid.uuid4()}"), 404),
            ("DELETE /Users/{id}", lambda i: ("DELETE", f"/Users/{ids[i]}"), 204),
        ]
        rows = []
        errors = 0
        print(f"db={args.db} requests/route={n} workers={args.workers} threads={args.threads} "
              f"host probe {host_probe():.1f} ms")  # fmt: skip
        for name, request, status in routes:
            cpu0, t0 = server.cpu(), time.perf_counter()
            for i in range(n):
                method, path = request(i)
                errors += session.request(method, base + path).status_code != status
            wall, cpu = time.perf_counter() - t0, server.cpu() - cpu0
            rows.append([name, str(n), f"{wall / n * 1000:.2f}", f"{cpu / n * 1000:.2f}"])
        print(table(rows, ["route", "requests", "wall ms/req", "server CPU ms/req"]))
        print(f"errors: {errors}")
        return 1 if errors else 0
    finally:
        server.stop()
        server.drop()


if __name__ == "__main__":
    sys.exit(main())
