"""The app's own CPU per SCIM read, in process: no HTTP server, no client, no network.

Seeds N users (bulk, as ``scim_load.py --seed bulk``), builds the Flask app and calls it as a
WSGI function: ``GET /Users?filter=userName eq "..."`` on random existing users, and pages of
100 at random offsets. Prints p50 / p99 and CPU per request for each. This is the part of a
request's time the agent's own code decides (Flask, the filter, SQLAlchemy, the driver,
rendering); ``scim_load.py`` adds gunicorn, HTTP and the client. ``--profile`` prints where the
lookups' time goes (cProfile, by cumulative time).

    python bench/lookup_cpu.py --db sqlite   --users 100000
    python bench/lookup_cpu.py --db postgres --users 100000 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scim_load as sl  # noqa: E402

TOKEN = "lookup-cpu-scim-token"


def environ(path: str, query: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8080",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8080",
        "HTTP_AUTHORIZATION": f"Bearer {TOKEN}",
        "HTTP_ACCEPT": "application/scim+json",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def call(app: Any, query: str, expect: bytes) -> None:
    statuses: list[str] = []
    body = b"".join(app.wsgi_app(environ("/scim/v2/Users", query), lambda s, h: statuses.append(s)))
    if not statuses[0].startswith("200") or expect not in body:
        raise RuntimeError(f"unexpected answer {statuses[0]}: {body[:300]!r}")


def measure(label: str, app: Any, queries: list[str], expect: bytes) -> None:
    for q in queries[:200]:  # warm up: caches, pool, statements
        call(app, q, expect)
    latencies = []
    cpu0 = time.process_time()
    for q in queries:
        t = time.perf_counter()
        call(app, q, expect)
        latencies.append(time.perf_counter() - t)
    cpu = time.process_time() - cpu0
    latencies.sort()
    n = len(latencies)
    print(
        f"{label}: p50 {sl.pct(latencies, 50) * 1000:.3f} ms, p99 "
        f"{sl.pct(latencies, 99) * 1000:.3f} ms, CPU {cpu / n * 1000:.3f} ms per request ({n})"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--pg", default=sl.PG_BASE, help="PostgreSQL base URL (a schema is created)")
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--requests", type=int, default=3_000, help="per measured operation")
    p.add_argument("--profile", action="store_true", help="cProfile the lookups")
    args = p.parse_args(argv)

    from agent.app import create_app
    from agent.config import settings_from_mapping

    with tempfile.TemporaryDirectory(prefix="seat-lookup-cpu-") as tmp:
        with sl.scratch_database(args.db, args.pg, Path(tmp)) as (db_url, schema):
            seats = args.users + 10
            _, names = sl.seed_bulk(db_url, seats, args.users, time.monotonic() + 3600)
            sl.vacuum_analyze(args.pg, schema)
            settings = settings_from_mapping(
                {
                    "database": {"url": db_url},
                    "auth": {"scim_token": TOKEN, "admin_token": TOKEN + "-admin"},
                    "license": {"seats": seats, "on_full": "refuse"},
                }
            )
            app = create_app(settings)
            try:
                run(app, args, names)
            finally:
                app.extensions["seat_agent"].store.dispose()
    return 0


def run(app: Any, args: argparse.Namespace, names: list[str]) -> None:
    rng = random.Random(7)
    lookups = [
        "filter=" + quote(f'userName eq "{names[rng.randrange(len(names))]}"')
        for _ in range(args.requests)
    ]
    pages = [
        f"startIndex={rng.randrange(1, args.users - 99)}&count=100"
        for _ in range(args.requests // 3)
    ]
    python = sys.version.split()[0]
    print(f"seat-agent in process: {args.db}, {args.users} users, Python {python}")
    print(f"host probe {sl.host_probe():.1f} ms (lower is faster)")
    measure('GET filter userName eq "..."', app, lookups, b'"totalResults":1,')
    measure("GET page count=100 (random offset)", app, pages, b'"itemsPerPage":100')
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for q in lookups:
            call(app, q, b'"totalResults":1,')
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)


if __name__ == "__main__":
    sys.exit(main())
