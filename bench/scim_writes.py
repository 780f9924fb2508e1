"""SCIM writes against the in-memory peer: seat-agent and scim2-server in one run, A/B interleaved.

Both servers hold ``--users`` users (seat-agent seeded in bulk through the store, scim2-server
by HTTP POST), then each round times, on each server in turn and at each ``--concurrency``:
``--requests`` creates (POST /Users), PATCHes (``active`` to false, Okta's form), PUTs and
DELETEs of the users just created. The PATCHes and PUTs go to seeded users not touched before,
so every round does the same work. Latency is measured client side per request; the ratio is
seat-agent's throughput over scim2-server's in the same round (above 1: seat-agent faster).

    python bench/scim_writes.py --db sqlite --users 10000
    python bench/scim_writes.py --db postgres --users 10000 --rounds 3

scim2-server (python-scim, a test dependency) keeps everything in memory and serves a thread
per connection (HTTP/1.0, a new connection per request); seat-agent runs under gunicorn
(``--workers`` x ``--threads``) with every write committed before it answers.
``--agent-command`` runs another installation of seat-agent (an A/B of two versions).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scim_load import (  # noqa: E402
    PATCH_SCHEMA,
    PG_BASE,
    SCIM_TOKEN,
    Client,
    OutOfTime,
    Result,
    Server,
    free_port,
    host_probe,
    seed_bulk,
    seed_http,
    seed_name,
    table,
    user_body,
)

PEER_TOKEN = "bench-peer-token"
HEADERS = ["op", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "server CPU ms/req", "errors"]
OPS = ("POST /Users", "PATCH active", "PUT /Users/{id}", "DELETE /Users/{id}")


class Peer:
    """``scim2-server`` on a loopback port, one tenant."""

    def __init__(self, log: Path):
        beside = Path(sys.executable).with_name("scim2-server")
        found = str(beside) if beside.exists() else shutil.which("scim2-server")
        if not found:
            raise SystemExit("scim2-server is not installed: pip install -e '.[test]'")
        self.port = free_port()
        self.log = log
        self.command = [found, "--port", str(self.port), "--bearer-token", PEER_TOKEN]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2"

    def start(self) -> None:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        for _ in range(300):
            if self.proc.poll() is not None:
                raise RuntimeError(f"scim2-server exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("scim2-server did not start in 30 s")

    def cpu(self) -> float:
        if self.proc is None:
            return 0.0
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def write_ops(
    client: Client, ids: list[str], picked: list[int], r: int, concurrency: int, tag: str
) -> list[Result]:
    """``r`` each of create, PATCH, PUT, DELETE at ``concurrency``; PATCH and PUT on the
    seeded users ``picked`` (2r of them, none touched before)."""
    new_ids: list[str] = []

    def created(resp: Any) -> bool:
        if resp.status_code == 201:
            new_ids.append(resp.json()["id"])  # list.append is atomic
            return True
        return False

    def patched(resp: Any) -> bool:
        # scim2-server answers a PATCH with 204 (RFC 7644 §3.5.2 allows it), seat-agent 200.
        return resp.status_code == 204 or (resp.ok and resp.json().get("active") is False)

    names = [f"w{tag}-{i:05d}.{uuid.uuid4().hex[:6]}@bench.example" for i in range(r)]
    patch = {
        "schemas": [PATCH_SCHEMA],
        "Operations": [{"op": "replace", "value": {"active": False}}],
    }
    return [
        client.run(
            OPS[0],
            names,
            lambda nm: ("POST", "/Users", {"json": user_body(nm)}),
            created,
            concurrency,
        ),
        client.run(
            OPS[1],
            picked[:r],
            lambda i: ("PATCH", f"/Users/{ids[i]}", {"json": patch}),
            patched,
            concurrency,
        ),
        client.run(
            OPS[2],
            picked[r:],
            lambda i: ("PUT", f"/Users/{ids[i]}", {"json": user_body(seed_name(i), "Staff")}),
            lambda resp: resp.ok,
            concurrency,
        ),
        client.run(
            OPS[3],
            list(new_ids),
            lambda uid: ("DELETE", f"/Users/{uid}", {}),
            lambda resp: resp.status_code == 204,
            concurrency,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--pg", default=PG_BASE, help="PostgreSQL base URL (a schema is created)")
    p.add_argument("--users", type=int, default=10_000, help="users on each server first")
    p.add_argument("--requests", type=int, default=500, help="requests per operation and round")
    p.add_argument("--concurrency", default="1,4", help="client threads, comma-separated")
    p.add_argument("--rounds", type=int, default=2, help="rounds (each server in turn)")
    p.add_argument("--workers", type=int, default=2, help="seat-agent gunicorn workers")
    p.add_argument("--threads", type=int, default=4, help="threads per worker")
    p.add_argument("--agent-command", default="seat-agent", help="the seat-agent to start")
    p.add_argument("--only", choices=["agent", "peer"], help="measure one server only")
    p.add_argument("--time-limit", type=float, default=1800, help="seconds; the run stops")
    p.add_argument("--random-seed", type=int, default=7)
    args = p.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    r = args.requests
    need = 2 * r * len(levels) * args.rounds
    if need > args.users:
        p.error(f"{need} PATCH/PUT targets needed: --users at least that, or fewer --requests")

    deadline = time.monotonic() + args.time_limit
    workdir = Path(tempfile.mkdtemp(prefix="seat-writes-"))
    agent = peer = None
    seats = args.users + 2 * r * len(levels) * args.rounds + 1000
    clients: dict[str, Client] = {}
    ids: dict[str, list[str]] = {}
    try:
        if args.only != "peer":
            agent = Server(args.db, seats, args.workers, args.pg, workdir, args.threads)
            agent.command = args.agent_command.split()
            agent.start()
            t0 = time.perf_counter()
            ids["agent"], _ = seed_bulk(agent.db_url, seats, args.users, deadline)
            agent.vacuum()
            print(f"seat-agent: {args.users} users in {time.perf_counter() - t0:.1f} s (bulk)")
            clients["agent"] = Client(agent.base, SCIM_TOKEN, 1, deadline, agent.cpu, "lean")
        if args.only != "agent":
            peer = Peer(workdir / "peer.log")
            peer.start()
            clients["peer"] = Client(peer.base, PEER_TOKEN, 1, deadline, peer.cpu, "lean")
            t0 = time.perf_counter()
            ids["peer"] = seed_http(clients["peer"], args.users, 4)[0]
            print(f"scim2-server: {args.users} users in {time.perf_counter() - t0:.1f} s (HTTP)")
        print(
            f"cpus={os.cpu_count()} db={args.db} users={args.users} requests/op={r} "
            f"concurrency={levels} rounds={args.rounds} seat-agent: {args.workers} gunicorn "
            f"workers x {args.threads} threads; load average "
            f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])}"
        )
        order = random.Random(args.random_seed).sample(range(args.users), args.users)
        # (round, concurrency) -> server -> results
        runs: dict[tuple[int, int], dict[str, list[Result]]] = {}
        targets = iter(range(0, need, 2 * r))
        for rnd in range(args.rounds):
            for c in levels:
                start = next(targets)
                picked = order[start : start + 2 * r]
                probe = host_probe()
                got = runs[(rnd, c)] = {}
                # Alternate which server goes first, so neither always follows the other.
                names = list(clients) if rnd % 2 == 0 else list(reversed(clients))
                for name in names:
                    got[name] = write_ops(clients[name], ids[name], picked, r, c, f"{rnd}{c}")
                print(f"\nround {rnd + 1}, concurrency {c} (host probe {probe:.1f} ms)")
                rows = []
                for name in clients:
                    for res in got[name]:
                        res.op = f"{'seat-agent' if name == 'agent' else 'scim2-server'} {res.op}"
                        rows.append(res.row())
                print(table(rows, HEADERS))
        if len(clients) == 2:
            print("\nseat-agent throughput / scim2-server throughput (median over rounds), p99 ms:")
            ratio_rows = []
            for c in levels:
                for k, op in enumerate(OPS):
                    ratios, p99a, p99p = [], [], []
                    for rnd in range(args.rounds):
                        a, b = runs[(rnd, c)]["agent"][k], runs[(rnd, c)]["peer"][k]
                        ratios.append(_rate(a) / _rate(b) if _rate(b) else float("nan"))
                        p99a.append(a.ms(99))
                        p99p.append(b.ms(99))
                    ratio_rows.append(
                        [
                            f"c={c} {op}",
                            " ".join(f"{x:.2f}" for x in ratios),
                            f"{statistics.median(ratios):.2f}",
                            f"{statistics.median(p99a):.1f}",
                            f"{statistics.median(p99p):.1f}",
                        ]
                    )
            print(
                table(
                    ratio_rows,
                    ["op", "ratio per round", "median ratio", "agent p99", "peer p99"],
                )
            )
        if agent is not None:
            print(agent.log_summary())
        errors = sum(res.errors for got in runs.values() for rs in got.values() for res in rs)
        took = time.monotonic() - (deadline - args.time_limit)
        print(f"errors: {errors}; total run {took:.0f} s")
        return 1 if errors else 0
    except OutOfTime as exc:
        print(f"stopped: --time-limit reached during {exc}", file=sys.stderr)
        return 2
    finally:
        if agent is not None:
            agent.stop()
            agent.drop()
        if peer is not None:
            peer.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _rate(res: Result) -> float:
    return len(res.latencies) / res.wall if res.wall else 0.0


if __name__ == "__main__":
    sys.exit(main())
