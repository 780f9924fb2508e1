"""SCIM load benchmark for seat-agent: seed N users, then time each SCIM operation over HTTP.

By default it starts its own server (``seat-agent serve`` with a temporary TOML file) on
loopback, on SQLite (a temporary file) or PostgreSQL (a fresh schema in database ``test``,
dropped afterwards); ``--url``/``--token`` target a running SCIM server instead, seat-agent or
another (bench/peers.sh runs it against scim2-server). Every measured request goes over HTTP;
latency is measured client side (time.perf_counter) per request. ``--ops`` chooses the
operations, ``--concurrency 1,4`` measures at several levels, ``--json`` writes the figures.

    python bench/scim_load.py --db sqlite --users 10000
    python bench/scim_load.py --db postgres --users 100000 --seed store --group-members 50000

Seeding uses concurrent POST /Users unless ``--seed store``, which writes users straight
through the store (same seat engine and rows as a SCIM create, 1,000 users per transaction);
the output says which. The run is bounded by ``--time-limit`` and stops the server itself.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lean_http import TRANSPORT_ERRORS, LeanSession  # noqa: E402

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
PG_BASE = "postgresql://postgres@127.0.0.1:5432/test"
SCIM_TOKEN = "bench-scim-token"
ADMIN_TOKEN = "bench-admin-token"


class OutOfTime(Exception):
    """The run reached --time-limit."""


# -- payloads ----------------------------------------------------------------------------------


def user_body(name: str, title: str = "Engineer") -> dict[str, Any]:
    """An Okta-like user with the attributes most IdPs send."""
    given, _, rest = name.partition(".")
    family = rest.split("@")[0]
    return {
        "schemas": [USER_SCHEMA, ENTERPRISE],
        "userName": name,
        "externalId": "ext-" + name,
        "name": {"givenName": given, "familyName": family},
        "displayName": f"{given} {family}",
        "title": title,
        "active": True,
        "emails": [{"value": name, "type": "work", "primary": True}],
        ENTERPRISE: {"department": f"Dept {len(name) % 40}", "employeeNumber": name[:12]},
    }


def seed_name(i: int) -> str:
    return f"seed{i:07d}.user@bench.example"


# -- measurement -------------------------------------------------------------------------------


@dataclass
class Result:
    op: str
    latencies: list[float] = field(default_factory=list)  # seconds
    errors: int = 0
    wall: float = 0.0
    server_cpu: float | None = None  # seconds of server CPU (user + system) during the op
    key: str = ""  # the operation's short name in --json (create, lookup, patch-okta...)

    def ms(self, p: float) -> float:
        """The p-th percentile latency in ms."""
        return pct(sorted(self.latencies), p) * 1000

    def summary(self) -> dict[str, Any]:
        """The figures of one operation for ``--json``: requests, errors, req/s, p50/p95/p99
        in ms and the server's CPU ms per request (None where not measured)."""
        n = len(self.latencies)
        lat = sorted(self.latencies)

        def ms(p: float) -> float | None:
            return round(pct(lat, p) * 1000, 3) if lat else None

        return {
            "op": self.key or self.op,
            "label": self.op,
            "requests": n,
            "errors": self.errors,
            "req_per_s": round(n / self.wall, 1) if self.wall else None,
            "p50_ms": ms(50),
            "p95_ms": ms(95),
            "p99_ms": ms(99),
            "server_cpu_ms_per_req": round(self.server_cpu / n * 1000, 3)
            if self.server_cpu is not None and n
            else None,
        }

    def row(self) -> list[str]:
        n = len(self.latencies)
        lat = sorted(self.latencies)
        return [
            self.op,
            str(n),
            f"{n / self.wall:.0f}" if self.wall else "-",
            f"{pct(lat, 50) * 1000:.1f}" if lat else "-",
            f"{pct(lat, 95) * 1000:.1f}" if lat else "-",
            f"{pct(lat, 99) * 1000:.1f}" if lat else "-",
            f"{self.server_cpu / n * 1000:.1f}" if self.server_cpu is not None and n else "-",
            str(self.errors),
        ]


def pct(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def table(rows: list[list[str]], headers: list[str]) -> str:
    cells = [headers, *rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


class Client:
    """A pool of threads, each with its own HTTP session, against one SCIM base URL.

    ``http="lean"`` is a kept-alive http.client connection per thread (bench/lean_http.py),
    ``"requests"`` a requests.Session per thread: requests costs about 0.4 ms of client
    Python per request, on the cores the server runs on."""

    def __init__(
        self,
        base: str,
        token: str,
        concurrency: int,
        deadline: float,
        server_cpu: Callable[[], float] | None = None,
        http: str = "requests",
    ):
        self.base = base.rstrip("/")
        self.headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/scim+json",
            "Accept": "application/scim+json",
        }
        self.concurrency = concurrency
        self.deadline = deadline
        self.server_cpu = server_cpu
        if http not in ("lean", "requests"):
            raise ValueError(f"http client {http!r}: lean or requests")
        self.http = http
        self.local = threading.local()

    def session(self) -> Any:
        s = getattr(self.local, "session", None)
        if s is None:
            if self.http == "lean":
                s = LeanSession(self.headers)
            else:
                s = requests.Session()
                s.headers.update(self.headers)
            self.local.session = s
        return s

    def call(self, method: str, path: str, **kw: Any) -> Any:
        """The response (requests.Response or lean_http.LeanResponse: status_code, ok,
        headers, content, text, json(), raise_for_status())."""
        return self.session().request(method, self.base + path, timeout=30, **kw)

    def run(
        self,
        op: str,
        items: Iterable[Any],
        send: Callable[[Any], tuple[str, str, dict[str, Any]]],
        ok: Callable[[Any], bool] = lambda r: r.ok,
        concurrency: int | None = None,
        key: str = "",
    ) -> Result:
        """Send one request per item; record client-side latency of each."""
        result = Result(op, key=key)
        lock = threading.Lock()

        def one(item: Any) -> None:
            if time.monotonic() > self.deadline:
                raise OutOfTime(op)
            method, path, kw = send(item)
            t0 = time.perf_counter()
            try:
                resp = self.call(method, path, **kw)
                good = ok(resp)
            except (requests.RequestException, *TRANSPORT_ERRORS):
                good = False
            dt = time.perf_counter() - t0
            with lock:
                result.latencies.append(dt)
                if not good:
                    result.errors += 1

        cpu0 = self.server_cpu() if self.server_cpu else None
        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency or self.concurrency) as pool:
            for f in [pool.submit(one, it) for it in items]:
                f.result()
        result.wall = time.perf_counter() - t0
        if self.server_cpu and cpu0 is not None:
            result.server_cpu = self.server_cpu() - cpu0
        return result


def ledger_entries(get: Callable[..., Any], **params: Any) -> list[dict[str, Any]]:
    """Every ledger entry (optionally ``since``), paged by ``seq`` 10,000 at a time through an
    admin GET ``get(path, **params)``."""
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        page = get("/ledger", after=after, limit=10_000, **params)["entries"]
        out.extend(page)
        if len(page) < 10_000:
            return out
        after = page[-1]["seq"]


# -- server ------------------------------------------------------------------------------------


def host_probe() -> float:
    """ms for a fixed piece of Python work like a server's (JSON out and back for a page of 100
    users), best of 5. The host of these machines is shared and its speed drifts up to twofold
    within an hour; this number says how fast it was when a run was made (lower is faster)."""
    page = {"Resources": [user_body(seed_name(i)) for i in range(100)]}
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(20):
            json.loads(json.dumps(page))
        best = min(best, time.perf_counter() - t)
    return best * 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``seat-agent serve`` in its own process group, with a temporary config and database."""

    def __init__(
        self,
        db: str,
        seats: int,
        workers: int,
        pg_base: str,
        workdir: Path,
        threads: int = 4,
        seat_extension: bool = False,
    ):
        self.workdir = workdir
        self.schema: str | None = None
        self.pg_base = pg_base
        if db == "postgres":
            self.schema = "bench_" + uuid.uuid4().hex[:10]
            self._pg(f"CREATE SCHEMA {self.schema}")
            self.db_url = f"{pg_base}?options=-csearch_path%3D{self.schema}"
        else:
            self.db_url = f"sqlite:///{workdir / 'bench.db'}"
        self.port = free_port()
        self.workers = workers
        self.threads = threads
        self.config = workdir / "seat-agent.toml"
        self.config.write_text(
            "\n".join(
                [
                    "[server]",
                    f"workers = {workers}",
                    f"threads = {threads}",
                    "max_body_bytes = 4194304",
                    "[database]",
                    f'url = "{self.db_url}"',
                    "[auth]",
                    f'scim_token = "{SCIM_TOKEN}"',
                    f'admin_token = "{ADMIN_TOKEN}"',
                    "[license]",
                    f"seats = {seats}",
                    'on_full = "refuse"',
                    "[scim]",
                    "max_page_size = 1000",
                    f"seat_extension = {'true' if seat_extension else 'false'}",
                    "",
                ]
            )
        )
        self.log = workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        # What starts `seat-agent serve` (bench/slow_clients.py runs it another way too).
        self.command = ["seat-agent"]

    def _pg(self, *statements: str) -> None:
        import psycopg

        with psycopg.connect(self.pg_base, autocommit=True) as conn:
            for sql in statements:
                conn.execute(sql)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/scim/v2"

    def start(self) -> None:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    *self.command,
                    "serve",
                    "--config",
                    str(self.config),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    str(self.workers),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        headers = {"Authorization": f"Bearer {SCIM_TOKEN}"}
        for _ in range(300):
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                r = requests.get(self.base + "/ServiceProviderConfig", headers=headers, timeout=2)
                if r.ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not start in 60 s")

    def rss(self) -> list[tuple[int, str, int]]:
        """(pid, role, VmRSS kB) of the gunicorn master and its child processes."""
        if self.proc is None:
            return []
        out = []
        pids = [self.proc.pid, *children(self.proc.pid)]
        for pid in pids:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            kb = next(int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmRSS:"))
            out.append((pid, "master" if pid == self.proc.pid else "child", kb))
        return out

    def log_summary(self) -> str:
        """Worker (re)starts and problems gunicorn logged: a timed-out worker is restarted."""
        text = self.log.read_text(errors="replace")
        boots = text.count("Booting worker")
        timeouts = text.count("WORKER TIMEOUT")
        tracebacks = text.count("Traceback")
        return (
            f"gunicorn log: {boots} worker boots, {timeouts} worker timeouts, "
            f"{tracebacks} tracebacks"
        )

    def vacuum(self) -> None:
        """After bulk seeding, what autovacuum reaches within a minute or two: fresh planner
        statistics and a visibility map (index-only scans), so runs are repeatable."""
        if self.schema:
            tables = "users, user_values, groups, group_members, seat_ledger, seat_pool"
            self._pg(f"SET search_path = {self.schema}", f"VACUUM ANALYZE {tables}")

    def cpu(self) -> float:
        """CPU seconds (user + system) used so far by the gunicorn master and its children:
        the server's own work per request, which other load on the machine does not inflate
        the way it inflates latency. PostgreSQL's backends are not included."""
        if self.proc is None:
            return 0.0
        return process_tree_cpu(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def drop(self) -> None:
        if self.schema:
            self._pg(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its children (one
    level: gunicorn's workers), from /proc."""
    total = 0
    for each in [pid, *children(pid)]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        out.extend(int(p) for p in task.read_text().split())
    return out


# -- seeding -----------------------------------------------------------------------------------


def seed_http(client: Client, n: int, concurrency: int) -> tuple[list[str], list[str]]:
    ids: list[str | None] = [None] * n

    def one(i: int) -> None:
        if time.monotonic() > client.deadline:
            raise OutOfTime("seed")
        r = client.call("POST", "/Users", json=user_body(seed_name(i)))
        if r.status_code != 201:
            raise RuntimeError(f"seed POST {i}: {r.status_code} {r.text[:300]}")
        ids[i] = r.json()["id"]

    with ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(one, i) for i in range(n)]:
            f.result()
    return [i for i in ids if i], [seed_name(i) for i in range(n)]


def seed_store(db_url: str, seats: int, n: int, deadline: float) -> tuple[list[str], list[str]]:
    """Write users through the store and seat engine, 1,000 per transaction (not over HTTP)."""
    from agent.bootstrap import build_agent
    from agent.config import settings_from_mapping
    from agent.scim.resources import normalize_user
    from agent.services.seats import Cause, directory_state

    settings = settings_from_mapping(
        {"database": {"url": db_url}, "license": {"seats": seats, "on_full": "refuse"}}
    )
    agent = build_agent(settings)
    cause = Cause("bench-seed")
    ids = [str(uuid.uuid4()) for _ in range(n)]
    names = [seed_name(i) for i in range(n)]
    for start in range(0, n, 1000):
        if time.monotonic() > deadline:
            raise OutOfTime("seed")
        with agent.store.write() as tx:
            for i in range(start, min(n, start + 1000)):
                resource = normalize_user(user_body(names[i]))
                seat = agent.seats.settle(
                    tx,
                    user_id=ids[i],
                    user_name=names[i],
                    state=directory_state(resource, ()),
                    previous=None,
                    cause=cause,
                )
                tx.users.insert(ids[i], resource, seat, agent.clock())
    agent.store.dispose()
    return ids, names


def bulk_insert(agent: Any, rows: Iterable[tuple[str, dict[str, Any]]], batch: int = 5000) -> int:
    """Write users as a SCIM create would (users and user_values rows, with the seat state the
    policy gives each), ``batch`` users per executemany, then set the seat counter and the user
    total. No ledger entry per user. Returns the number of users consuming a seat."""
    from sqlalchemy import insert

    from agent.domain import license as lic
    from agent.services.seats import directory_state
    from agent.storage import user_order
    from agent.storage.rows import user_columns, user_value_rows
    from agent.storage.tables import user_values, users

    policy = agent.seats.policy
    now = agent.clock()
    consumed = 0
    pending = iter(rows)
    while chunk := list(itertools.islice(pending, batch)):
        user_rows, value_rows = [], []
        for uid, resource in chunk:
            state = directory_state(resource, ())
            wants = lic.wants_seat(policy, state)
            consumed += wants
            user_rows.append(
                {
                    "id": uid,
                    **user_columns(resource),
                    "created": now,
                    "last_modified": now,
                    "version": 1,
                    "resource": json.dumps(resource, separators=(",", ":")),
                    "app_status": lic.app_status(policy, state),
                    "license_state": "licensed"
                    if wants
                    else ("free" if state.active else "inactive"),
                    "holds_seat": wants,
                    "on_fallback": False,
                    "last_active_at": now if state.active else None,
                }
            )
            value_rows.extend(user_value_rows(uid, resource))
        with agent.store.write() as tx:
            seqs = tx.conn.execute(insert(users).returning(users.c.seq), user_rows).scalars()
            user_order.count_in(tx.conn, list(seqs), 1)  # the counted buckets of the order
            tx.conn.execute(insert(user_values), value_rows)
    with agent.store.write() as tx:
        tx.pool.update(tx.pool.current().seats, consumed, now)
        tx.users.recount()
    return consumed


def seed_bulk(db_url: str, seats: int, n: int, deadline: float) -> tuple[list[str], list[str]]:
    """The users of ``seed_store`` written by ``bulk_insert``: a fraction of the time, but
    without one ledger entry per user (the ledger plays no part in the measured requests)."""
    from agent.bootstrap import build_agent
    from agent.config import settings_from_mapping
    from agent.scim.resources import normalize_user

    settings = settings_from_mapping(
        {"database": {"url": db_url}, "license": {"seats": seats, "on_full": "refuse"}}
    )
    agent = build_agent(settings)
    ids = [str(uuid.uuid4()) for _ in range(n)]
    names = [seed_name(i) for i in range(n)]

    def rows() -> Iterator[tuple[str, dict[str, Any]]]:
        for i in range(n):
            if i % 5000 == 0 and time.monotonic() > deadline:
                raise OutOfTime("seed")
            yield ids[i], normalize_user(user_body(names[i]))

    bulk_insert(agent, rows())
    agent.store.dispose()
    return ids, names


@contextmanager
def scratch_database(db: str, pg_base: str, workdir: Path) -> Iterator[tuple[str, str | None]]:
    """(URL, PostgreSQL schema or None) of an empty database for an in-process benchmark: a
    SQLite file in ``workdir``, or a fresh schema in ``pg_base``'s database, dropped after."""
    if db != "postgres":
        yield f"sqlite:///{workdir / 'bench.db'}", None
        return
    import psycopg

    schema = "bench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(pg_base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{pg_base}?options=-csearch_path%3D{schema}", schema
    finally:
        with psycopg.connect(pg_base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def vacuum_analyze(pg_base: str, schema: str | None) -> None:
    """After bulk seeding a PostgreSQL schema: planner statistics and a visibility map."""
    if schema:
        import psycopg

        with psycopg.connect(pg_base, autocommit=True) as conn:
            conn.execute(f"SET search_path = {schema}")
            conn.execute("VACUUM ANALYZE")


# -- the run -----------------------------------------------------------------------------------


# What --ops can choose, in the order they run: "page" is both page kinds (random offset, last
# 10%), "patch" both deactivation forms (Okta, Entra), "group-read" the three group reads
# (measure_group_reads) on --groups groups seeded first, "group" the growing group's PATCHes.
OPS = ("create", "lookup", "page", "group-read", "patch", "put", "group", "delete")


def parse_ops(text: str) -> list[str]:
    """``--ops create,patch``: the operations to measure, in OPS order."""
    asked = {o.strip() for o in text.split(",") if o.strip()}
    unknown = asked - set(OPS)
    if unknown or not asked:
        raise argparse.ArgumentTypeError(
            f"unknown operation(s) {', '.join(sorted(unknown)) or '(none)'}; "
            f"choose from {','.join(OPS)}"
        )
    return [o for o in OPS if o in asked]


def parse_levels(text: str) -> list[int]:
    """``--concurrency 1,4``: one or more client thread counts, measured one after the other
    on the same seeded users."""
    try:
        levels = [int(c) for c in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: whole numbers, e.g. 1 or 1,4") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: each at least 1")
    return levels


class CursorStarts:
    """Cursors of GET /Users at random points of the user order, as a walk that reached there
    would hold: minted with the server's own cursor key (agent.scim.cursor; the bench starts
    the server, so it reads the key from the database). A client cannot reach a random depth
    of a cursor walk any other way than walking there."""

    def __init__(self, db_url: str, count: int):
        from sqlalchemy import func, select

        from agent.bootstrap import cursor_key
        from agent.scim.cursor import CursorCodec
        from agent.storage.store import Store
        from agent.storage.tables import users

        store = Store.from_url(db_url)
        try:
            self.codec = CursorCodec(cursor_key(store), lambda: datetime.now(UTC))
            with store.read() as tx:
                low, high = tx.conn.execute(
                    select(func.min(users.c.seq), func.max(users.c.seq))
                ).one()
        finally:
            store.dispose()
        self.low, self.high, self.count = int(low), int(high), count

    def at_random(self, rng: random.Random) -> str:
        from agent.scim.cursor import Position, query_digest

        seq = rng.randrange(self.low, max(self.low + 1, self.high - 10 * self.count))
        return self.codec.encode("Users", Position(seq), self.count, query_digest(None))


def cursor_walks(client: Client, cursors: CursorStarts, r: int, rng: random.Random) -> Result:
    """``r`` GET /Users?cursor=...&count=100, as walks of 5 pages from random points: each
    page's request uses the previous page's nextCursor, so the walk is what a client does."""
    result = Result("GET page count=100 (cursor, 5-page walks from random points)", key="cursor")
    cpu0 = client.server_cpu() if client.server_cpu else None
    t0 = time.perf_counter()
    for _ in range(max(1, r // 5)):
        cursor = cursors.at_random(rng)
        for _ in range(5):
            if time.monotonic() > client.deadline:
                raise OutOfTime(result.op)
            params = {"cursor": cursor, "count": cursors.count}
            t = time.perf_counter()
            resp = client.call("GET", "/Users", params=params)
            result.latencies.append(time.perf_counter() - t)
            body = resp.json() if resp.ok else {}
            if len(body.get("Resources", ())) != cursors.count or "nextCursor" not in body:
                result.errors += 1
                break
            cursor = body["nextCursor"]
    result.wall = time.perf_counter() - t0
    if client.server_cpu and cpu0 is not None:
        result.server_cpu = client.server_cpu() - cpu0
    return result


def measure_reads(
    client: Client,
    names: list[str],
    total: int,
    r: int,
    rng: random.Random,
    lookups: bool = True,
    pages: bool = True,
    page_requests: int | None = None,
    cursors: CursorStarts | None = None,
) -> list[Result]:
    """The read targets: ``r`` userName lookups, ``page_requests`` (default ``r``) pages at
    random offsets and a quarter as many in the last 10% of ``total`` users; with ``cursors``,
    as many cursor pages as random-offset ones: walks of 5 pages following nextCursor from
    random points (RFC 9865). The random draws of users and offsets are made whichever are
    measured, so the users later operations pick stay the same."""

    def one_hit(resp: Any) -> bool:
        return resp.ok and resp.json()["totalResults"] == 1

    def full_page(resp: Any) -> bool:
        return resp.ok and len(resp.json()["Resources"]) == 100

    def page(k: int) -> tuple[str, str, dict[str, Any]]:
        return ("GET", "/Users", {"params": {"startIndex": k, "count": 100}})

    n = len(names)
    pr = r if page_requests is None else page_requests
    picked = [names[rng.randrange(n)] for _ in range(r)]
    starts = [rng.randrange(1, total - 99) for _ in range(pr)]
    tail = min(int(total * 0.9), total - 100)  # the last 10%, or the last page if that is less
    deep = [rng.randrange(tail, total - 99) for _ in range(max(1, pr // 4))]
    out = []
    if lookups:
        out.append(
            client.run(
                'GET filter userName eq "..."',
                picked,
                lambda nm: ("GET", "/Users", {"params": {"filter": f'userName eq "{nm}"'}}),
                one_hit,
                key="lookup",
            )
        )
    if pages:
        out.append(
            client.run("GET page count=100 (random offset)", starts, page, full_page, key="page")
        )
        out.append(
            client.run("GET page count=100 (last 10%)", deep, page, full_page, key="page-last-10%")
        )
        if cursors is not None:
            out.append(cursor_walks(client, cursors, pr, random.Random(rng.random())))
    return out


def seed_groups(
    client: Client, ids: list[str], n: int, size: int, concurrency: int, rng: random.Random
) -> list[tuple[str, str]]:
    """``n`` groups of ``size`` members drawn from ``ids``, each made by one POST /Groups with
    its members (as Entra and Okta push a group): (id, displayName) of each."""
    made: list[tuple[str, str] | None] = [None] * n
    draws = [rng.sample(ids, min(size, len(ids))) for _ in range(n)]

    def one(i: int) -> None:
        if time.monotonic() > client.deadline:
            raise OutOfTime("seed groups")
        name = f"Bench Team {i:05d}"
        body = {
            "schemas": [GROUP_SCHEMA],
            "displayName": name,
            "members": [{"value": u} for u in draws[i]],
        }
        r = client.call("POST", "/Groups", json=body)
        if r.status_code != 201:
            raise RuntimeError(f"seed group {i}: {r.status_code} {r.text[:300]}")
        made[i] = (r.json()["id"], name)

    with ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(one, i) for i in range(n)]:
            f.result()
    return [g for g in made if g]


def measure_group_reads(
    client: Client, groups: list[tuple[str, str]], r: int, rng: random.Random
) -> list[Result]:
    """The group reads IdPs make, ``r`` each: a group by id with its members; a group by
    ``displayName eq`` without members (Okta and Entra look a group up so before pushing
    it); a page of 100 groups at a random offset without members (Okta's group import)."""
    picked = [groups[rng.randrange(len(groups))] for _ in range(r)]
    starts = [rng.randrange(1, max(2, len(groups) - 99)) for _ in range(r)]
    size = len(client.call("GET", f"/Groups/{groups[0][0]}").json().get("members", []))

    def hit(resp: Any) -> bool:
        return resp.ok and resp.json()["totalResults"] == 1

    def full_page(resp: Any) -> bool:
        return resp.ok and len(resp.json()["Resources"]) == min(100, len(groups))

    return [
        client.run(
            f"GET /Groups/{{id}} ({size} members)",
            picked,
            lambda g: ("GET", f"/Groups/{g[0]}", {}),
            lambda resp: resp.ok and len(resp.json().get("members", [])) == size,
            key="group-get",
        ),
        client.run(
            'GET /Groups filter displayName eq "..." (no members)',
            picked,
            lambda g: (
                "GET",
                "/Groups",
                {
                    "params": {
                        "filter": f'displayName eq "{g[1]}"',
                        "excludedAttributes": "members",
                    }
                },
            ),
            hit,
            key="group-lookup",
        ),
        client.run(
            "GET /Groups page count=100 (random offset, no members)",
            starts,
            lambda k: (
                "GET",
                "/Groups",
                {"params": {"startIndex": k, "count": 100, "excludedAttributes": "members"}},
            ),
            full_page,
            key="group-page",
        ),
    ]


def explain_pages(db_url: str, total: int) -> None:
    """Print the database's plan (PostgreSQL: EXPLAIN ANALYZE, run; SQLite: EXPLAIN QUERY
    PLAN) of the two deep-page statements: a startIndex page at 90% of the users (the counted
    buckets, agent.storage.user_order) and a cursor page there (agent.storage.cursor_pages)."""
    from sqlalchemy import func, select

    from agent.storage import cursor_pages, user_order
    from agent.storage.store import Store
    from agent.storage.tables import users

    store = Store.from_url(db_url)
    try:
        with store.engine.connect() as conn:
            deep = int(total * 0.9)
            seq = conn.execute(select(func.min(users.c.seq))).scalar_one() + deep
            postgres = conn.dialect.name == "postgresql"
            prefix = "EXPLAIN (ANALYZE, BUFFERS) " if postgres else "EXPLAIN QUERY PLAN "
            keyset = cursor_pages._keys(users.c.seq, None, seq, None, 100)
            for name, statement in (
                (f"startIndex page at offset {deep}", user_order.page_keys(deep, 100)),
                (f"cursor page after seq {seq}", keyset),
            ):
                sql = str(statement.compile(conn, compile_kwargs={"literal_binds": True}))
                print(f"plan of the {name}:")
                for row in conn.exec_driver_sql(prefix + sql):
                    print("   ", row[0] if postgres else row[3])
            conn.rollback()
    finally:
        store.dispose()


def read_rounds(
    client: Client,
    names: list[str],
    rounds: int,
    r: int,
    rng: random.Random,
    cursors: CursorStarts | None = None,
    groups: list[tuple[str, str]] | None = None,
) -> list[list[Result]]:
    """``rounds`` repetitions of measure_reads (and, given ``groups``, measure_group_reads),
    one line per round with the host probe, so a reader sees how much of a p99 is the
    host's drift."""
    out = []
    for i in range(rounds):
        probe = host_probe()
        results = measure_reads(client, names, len(names), r, rng, cursors=cursors)
        if groups:
            results += measure_group_reads(client, groups, r, rng)
        out.append(results)
        cells = "; ".join(f"{x.op} p50 {x.ms(50):.1f} p99 {x.ms(99):.1f}" for x in results)
        print(f"round {i + 1}: host probe {probe:.1f} ms; {cells}", flush=True)
    return out


def inactive(resp: Any) -> bool:
    """A deactivating PATCH went through: 200 with ``active`` false in the body, or 204 No
    Content, which RFC 7644 section 3.5.2 also allows (scim2-server answers so)."""
    return resp.status_code == 204 or (resp.ok and resp.json().get("active") is False)


def measure(
    client: Client,
    ids: list[str],
    names: list[str],
    args: argparse.Namespace,
    ops: Iterable[str] = OPS,
    random_seed: int | None = None,
    cursors: CursorStarts | None = None,
    groups: list[tuple[str, str]] | None = None,
) -> list[Result]:
    """Time each of ``ops`` (see OPS) against the seeded users ``ids``/``names`` (and the
    seeded ``groups``, for "group-read"). Creates are
    deleted again (DELETE measures exactly those), so the seeded population is the same
    afterwards and another concurrency level can follow on the same server."""
    ops = set(ops)
    rng = random.Random(args.random_seed if random_seed is None else random_seed)
    r = args.requests
    n = len(ids)
    results: list[Result] = []

    new_names = [f"new{i:06d}.{uuid.uuid4().hex[:6]}@bench.example" for i in range(r)]
    new_ids: list[str] = []
    new_lock = threading.Lock()

    def record_create(resp: Any) -> bool:
        if resp.status_code == 201:
            with new_lock:
                new_ids.append(resp.json()["id"])
            return True
        return False

    def create(nm: str) -> tuple[str, str, dict[str, Any]]:
        return "POST", "/Users", {"json": user_body(nm)}

    if "create" in ops:
        results.append(client.run("POST /Users", new_names, create, record_create, key="create"))
    elif "delete" in ops:
        # DELETE needs users of its own: created here, not timed (the output says so).
        client.run("POST /Users (for DELETE, not measured)", new_names, create, record_create)

    results.extend(
        measure_reads(
            client,
            names,
            n + len(new_ids),
            r,
            rng,
            lookups="lookup" in ops,
            pages="page" in ops,
            page_requests=args.page_requests,
            cursors=cursors,
        )
    )
    if "group-read" in ops and groups:
        results.extend(measure_group_reads(client, groups, r, rng))

    picked = rng.sample(range(n), min(n, 3 * r))
    okta, entra, put = picked[:r], picked[r : 2 * r], picked[2 * r : 3 * r]

    if "patch" in ops:
        results.append(
            client.run(
                "PATCH active (Okta form)",
                okta,
                lambda i: (
                    "PATCH",
                    f"/Users/{ids[i]}",
                    {
                        "json": {
                            "schemas": [PATCH_SCHEMA],
                            "Operations": [{"op": "replace", "value": {"active": False}}],
                        }
                    },
                ),
                inactive,
                key="patch-okta",
            )
        )
        results.append(
            client.run(
                "PATCH active (Entra form)",
                entra,
                lambda i: (
                    "PATCH",
                    f"/Users/{ids[i]}",
                    {
                        "json": {
                            "schemas": [PATCH_SCHEMA],
                            "Operations": [{"op": "Replace", "path": "active", "value": "False"}],
                        }
                    },
                ),
                inactive,
                key="patch-entra",
            )
        )
    if "put" in ops:
        results.append(
            client.run(
                "PUT /Users/{id}",
                put,
                lambda i: (
                    "PUT",
                    f"/Users/{ids[i]}",
                    {"json": user_body(names[i], "Staff Engineer")},
                ),
                key="put",
            )
        )
    if "group" in ops:
        results.extend(measure_group(client, ids, args.group_members, rng))
    if "delete" in ops:
        results.append(
            client.run(
                "DELETE /Users/{id}",
                new_ids,
                lambda uid: ("DELETE", f"/Users/{uid}", {}),
                lambda resp: resp.status_code == 204,
                key="delete",
            )
        )
    return results


def measure_group(
    client: Client, ids: list[str], group_members: int, rng: random.Random
) -> list[Result]:
    """One large group, filled 100 members per PATCH; first and last tenth shown apart."""
    resp = client.call(
        "POST",
        "/Groups",
        json={"schemas": [GROUP_SCHEMA], "displayName": f"Bench Everyone {uuid.uuid4().hex[:6]}"},
    )
    resp.raise_for_status()
    group_id = resp.json()["id"]
    size = min(group_members, len(ids))
    members = rng.sample(ids, size)
    batches = [members[s : s + 100] for s in range(0, size, 100)]

    def add_batch(batch: list[str]) -> tuple[str, str, dict[str, Any]]:
        body = {
            "schemas": [PATCH_SCHEMA],
            "Operations": [
                {"op": "add", "path": "members", "value": [{"value": u} for u in batch]}
            ],
        }
        return "PATCH", f"/Groups/{group_id}", {"json": body}

    # Sequential, in order, so "first" and "last" really are the group at its smallest/largest.
    group = client.run(
        f"PATCH group +100 members (to {size})", batches, add_batch, concurrency=1, key="group"
    )
    tenth = max(1, len(batches) // 10)
    first = Result("  first 10% of batches", group.latencies[:tenth], 0, 0.0, key="group-first")
    last = Result("  last 10% of batches", group.latencies[-tenth:], 0, 0.0, key="group-last")
    check = client.call("GET", f'/Users?filter=groups.value eq "{group_id}"&count=0')
    group_total = check.json().get("totalResults") if check.ok else None
    if group_total != size:
        print(f"WARNING: group holds {group_total} members, expected {size}", file=sys.stderr)
    return [group, first, last]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--pg", default=PG_BASE, help="PostgreSQL base URL (a schema is created)")
    p.add_argument(
        "--url",
        help="target a running SCIM server instead (its SCIM base URL, e.g. .../scim/v2): "
        "seat-agent or any other, without users yet (seeding POSTs seed0000000.user@... over "
        "HTTP)",
    )
    p.add_argument("--token", help="SCIM bearer token for --url")
    p.add_argument(
        "--server-pid",
        type=int,
        help="with --url: the server's process id, to report its CPU ms per request "
        "(that process and its children)",
    )
    p.add_argument("--label", help="a name for the target in the output and --json")
    p.add_argument("--users", type=int, default=10_000, help="users seeded before measuring")
    p.add_argument("--requests", type=int, default=2_000, help="requests per measured operation")
    p.add_argument(
        "--page-requests",
        type=int,
        help="pages of 100 at random offsets (default --requests; a quarter as many in the "
        "last 10%%)",
    )
    p.add_argument(
        "--ops",
        type=parse_ops,
        default=list(OPS),
        help=f"operations to measure, comma separated (default all): {','.join(OPS)}",
    )
    p.add_argument("--group-members", type=int, default=10_000, help="size the big group reaches")
    p.add_argument(
        "--groups", type=int, default=1000, help="groups seeded for the group reads (group-read)"
    )
    p.add_argument("--group-size", type=int, default=100, help="members of each of those groups")
    p.add_argument("--seed", choices=["http", "store", "bulk"], default="http")
    p.add_argument("--seed-concurrency", type=int, default=8)
    p.add_argument(
        "--concurrency",
        type=parse_levels,
        default=[2],
        help="client threads while measuring; 1,4 measures at 1 then at 4 on the same users",
    )
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers (own server)")
    p.add_argument("--threads", type=int, default=4, help="threads per worker (own server)")
    p.add_argument("--time-limit", type=float, default=1800, help="seconds; the run stops")
    p.add_argument("--random-seed", type=int, default=7)
    p.add_argument("--json", type=Path, help="also write the figures to this file as JSON")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (server log, db)")
    p.add_argument(
        "--http-client",
        choices=["lean", "requests"],
        default="lean",
        help="lean: a kept-alive http.client connection per thread (bench/lean_http.py); "
        "requests: a requests.Session per thread, about 0.4 ms more client Python per request",
    )
    p.add_argument(
        "--explain",
        action="store_true",
        help="print the database's plans of a deep startIndex page and a deep cursor page",
    )
    p.add_argument(
        "--read-rounds",
        type=int,
        default=0,
        help="measure only the reads (lookups, pages) this many times, one line per round",
    )
    args = p.parse_args(argv)
    if args.url and args.seed != "http":
        p.error(f"--seed {args.seed} needs the bench's own server")
    if args.url and not args.token:
        p.error("--url needs --token")
    if args.server_pid and not args.url:
        p.error("--server-pid is for --url (the own server's CPU is always measured)")
    if args.users < 200:
        p.error("--users: at least 200 (pages of 100 at random offsets)")

    deadline = time.monotonic() + args.time_limit
    workdir = Path(tempfile.mkdtemp(prefix="seat-bench-"))
    server = None
    seats = args.users + 2 * args.requests + 1000
    try:
        server_cpu: Callable[[], float] | None = None
        if args.url:
            base, token = args.url, args.token
            if args.server_pid:
                pid = args.server_pid
                server_cpu = lambda: process_tree_cpu(pid)  # noqa: E731
        else:
            server = Server(args.db, seats, args.workers, args.pg, workdir, args.threads)
            server.start()
            base, token = server.base, SCIM_TOKEN
            server_cpu = server.cpu
        levels = args.concurrency
        client = Client(base, token, levels[0], deadline, server_cpu, http=args.http_client)
        target = args.url or (
            f"own server, {args.db}, {args.workers} gunicorn workers x {args.threads} threads"
        )
        label = args.label or ("seat-agent" if server is not None else args.url)
        print(f"SCIM load: {label}: {target}")
        print(
            f"cpus={os.cpu_count()} users={args.users} requests/op={args.requests} "
            f"page_requests={args.page_requests or args.requests} "
            f"concurrency={','.join(map(str, levels))} "
            f"group_members={min(args.group_members, args.users)} "
            f"http_client={args.http_client} ops={','.join(args.ops)}"
        )
        if server is None:
            print(
                "running server: seeded over HTTP; the own server's steps are skipped (store "
                "or bulk seeding, VACUUM ANALYZE, server RSS, gunicorn log)"
                + ("" if server_cpu else ", and server CPU per request (no --server-pid)")
            )
        if "delete" in args.ops and "create" not in args.ops:
            print("DELETE removes users created for it just before (those creates not timed)")
        t0 = time.perf_counter()
        if args.seed == "store":
            assert server is not None
            ids, names = seed_store(server.db_url, seats, args.users, deadline)
            how = "direct through the store (1,000 users per transaction; not HTTP)"
        elif args.seed == "bulk":
            assert server is not None
            ids, names = seed_bulk(server.db_url, seats, args.users, deadline)
            how = "bulk insert of the rows a create writes (5,000 per statement; not HTTP)"
        else:
            ids, names = seed_http(client, args.users, args.seed_concurrency)
            how = f"HTTP POST /Users, {args.seed_concurrency} threads"
        seed_s = time.perf_counter() - t0
        if server is not None and server.schema:
            server.vacuum()
            how += "; then VACUUM ANALYZE"
        print(f"seeded {len(ids)} users in {seed_s:.1f} s ({len(ids) / seed_s:.0f}/s) via {how}")
        groups = None
        if "group-read" in args.ops:
            t0 = time.perf_counter()
            rng = random.Random(args.random_seed)
            groups = seed_groups(
                client, ids, args.groups, args.group_size, args.seed_concurrency, rng
            )
            print(
                f"seeded {len(groups)} groups of {min(args.group_size, len(ids))} members in "
                f"{time.perf_counter() - t0:.1f} s (HTTP POST /Groups with members)"
            )
        cursors = CursorStarts(server.db_url, 100) if server is not None else None
        if args.explain and server is not None:
            explain_pages(server.db_url, len(ids))
        load_before = Path("/proc/loadavg").read_text().split()[:3]
        probe_before = host_probe()
        if args.read_rounds:
            rounds = read_rounds(
                client,
                names,
                args.read_rounds,
                args.requests,
                random.Random(args.random_seed),
                cursors,
                groups,
            )
            print()
            print("median over the rounds:")
            for i, op in enumerate(r.op for r in rounds[0]):
                p50s = sorted(rs[i].ms(50) for rs in rounds)
                p99s = sorted(rs[i].ms(99) for rs in rounds)
                print(
                    f"  {op}: p50 {statistics.median(p50s):.1f} ms, p99 "
                    f"{statistics.median(p99s):.1f} ms (p99 of the rounds {p99s[0]:.1f} to "
                    f"{p99s[-1]:.1f})"
                )
            return 1 if any(r.errors for rs in rounds for r in rs) else 0
        runs: list[tuple[int, list[Result], float, float]] = []
        for k, level in enumerate(levels):
            client.concurrency = level
            probe = host_probe() if k else probe_before
            results = measure(
                client, ids, names, args, args.ops, args.random_seed + k, cursors, groups
            )
            runs.append((level, results, probe, host_probe()))
        probe_after = runs[-1][3]
        load_after = Path("/proc/loadavg").read_text().split()[:3]
        for level, results, before, after in runs:
            print()
            print(f"concurrency {level} (host probe {before:.1f} ms before, {after:.1f} ms after):")
            print(
                table(
                    [r.row() for r in results],
                    [
                        "op",
                        "requests",
                        "req/s",
                        "p50 ms",
                        "p95 ms",
                        "p99 ms",
                        "server CPU ms/req",
                        "errors",
                    ],
                )
            )
        if server is not None:
            rss = server.rss()
            print()
            print(
                "server RSS: "
                + ", ".join(f"{role} {pid} {kb / 1024:.0f} MiB" for pid, role, kb in rss)
                + f"; total {sum(kb for *_, kb in rss) / 1024:.0f} MiB"
            )
            print(server.log_summary())
        print(
            f"load average (1/5/15 min) before measuring {' '.join(load_before)}, "
            f"after {' '.join(load_after)} (other processes on the machine count too)"
        )
        print(
            f"host probe (fixed JSON work, lower is faster): {probe_before:.1f} ms before "
            f"measuring, {probe_after:.1f} ms after"
        )
        print(f"total run {time.monotonic() - (deadline - args.time_limit):.0f} s")
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "label": label,
                        "target": target,
                        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "users": len(ids),
                        "seeded_via": how,
                        "seed_seconds": round(seed_s, 1),
                        "http_client": args.http_client,
                        "ops": args.ops,
                        "load_average_before": load_before,
                        "load_average_after": load_after,
                        "runs": [
                            {
                                "concurrency": level,
                                "host_probe_ms_before": round(before, 2),
                                "host_probe_ms_after": round(after, 2),
                                "results": [r.summary() for r in results],
                            }
                            for level, results, before, after in runs
                        ],
                    },
                    indent=1,
                )
                + "\n"
            )
        return 1 if any(r.errors for _, results, *_ in runs for r in results) else 0
    except OutOfTime as exc:
        print(f"stopped: --time-limit reached during {exc}", file=sys.stderr)
        return 2
    finally:
        if server is not None:
            server.stop()
            server.drop()
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            for f in sorted(workdir.glob("*"), reverse=True):
                f.unlink()
            workdir.rmdir()


if __name__ == "__main__":
    sys.exit(main())
