"""Slow clients against seat-agent: a normal client's lookup latency with and without 200
slow-header sockets open, in one run (issue 12, item 5).

Starts its own server (``seat-agent serve`` on loopback, as bench/scim_load.py does), seeds
``--users`` users, then measures ``userName eq`` lookups from one kept-alive client in
``--rounds`` rounds of two phases: without slow sockets, then while ``--slow`` sockets each
send one more header line every ``--line-interval`` seconds and never finish their headers (a
socket the server closes is opened again at once, so ``--slow`` are open throughout). The
phases alternate so that the host's drift (each phase prints the host probe and the load
average) hits both alike.

    python bench/slow_clients.py                       # the serving model of this checkout
    python bench/slow_clients.py --worker gthread      # gunicorn's gthread worker, as before
    python bench/slow_clients.py --worker waitress     # waitress, for comparison

``--worker gthread`` starts the same code with gunicorn's own gthread worker (the serving
model before agent/web/front.py), ``--worker waitress`` under waitress (one process, as many
threads; ``pip install waitress`` first, it is not a dependency), to compare on one machine.
Each phase lasts ``--phase-seconds``; a request that gets no answer within
``--request-timeout`` counts as an error. Loopback only; the run is bounded by ``--time-limit``.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lean_http import TRANSPORT_ERRORS, LeanSession  # noqa: E402
from scim_load import (  # noqa: E402
    PG_BASE,
    SCIM_TOKEN,
    Result,
    Server,
    host_probe,
    seed_bulk,
    table,
)

# `seat-agent serve` with gunicorn's gthread worker in place of agent/web/front.py's.
GTHREAD_LAUNCHER = (
    "import sys, agent.web.server as s; s.worker_class = lambda *a: 'gthread'; "
    "from agent.cli import main; sys.argv[0] = 'seat-agent'; main()"
)


# The app under waitress (``pip install waitress``; not a dependency of seat-agent): one
# process, ``workers x threads`` threads, for comparison only. Takes `serve`'s arguments.
WAITRESS_LAUNCHER = """
import argparse, sys, waitress
from agent.bootstrap import ensure_tokens, open_store
from agent.app import create_app
from agent.config import load_settings
p = argparse.ArgumentParser()
p.add_argument("command"); p.add_argument("--config"); p.add_argument("--host")
p.add_argument("--port", type=int); p.add_argument("--workers", type=int)
a = p.parse_args()
settings = load_settings(a.config)
store = open_store(settings); ensure_tokens(settings, store); store.dispose()
waitress.serve(create_app(settings), host=a.host, port=a.port,
               threads=a.workers * settings.server.threads, channel_timeout=120,
               max_request_body_size=settings.server.max_body_bytes, _quiet=True)
"""


class SlowHeaderSockets:
    """``count`` sockets that each send a request line, then one header line per interval,
    and never end the headers. One the server closes is counted and opened again."""

    def __init__(self, port: int, count: int, interval: float):
        self.port = port
        self.count = count
        self.interval = interval
        self.socks: list[socket.socket | None] = [None] * count
        self.closed_by_server = 0
        self.answered_408 = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, i: int) -> None:
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            s.sendall(b"GET /scim/v2/Users HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            s.setblocking(False)
            self.socks[i] = s
        except OSError:
            self.socks[i] = None

    def start(self) -> None:
        for i in range(self.count):
            self._open(i)
        self.thread.start()

    def _run(self) -> None:
        line = 0
        while not self.stop.wait(self.interval):
            line += 1
            for i, s in enumerate(self.socks):
                if s is None:
                    self._open(i)
                    continue
                try:
                    answer = s.recv(4096)
                except BlockingIOError:
                    answer = None
                except OSError:
                    answer = b""
                if answer is None:
                    try:
                        s.send(f"X-Slow-{line}: {line}\r\n".encode())
                        continue
                    except OSError:
                        pass
                self.closed_by_server += 1
                self.answered_408 += bool(answer and answer.startswith(b"HTTP/1.1 408"))
                s.close()
                self._open(i)

    def open_now(self) -> int:
        return sum(s is not None for s in self.socks)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        for s in self.socks:
            if s is not None:
                s.close()


def lookups(
    base: str, names: list[str], phase: str, seconds: float, count: int, timeout: float
) -> Result:
    """Up to ``count`` userName lookups, one at a time, for at most ``seconds``."""
    session = LeanSession({"Authorization": f"Bearer {SCIM_TOKEN}"})
    result = Result(phase)
    rng = random.Random(7)
    end = time.monotonic() + seconds
    t0 = time.perf_counter()
    while len(result.latencies) < count and time.monotonic() < end:
        name = names[rng.randrange(len(names))]
        start = time.perf_counter()
        try:
            r = session.request(
                "GET",
                base + "/Users",
                timeout=timeout,
                params={"filter": f'userName eq "{name}"'},
            )
            good = r.ok and r.json()["totalResults"] == 1
        except TRANSPORT_ERRORS:
            good = False
            session.close()
        result.latencies.append(time.perf_counter() - start)
        result.errors += not good
    result.wall = time.perf_counter() - t0
    session.close()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--pg", default=PG_BASE, help="PostgreSQL base URL (a schema is created)")
    p.add_argument("--worker", choices=["buffering", "gthread", "waitress"], default="buffering")
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--slow", type=int, default=200, help="slow-header sockets")
    p.add_argument("--line-interval", type=float, default=1.0, help="seconds between lines")
    p.add_argument("--requests", type=int, default=1_000_000, help="lookups per phase (at most)")
    p.add_argument(
        "--phase-seconds",
        type=float,
        default=20,
        help="each phase lasts this long (longer than [server] header_timeout, so the server\n"
        "closes slow sockets during it)",
    )
    p.add_argument("--request-timeout", type=float, default=5, help="a lookup's own timeout")
    p.add_argument("--rounds", type=int, default=2, help="phases without, then with, per round")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--time-limit", type=float, default=600, help="seconds for the whole run")
    args = p.parse_args(argv)

    deadline = time.monotonic() + args.time_limit
    workdir = Path(tempfile.mkdtemp(prefix="seat-bench-slow-"))
    server = Server(args.db, args.users + 1000, args.workers, args.pg, workdir, args.threads)
    if args.worker == "gthread":
        server.command = [sys.executable, "-c", GTHREAD_LAUNCHER]
    elif args.worker == "waitress":
        server.command = [sys.executable, "-c", WAITRESS_LAUNCHER]
    slow: SlowHeaderSockets | None = None
    try:
        server.start()
        _, names = seed_bulk(server.db_url, args.users + 1000, args.users, deadline)
        print(
            f"seat-agent slow clients: {args.worker} worker, {args.db}, {args.workers} workers x "
            f"{args.threads} threads; users={args.users} slow sockets={args.slow} "
            f"(one header line every {args.line_interval:g} s) cpus={os.cpu_count()}"
        )
        print(f"host probe before (fixed JSON work, lower is faster): {host_probe():.1f} ms")
        phase = dict(seconds=args.phase_seconds, count=args.requests, timeout=args.request_timeout)
        rows: list[list[str]] = []
        closed = answered = 0
        for round_no in range(1, args.rounds + 1):
            for with_slow in (False, True):
                probe = host_probe()
                load = Path("/proc/loadavg").read_text().split()[0]
                name = f"round {round_no}: without slow sockets"
                if with_slow:
                    slow = SlowHeaderSockets(server.port, args.slow, args.line_interval)
                    slow.start()
                    time.sleep(3 * args.line_interval)  # every socket accepted and trickling
                    name = f"round {round_no}: with {slow.open_now()} slow sockets open"
                r = lookups(server.base, names, name, **phase)
                if slow is not None:
                    slow.close()
                    closed += slow.closed_by_server
                    answered += slow.answered_408
                    slow = None
                rows.append(
                    [r.op, str(len(r.latencies)), f"{len(r.latencies) / r.wall:.0f}",
                     f"{r.ms(50):.1f}", f"{r.ms(99):.1f}", str(r.errors), f"{probe:.1f}", load]
                )  # fmt: skip
                if time.monotonic() > deadline:
                    print("stopped: --time-limit reached", file=sys.stderr)
                    return 2
        print()
        print(
            table(
                rows,
                ["phase", "lookups", "per s", "p50 ms", "p99 ms", "errors (incl. timeouts)",
                 "host probe ms", "load (1 min)"],
            )
        )  # fmt: skip
        print()
        print(
            f"slow sockets closed by the server while measuring: {closed} ({answered} with a 408)"
        )
        print(server.log_summary())
        return 0
    finally:
        if slow is not None:
            slow.close()
        server.stop()
        server.drop()
        for f in sorted(workdir.glob("*"), reverse=True):
            f.unlink()
        workdir.rmdir()


if __name__ == "__main__":
    sys.exit(main())
