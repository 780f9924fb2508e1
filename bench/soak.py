"""Soak test for seat-agent: sustained mixed SCIM load against a real server at N users.

Starts its own ``seat-agent serve`` (bench/scim_load.py's Server: temporary TOML, SQLite file or
a fresh PostgreSQL schema), seeds N users through the store (scim_load.seed_store), then runs a
few client threads for ``--minutes`` doing a mix of:

    filter lookups (userName eq, emails[type eq "work"].value eq), page reads (count=100 at a
    random offset), PATCH active toggles (Okta and Entra forms), PUT, group member add/remove,
    creates and deletes.

Every ``--interval`` seconds (60) it prints req/s, errors, p50/p99 per op and the server's RSS
(gunicorn master + workers + embedded scheduler, summed from /proc). At the end: total errors
(must be 0), RSS first vs last interval (must stay within ``--rss-tolerance``), and the seat
invariant: ``GET /admin/seats`` consumed == users with licenseState "licensed" (SCIM filter,
count=0) == what the clients' own bookkeeping predicts == the ledger's last consumedAfter.

    python bench/soak.py --db sqlite --users 100000 --minutes 10
    python bench/soak.py --db postgres --users 100000 --minutes 10

Each client thread owns a disjoint slice of the seeded users (so toggles, PUTs and memberships
never race each other and every response can be checked exactly). Exit status 0 = PASS.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scim_load as sl  # noqa: E402

SEAT_EXT = "urn:ietf:params:scim:schemas:extension:seatagent:2.0:User"
LICENSED_FILTER = f'{SEAT_EXT}:licenseState eq "licensed"'

OPS: list[tuple[str, int]] = [
    ("GET filter userName", 20),
    ("GET filter email", 10),
    ("GET page count=100", 12),
    ("PATCH active (Okta)", 10),
    ("PATCH active (Entra)", 10),
    ("PUT /Users/{id}", 10),
    ("PATCH group add", 6),
    ("PATCH group remove", 6),
    ("POST /Users", 8),
    ("DELETE /Users/{id}", 8),
]


class Stats:
    """Latencies and errors per op, per interval and in total."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cur: dict[str, list[float]] = defaultdict(list)
        self.cur_err: dict[str, int] = defaultdict(int)
        self.all: dict[str, list[float]] = defaultdict(list)
        self.all_err: dict[str, int] = defaultdict(int)
        self.samples: list[str] = []  # first error descriptions

    def add(self, op: str, dt: float, ok: bool, what: str = "") -> None:
        with self.lock:
            self.cur[op].append(dt)
            self.all[op].append(dt)
            if not ok:
                self.cur_err[op] += 1
                self.all_err[op] += 1
                if len(self.samples) < 30:
                    self.samples.append(f"{op}: {what}")

    def swap(self) -> tuple[dict[str, list[float]], dict[str, int]]:
        with self.lock:
            cur, err = self.cur, self.cur_err
            self.cur, self.cur_err = defaultdict(list), defaultdict(int)
        return cur, err


def ms(values: list[float], p: float) -> str:
    return f"{sl.pct(sorted(values), p) * 1000:.1f}" if values else "-"


class Worker(threading.Thread):
    """One client thread: its own session, its own slice of seeded users, its own creations."""

    def __init__(
        self,
        t: int,
        base: str,
        ids: list[str],
        names: list[str],
        owned: list[int],
        group_id: str,
        stats: Stats,
        stop: threading.Event,
        deadline: float,
        max_requests: int,
        seed: int,
        run_id: str,
    ):
        super().__init__(name=f"soak-{t}", daemon=True)
        self.t = t
        self.base = base
        self.ids, self.names, self.owned = ids, names, owned
        self.group_id = group_id
        self.stats, self.stop, self.deadline = stats, stop, deadline
        self.max_requests = max_requests
        self.rng = random.Random(seed * 1000 + t)
        self.run_id = run_id
        self.active: dict[int, bool] = {}  # seeded index -> active (absent = True)
        self.members: list[str] = []  # small: a member is removed about as often as added
        self.non_members: list[int] = list(owned)
        self.created: list[str] = []
        self.created_n = 0
        self.sent = 0
        self.session = requests.Session()
        self.session.headers.update(
            {
                "Authorization": f"Bearer {sl.SCIM_TOKEN}",
                "Content-Type": "application/scim+json",
                "Accept": "application/scim+json",
            }
        )

    # -- helpers -----------------------------------------------------------------------------

    def call(self, op: str, method: str, path: str, check: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        what = ""
        result = None
        try:
            resp = self.session.request(method, self.base + path, timeout=30, **kw)
            result = check(resp)
            ok = result is not False and result is not None
            if not ok:
                what = f"{method} {path[:90]} -> {resp.status_code} {resp.text[:200]}"
        except requests.RequestException as exc:
            ok = False
            what = f"{method} {path[:90]} -> {type(exc).__name__}: {exc}"[:300]
        except (ValueError, KeyError, TypeError) as exc:
            ok = False
            what = f"{method} {path[:90]} -> bad body: {exc}"[:300]
        self.stats.add(op, time.perf_counter() - t0, ok, what)
        self.sent += 1
        return result if ok else None

    def pick(self) -> int:
        return self.owned[self.rng.randrange(len(self.owned))]

    def is_active(self, i: int) -> bool:
        return self.active.get(i, True)

    @staticmethod
    def seat_ok(body: dict, active: bool) -> bool:
        state = (body.get(SEAT_EXT) or {}).get("licenseState")
        return body.get("active") is active and state == ("licensed" if active else "inactive")

    # -- ops -----------------------------------------------------------------------------

    def op_filter_user(self) -> None:
        i = self.rng.randrange(len(self.names))
        self.call(
            "GET filter userName",
            "GET",
            "/Users",
            lambda r: r.ok and r.json()["totalResults"] == 1,
            params={"filter": f'userName eq "{self.names[i]}"'},
        )

    def op_filter_email(self) -> None:
        i = self.rng.randrange(len(self.names))
        self.call(
            "GET filter email",
            "GET",
            "/Users",
            lambda r: r.ok and r.json()["totalResults"] == 1,
            params={"filter": f'emails[type eq "work"].value eq "{self.names[i]}"'},
        )

    def op_page(self) -> None:
        start = self.rng.randrange(1, len(self.ids) - 99)
        self.call(
            "GET page count=100",
            "GET",
            "/Users",
            lambda r: r.ok and len(r.json()["Resources"]) == 100,
            params={"startIndex": start, "count": 100},
        )

    def op_patch(self, entra: bool) -> None:
        i = self.pick()
        new = not self.is_active(i)
        ops: list[dict[str, Any]]
        if entra:
            ops = [{"op": "Replace", "path": "active", "value": "True" if new else "False"}]
        else:
            ops = [{"op": "replace", "value": {"active": new}}]
        got = self.call(
            f"PATCH active ({'Entra' if entra else 'Okta'})",
            "PATCH",
            f"/Users/{self.ids[i]}",
            lambda r: r.status_code == 200 and self.seat_ok(r.json(), new),
            json={"schemas": [sl.PATCH_SCHEMA], "Operations": ops},
        )
        if got:
            self.active[i] = new
        # On error the state is unknown: re-read it so later checks stay exact.
        else:
            self.resync(i)

    def op_put(self) -> None:
        i = self.pick()
        active = self.is_active(i)
        body = sl.user_body(self.names[i], self.rng.choice(["Engineer", "Staff Engineer", "Lead"]))
        body["active"] = active
        got = self.call(
            "PUT /Users/{id}",
            "PUT",
            f"/Users/{self.ids[i]}",
            lambda r: r.status_code == 200 and self.seat_ok(r.json(), active),
            json=body,
        )
        if not got:
            self.resync(i)

    def resync(self, i: int) -> None:
        try:
            r = self.session.get(self.base + f"/Users/{self.ids[i]}", timeout=30)
            if r.ok:
                self.active[i] = bool(r.json()["active"])
        except requests.RequestException:
            pass

    def op_group_add(self) -> None:
        if not self.non_members:
            return self.op_group_remove()
        k = self.rng.randrange(len(self.non_members))
        i = self.non_members[k]
        uid = self.ids[i]
        body = {
            "schemas": [sl.PATCH_SCHEMA],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": uid}]}],
        }
        got = self.call(
            "PATCH group add",
            "PATCH",
            f"/Groups/{self.group_id}",
            lambda r: r.status_code == 204,
            json=body,
        )
        if got:
            self.non_members[k] = self.non_members[-1]
            self.non_members.pop()
            self.members.append(uid)

    def op_group_remove(self) -> None:
        if not self.members:
            return self.op_group_add()
        uid = self.rng.choice(self.members)
        body = {
            "schemas": [sl.PATCH_SCHEMA],
            "Operations": [{"op": "remove", "path": f'members[value eq "{uid}"]'}],
        }
        got = self.call(
            "PATCH group remove",
            "PATCH",
            f"/Groups/{self.group_id}",
            lambda r: r.status_code == 204,
            json=body,
        )
        if got:
            self.members.remove(uid)
            self.non_members.append(self._index[uid])

    def op_create(self) -> None:
        self.created_n += 1
        name = f"soak{self.t}-{self.created_n:07d}.{self.run_id}@soak.example"
        got = self.call(
            "POST /Users",
            "POST",
            "/Users",
            lambda r: r.status_code == 201 and self.seat_ok(r.json(), True) and r.json()["id"],
            json=sl.user_body(name),
        )
        if got:
            self.created.append(got)

    def op_delete(self) -> None:
        if not self.created:
            return self.op_create()
        uid = self.created.pop(self.rng.randrange(len(self.created)))
        got = self.call(
            "DELETE /Users/{id}",
            "DELETE",
            f"/Users/{uid}",
            lambda r: r.status_code == 204,
        )
        if not got:
            self.created.append(uid)  # unknown: keep counting it as alive; the check re-reads

    def run(self) -> None:
        self._index = {self.ids[i]: i for i in self.owned}
        table = {
            "GET filter userName": self.op_filter_user,
            "GET filter email": self.op_filter_email,
            "GET page count=100": self.op_page,
            "PATCH active (Okta)": lambda: self.op_patch(False),
            "PATCH active (Entra)": lambda: self.op_patch(True),
            "PUT /Users/{id}": self.op_put,
            "PATCH group add": self.op_group_add,
            "PATCH group remove": self.op_group_remove,
            "POST /Users": self.op_create,
            "DELETE /Users/{id}": self.op_delete,
        }
        names = [o for o, _ in OPS]
        weights = [w for _, w in OPS]
        while (
            not self.stop.is_set()
            and time.monotonic() < self.deadline
            and self.sent < self.max_requests
        ):
            table[self.rng.choices(names, weights)[0]]()

    def expected_licensed(self) -> int:
        inactive = sum(1 for v in self.active.values() if not v)
        return len(self.owned) - inactive + len(self.created)


def rss_mib(server: sl.Server) -> tuple[float, str]:
    rows = server.rss()
    total = sum(kb for *_, kb in rows) / 1024
    detail = "+".join(f"{kb / 1024:.0f}" for *_, kb in rows)
    return total, f"{total:.0f} MiB ({len(rows)} procs: {detail})"


def admin_get(port: int, path: str, **params: Any) -> Any:
    r = requests.get(
        f"http://127.0.0.1:{port}/admin{path}",
        headers={"Authorization": f"Bearer {sl.ADMIN_TOKEN}"},
        params=params,
        timeout=120,
    )
    r.raise_for_status()
    return r.json()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--pg", default=sl.PG_BASE)
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--interval", type=float, default=60, help="seconds between reports")
    p.add_argument("--threads", type=int, default=4, help="client threads")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    p.add_argument("--max-requests", type=int, default=5_000_000, help="per thread, a bound")
    p.add_argument("--seed-time-limit", type=float, default=1800)
    p.add_argument(
        "--seed",
        choices=["store", "bulk"],
        default="store",
        help="store: through the seat engine (a ledger entry per user); bulk: executemany",
    )
    p.add_argument("--rss-tolerance", type=float, default=0.15)
    p.add_argument("--random-seed", type=int, default=11)
    p.add_argument("--json-out", help="write the summary as JSON here")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="seat-soak-"))
    seats = args.users + 200_000  # never full: every activation must succeed
    # The seat extension on: the invariant counts licensed users with a SCIM filter.
    server = sl.Server(args.db, seats, args.workers, args.pg, workdir, seat_extension=True)
    summary: dict[str, Any] = {"db": args.db, "users": args.users, "minutes": args.minutes}
    failures: list[str] = []
    try:
        server.start()
        print(
            f"seat-agent soak: {args.db}, {args.workers} gunicorn workers x 4 threads, "
            f"{args.threads} client threads, cpus={__import__('os').cpu_count()}",
            flush=True,
        )
        t0 = time.perf_counter()
        seeder = sl.seed_bulk if args.seed == "bulk" else sl.seed_store
        ids, names = seeder(
            server.db_url, seats, args.users, time.monotonic() + args.seed_time_limit
        )
        seed_s = time.perf_counter() - t0
        server.vacuum()
        print(
            f"seeded {len(ids)} users in {seed_s:.0f} s via scim_load.{seeder.__name__}"
            + ("; then VACUUM ANALYZE" if server.schema else ""),
            flush=True,
        )
        summary["seed_seconds"] = round(seed_s, 1)
        scim = sl.Client(server.base, sl.SCIM_TOKEN, 1, time.monotonic() + 60)
        g = scim.call(
            "POST", "/Groups", json={"schemas": [sl.GROUP_SCHEMA], "displayName": "Soak Group"}
        )
        g.raise_for_status()
        group_id = g.json()["id"]

        stats = Stats()
        stop = threading.Event()
        started_at = datetime.now(UTC)
        start = time.monotonic()
        deadline = start + args.minutes * 60
        run_id = uuid.uuid4().hex[:6]
        workers = [
            Worker(
                t,
                server.base,
                ids,
                names,
                list(range(t, len(ids), args.threads)),
                group_id,
                stats,
                stop,
                deadline,
                args.max_requests,
                args.random_seed,
                run_id,
            )
            for t in range(args.threads)
        ]
        for w in workers:
            w.start()
        rss_series: list[float] = []
        minutes: list[dict[str, Any]] = []
        k = 0
        max_intervals = int(args.minutes * 60 / args.interval) + 2
        while k < max_intervals:
            k += 1
            wake = start + k * args.interval
            while time.monotonic() < min(wake, deadline) and any(w.is_alive() for w in workers):
                time.sleep(min(1.0, max(0.0, min(wake, deadline) - time.monotonic())))
            elapsed = min(time.monotonic(), deadline) - (start + (k - 1) * args.interval)
            cur, err = stats.swap()
            n = sum(len(v) for v in cur.values())
            rss, rss_text = rss_mib(server)
            rss_series.append(rss)
            nerr = sum(err.values())
            load = Path("/proc/loadavg").read_text().split()[0]
            print(
                f"\n[{k:>2}] t={time.monotonic() - start:5.0f}s"
                f"  {n / max(elapsed, 1e-9):6.1f} req/s"
                f"  errors {nerr}  RSS {rss_text}  load1 {load}",
                flush=True,
            )
            print(
                "     "
                + "; ".join(
                    f"{op} {len(cur[op])} p50 {ms(cur[op], 50)} p99 {ms(cur[op], 99)}"
                    for op, _ in OPS
                    if cur.get(op)
                ),
                flush=True,
            )
            minutes.append(
                {
                    "interval": k,
                    "req_s": round(n / max(elapsed, 1e-9), 1),
                    "errors": nerr,
                    "rss_mib": round(rss),
                    "p99_ms": {op: float(ms(v, 99)) for op, v in cur.items() if v},
                }
            )
            if time.monotonic() >= deadline or not any(w.is_alive() for w in workers):
                break
        stop.set()
        for w in workers:
            w.join(60)
        wall = time.monotonic() - start

        # -- totals ------------------------------------------------------------------------
        rows = []
        total_n = 0
        for op, _ in OPS:
            lat = stats.all.get(op, [])
            total_n += len(lat)
            rows.append(
                [
                    op,
                    str(len(lat)),
                    f"{len(lat) / wall:.1f}",
                    ms(lat, 50),
                    ms(lat, 99),
                    str(stats.all_err.get(op, 0)),
                ]
            )
        total_errors = sum(stats.all_err.values())
        print()
        print(sl.table(rows, ["op", "requests", "req/s", "p50 ms", "p99 ms", "errors"]))
        print(
            f"\n{total_n} requests in {wall:.0f} s = {total_n / wall:.1f} req/s; "
            f"errors {total_errors}"
        )
        for s in stats.samples:
            print(f"  error: {s}")
        if total_errors:
            failures.append(f"{total_errors} errors")
        summary.update(
            requests=total_n,
            wall_s=round(wall),
            req_s=round(total_n / wall, 1),
            errors=total_errors,
            ops={
                r[0]: {"n": int(r[1]), "p50": r[3], "p99": r[4], "errors": int(r[5])} for r in rows
            },
            intervals=minutes,
        )

        # -- RSS ---------------------------------------------------------------------------
        first, last = rss_series[0], rss_series[-1]
        growth = (last - first) / first if first else 0.0
        flat = abs(growth) <= args.rss_tolerance
        print(
            f"RSS first interval {first:.0f} MiB, last {last:.0f} MiB, "
            f"change {growth * 100:+.1f}% (tolerance {args.rss_tolerance * 100:.0f}%): "
            f"{'flat' if flat else 'NOT FLAT'}; series " + " ".join(f"{r:.0f}" for r in rss_series)
        )
        summary.update(
            rss_first=round(first), rss_last=round(last), rss_change_pct=round(growth * 100, 1)
        )
        if not flat:
            failures.append(f"RSS changed {growth * 100:+.1f}%")

        # -- seat invariant ----------------------------------------------------------------
        seats_report = admin_get(server.port, "/seats")
        r = scim.call("GET", "/Users", params={"filter": LICENSED_FILTER, "count": 0})
        r.raise_for_status()
        licensed = r.json()["totalResults"]
        expected = sum(w.expected_licensed() for w in workers)
        ledger = sl.ledger_entries(
            lambda path, **kw: admin_get(server.port, path, **kw), since=started_at.isoformat()
        )
        ledger_last = ledger[-1]["consumedAfter"] if ledger else None
        consumed = seats_report["consumed"]
        ok = consumed == licensed == expected and ledger_last in (None, consumed)
        print(
            f"seat invariant: /admin/seats consumed {consumed}, licensed users (filter) "
            f"{licensed}, client bookkeeping {expected}, ledger last consumedAfter "
            f"{ledger_last} ({len(ledger)} ledger entries during the soak): "
            f"{'OK' if ok else 'MISMATCH'}"
        )
        summary.update(
            consumed=consumed,
            licensed=licensed,
            expected=expected,
            ledger_last=ledger_last,
            ledger_entries=len(ledger),
        )
        if not ok:
            failures.append("seat invariant")
        log = server.log_summary()
        print(log)
        summary["log"] = log
    except sl.OutOfTime as exc:
        failures.append(f"seeding ran out of time ({exc})")
    finally:
        server.stop()
        server.drop()
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            for f in sorted(workdir.glob("*"), reverse=True):
                f.unlink()
            workdir.rmdir()
    summary["result"] = "FAIL" if failures else "PASS"
    summary["failures"] = failures
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(summary, indent=2))
    print(f"\nSOAK {summary['result']}" + (f": {'; '.join(failures)}" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
