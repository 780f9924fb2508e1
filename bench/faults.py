"""Fault injection for seat-agent: a PostgreSQL restart under load, and SIGKILL of the server.

Reuses bench/scim_load.py's Server (``seat-agent serve`` in its own process group with a
temporary TOML config, on a SQLite file or a fresh PostgreSQL schema in database ``test``).

    python bench/faults.py --scenario db-restart            # PostgreSQL only
    python bench/faults.py --scenario sigkill --db both     # SQLite, then PostgreSQL

db-restart
    seats limited (``--seats 200``, on_full = refuse). Client threads activate pre-created
    inactive users, deactivate them again and create active users; mid-load PostgreSQL is
    restarted (``pg_ctlcluster --skip-systemctl-redirect 15 main restart``). Clients retry a
    503 after its Retry-After (bounded: ``--max-retries``). Afterwards: no error other than 503
    (retried) and 403 (refused at the limit); /admin/seats consumed == users with licenseState
    "licensed" == users holding a seat in the database == seat_pool.consumed == the ledger's
    last consumedAfter, consumed <= seats, and every user whose last answer the client saw is in
    the state that answer said.

    It restarts the PostgreSQL server other engineers' tests use: it refuses to run while any
    other pytest / bench process is running (``--force`` overrides).

sigkill
    ``[downstream] type = "scim"`` points at a closed port, so every push_user outbox row stays
    pending. Client threads create users (each with a work email; a third inactive), the whole
    server process group (gunicorn master, workers, scheduler) gets SIGKILL mid-way, and the
    server is started again on the same database. Then: every user a client saw a 201 for
    exists and is found by its email (its user_values rows were written); every user in the
    database has user_values rows and came from a 201 or a request cut by the kill (no
    phantom); consumed == licensed count == holds_seat count == the clients' expectation ==
    the ledger's last consumedAfter; every user has at least one undelivered push_user outbox
    row (read with SQLAlchemy, and the total cross-checked with ``seat-agent status --json``).

Each prints a PASS/FAIL summary and exits non-zero on FAIL (3 = refused to run).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scim_load as sl  # noqa: E402

SEAT_EXT = "urn:ietf:params:scim:schemas:extension:seatagent:2.0:User"
LICENSED_FILTER = f'{SEAT_EXT}:licenseState eq "licensed"'
PG_RESTART = ["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "restart"]


# -- helpers -----------------------------------------------------------------------------------


def session(token: str = sl.SCIM_TOKEN) -> requests.Session:
    s = requests.Session()
    s.headers.update(
        {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/scim+json",
            "Accept": "application/scim+json",
        }
    )
    return s


@dataclass
class Tally:
    """What the clients saw, summed over threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0
    status: Counter = field(default_factory=Counter)  # final status of each logical request
    r503: int = 0  # 503 answers (each followed by a retry or, at the bound, an error)
    retried_ok: int = 0  # logical requests that succeeded after at least one 503
    exhausted: int = 0
    conn_errors: int = 0
    other: list[str] = field(default_factory=list)
    max_wait: float = 0.0

    def note_other(self, text: str) -> None:
        with self.lock:
            self.other.append(text[:300])


def send(
    s: requests.Session,
    tally: Tally,
    method: str,
    url: str,
    max_retries: int,
    max_wait: float,
    **kw: Any,
) -> requests.Response | None:
    """One logical request; on 503 sleep Retry-After (capped at max_wait) and retry, at most
    max_retries times. None when the connection failed (outcome unknown)."""
    retries = 0
    while True:
        try:
            resp = s.request(method, url, timeout=30, **kw)
        except requests.RequestException as exc:
            with tally.lock:
                tally.requests += 1
                tally.conn_errors += 1
            tally.note_other(f"{method} {url[-60:]}: {type(exc).__name__}")
            return None
        if resp.status_code != 503:
            with tally.lock:
                tally.requests += 1
                tally.status[resp.status_code] += 1
                if retries:
                    tally.retried_ok += 1
            return resp
        with tally.lock:
            tally.r503 += 1
        if retries >= max_retries:
            with tally.lock:
                tally.requests += 1
                tally.exhausted += 1
                tally.status[503] += 1
            tally.note_other(f"{method} {url[-60:]}: 503 after {retries} retries")
            return resp
        retries += 1
        try:
            wait = float(resp.headers.get("Retry-After", "1"))
        except ValueError:
            wait = 1.0
        wait = min(max(wait, 0.1), max_wait)
        with tally.lock:
            tally.max_wait = max(tally.max_wait, wait)
        time.sleep(wait)


def admin(port: int, path: str, **params: Any) -> Any:
    """An admin GET, retried while the database answers 503 (bounded)."""
    for _ in range(20):
        r = requests.get(
            f"http://127.0.0.1:{port}/admin{path}",
            headers={"Authorization": f"Bearer {sl.ADMIN_TOKEN}"},
            params=params,
            timeout=60,
        )
        if r.status_code != 503:
            r.raise_for_status()
            return r.json()
        time.sleep(1)
    raise RuntimeError(f"/admin{path} kept answering 503")


def licensed_ids(s: requests.Session, base: str) -> set[str]:
    """Ids of users with licenseState licensed, paged through the SCIM filter (bounded)."""
    out: set[str] = set()
    start = 1
    for _ in range(1000):
        r = s.get(
            base + "/Users",
            params={  # type: ignore[arg-type]
                "filter": LICENSED_FILTER,
                "startIndex": start,
                "count": 1000,
                "attributes": "id",
            },
            timeout=60,
        )
        r.raise_for_status()
        body = r.json()
        page = body.get("Resources", [])
        out.update(u["id"] for u in page)
        start += len(page)
        if not page or start > body["totalResults"]:
            break
    return out


def licensed_count(s: requests.Session, base: str) -> int:
    params: dict[str, str | int] = {"filter": LICENSED_FILTER, "count": 0}
    r = s.get(base + "/Users", params=params, timeout=60)
    r.raise_for_status()
    return int(r.json()["totalResults"])


def db_facts(db_url: str) -> dict[str, Any]:
    """Straight from the database with SQLAlchemy (not through the app)."""
    from sqlalchemy import func, select

    from agent.storage.engine import make_engine
    from agent.storage.tables import outbox, seat_pool, user_values, users

    engine = make_engine(db_url)
    try:
        with engine.connect() as c:
            pool = c.execute(select(seat_pool.c.seats, seat_pool.c.consumed)).one()
            user_rows = c.execute(select(users.c.id, users.c.user_name, users.c.active)).all()
            with_values = set(
                c.execute(
                    select(user_values.c.user_id).where(user_values.c.attr == "emails").distinct()
                ).scalars()
            )
            holds = c.execute(
                select(func.count()).select_from(users).where(users.c.holds_seat.is_(True))
            ).scalar_one()
            pending = Counter(
                c.execute(
                    select(outbox.c.key).where(
                        outbox.c.kind == "push_user", outbox.c.delivered_at.is_(None)
                    )
                ).scalars()
            )
            delivered = c.execute(
                select(func.count()).select_from(outbox).where(outbox.c.delivered_at.is_not(None))
            ).scalar_one()
            attempts = c.execute(select(func.max(outbox.c.attempts))).scalar()
    finally:
        engine.dispose()
    return {
        "seats": pool.seats,
        "consumed": pool.consumed,
        "users": {r.id: (r.user_name, bool(r.active)) for r in user_rows},
        "with_values": with_values,
        "holds_seat": holds,
        "pending_push": pending,
        "delivered": delivered,
        "max_attempts": attempts or 0,
    }


def busy_processes() -> list[str]:
    """Other pytest / bench processes (not this one, its ancestors or its children)."""
    mine = {os.getpid(), os.getppid()}
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) in mine:
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid in mine:
            continue
        if "faults.py" in cmd or ("bench/" in cmd and "--db sqlite" in cmd):
            continue  # this script, or a bench on SQLite (not using PostgreSQL)
        if "pytest" in cmd or "bench/" in cmd:
            out.append(f"{d.name}: {cmd.strip()[:150]}")
    return out


def group_pids(server: sl.Server) -> list[int]:
    assert server.proc is not None
    return [server.proc.pid, *sl.children(server.proc.pid)]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def new_server(db: str, seats: int, workers: int, pg: str, workdir: Path, extra: str) -> sl.Server:
    # The seat extension on: the checks read each user's licenseState from SCIM.
    server = sl.Server(db, seats, workers, pg, workdir, seat_extension=True)
    server.config.write_text(server.config.read_text() + extra)
    return server


def cleanup(server: sl.Server | None, workdir: Path, keep: bool) -> None:
    if server is not None:
        server.stop()
        server.drop()
    if keep:
        print(f"kept {workdir}", file=sys.stderr)
    else:
        for f in sorted(workdir.glob("*"), reverse=True):
            f.unlink()
        workdir.rmdir()


def verdict(name: str, checks: list[tuple[str, bool]]) -> bool:
    print()
    for text, ok in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {text}")
    ok = all(c for _, c in checks)
    print(f"{name}: {'PASS' if ok else 'FAIL'}")
    return ok


class PrivateCluster:
    """A throw-away PostgreSQL 15 cluster on a free loopback port (initdb as user postgres),
    so the restart scenario can run without restarting the server other engineers use."""

    BIN = Path("/usr/lib/postgresql/15/bin")

    def __init__(self) -> None:
        import shutil

        self.dir = Path(tempfile.mkdtemp(prefix="seat-fault-pg-"))
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.port = sl.free_port()
        self.opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._as_postgres(f"{self.BIN}/initdb -D {self.data} -A trust -U postgres --no-sync")
        self._as_postgres(
            f"{self.BIN}/pg_ctl -D {self.data} -o '{self.opts}' -l {self.dir}/log -w start"
        )
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["su", "postgres", "-s", "/bin/sh", "-c", cmd],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def restart_cmd(self, down_seconds: float = 0) -> list[str]:
        ctl = f"{self.BIN}/pg_ctl -D {self.data} -o '{self.opts}' -l {self.dir}/log -w"
        if down_seconds > 0:  # an outage longer than a restart: stop, wait, start
            cmd = f"{ctl} -m fast stop && sleep {down_seconds:.1f} && {ctl} start"
        else:
            cmd = f"{ctl} -m fast restart"
        return ["su", "postgres", "-s", "/bin/sh", "-c", cmd]

    def destroy(self) -> None:
        import shutil

        subprocess.run(
            [
                "su",
                "postgres",
                "-s",
                "/bin/sh",
                "-c",
                f"{self.BIN}/pg_ctl -D {self.data} -m immediate -w stop",
            ],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


# -- scenario: PostgreSQL restart ----------------------------------------------------------------


def db_restart(args: argparse.Namespace) -> bool:
    workdir = Path(tempfile.mkdtemp(prefix="seat-fault-"))
    server: sl.Server | None = None
    try:
        server = new_server("postgres", args.seats, args.workers, args.pg, workdir, "")
        server.start()
        base = server.base
        s = session()
        tally = Tally()
        # Inactive users (no seat) the clients will activate: more than there are seats.
        n_pre = args.inactive_users
        pre: list[str] = []
        for i in range(n_pre):
            body = sl.user_body(f"pre{i:05d}.user@fault.example")
            body["active"] = False
            r = s.post(base + "/Users", json=body, timeout=30)
            r.raise_for_status()
            pre.append(r.json()["id"])
        print(
            f"db-restart: PostgreSQL {args.cluster_desc}, schema {server.schema}, "
            f"seats={args.seats} on_full=refuse, "
            f"{n_pre} inactive users, {args.threads} client threads, {args.seconds:.0f} s of load,"
            f" restart at {args.restart_at:.0f} s",
            flush=True,
        )

        # Last answer each client saw per user: "licensed" | "inactive" | None (absent)
        known: dict[str, str] = {}
        unknown: set[str] = set()  # last request for it had no definitive answer
        known_lock = threading.Lock()
        stop = threading.Event()
        deadline = time.monotonic() + args.seconds
        run_id = uuid.uuid4().hex[:6]

        def client(t: int) -> None:
            rng = random.Random(args.random_seed * 100 + t)
            mine = pre[t :: args.threads]
            state = {u: "inactive" for u in mine}
            c = session()
            k = 0
            for _ in range(args.max_ops):
                if stop.is_set() or time.monotonic() > deadline:
                    break
                roll = rng.random()
                if roll < 0.3:
                    k += 1
                    body = sl.user_body(f"new{t}-{k:05d}.{run_id}@fault.example")
                    r = send(
                        c,
                        tally,
                        "POST",
                        base + "/Users",
                        args.max_retries,
                        args.max_wait,
                        json=body,
                    )
                    if r is None or r.status_code == 503:
                        continue  # unknown; a POST that never answered is checked below
                    if r.status_code == 201:
                        uid = r.json()["id"]
                        mine.append(uid)
                        st = r.json()[SEAT_EXT]["licenseState"]
                        state[uid] = st
                        with known_lock:
                            known[uid] = st
                    elif r.status_code == 409:
                        # A 503 retry whose first attempt had committed (answer lost) would
                        # look like this: never expected, as the 503 means rolled back.
                        tally.note_other(f"POST 409 {r.text[:200]}")
                    elif r.status_code != 403:
                        tally.note_other(f"POST {r.status_code} {r.text[:200]}")
                    continue
                uid = rng.choice(mine)
                want = state[uid] != "licensed" if roll < 0.75 else False
                ops = [{"op": "replace", "value": {"active": want}}]
                if rng.random() < 0.5:
                    ops = [{"op": "Replace", "path": "active", "value": str(want)}]
                r = send(
                    c,
                    tally,
                    "PATCH",
                    f"{base}/Users/{uid}",
                    args.max_retries,
                    args.max_wait,
                    json={"schemas": [sl.PATCH_SCHEMA], "Operations": ops},
                )
                with known_lock:
                    if r is None or r.status_code == 503:
                        unknown.add(uid)
                        known.pop(uid, None)
                        continue
                    if r.status_code == 200:
                        st = r.json()[SEAT_EXT]["licenseState"]
                        state[uid] = st
                        known[uid] = st
                        unknown.discard(uid)
                    elif r.status_code == 403:
                        # Refused at the limit: rolled back, the user is as before.
                        if uid not in unknown:
                            known[uid] = state[uid]
                    else:
                        tally.note_other(f"PATCH {r.status_code} {r.text[:200]}")

        threads = [
            threading.Thread(target=client, args=(t,), daemon=True) for t in range(args.threads)
        ]
        t0 = time.monotonic()
        for th in threads:
            th.start()
        time.sleep(max(0.0, args.restart_at - (time.monotonic() - t0)))
        before = dict(tally.status), tally.requests
        r0 = time.monotonic()
        res = subprocess.run(args.restart_cmd, capture_output=True, text=True, timeout=120)
        restart_s = time.monotonic() - r0
        print(
            f"PostgreSQL restarted at t={r0 - t0:.1f} s in {restart_s:.1f} s "
            f"(rc {res.returncode}{': ' + res.stderr.strip()[:200] if res.returncode else ''}); "
            f"{before[1]} requests before",
            flush=True,
        )
        for th in threads:
            th.join(args.seconds + args.max_retries * args.max_wait + 60)
        stop.set()
        wall = time.monotonic() - t0

        # -- checks ---------------------------------------------------------------------------
        time.sleep(1)
        seats = admin(server.port, "/seats")
        consumed = seats["consumed"]
        lic = licensed_count(s, base)
        ids = licensed_ids(s, base)
        ledger = sl.ledger_entries(lambda path, **kw: admin(server.port, path, **kw))
        ledger_last = ledger[-1]["consumedAfter"] if ledger else None
        facts = db_facts(server.db_url)
        expected_lic = {u for u, st in known.items() if st == "licensed" and u not in unknown}
        expected_not = {u for u, st in known.items() if st != "licensed" and u not in unknown}
        wrong = (expected_lic - ids) | (expected_not & ids)
        other_errors = len(tally.other)
        print(
            f"\n{tally.requests} logical requests in {wall:.0f} s; statuses "
            f"{dict(sorted(tally.status.items()))}; 503 answers {tally.r503} (retried, "
            f"{tally.retried_ok} then succeeded, {tally.exhausted} gave up, longest wait "
            f"{tally.max_wait:.0f} s); connection errors {tally.conn_errors}; other errors "
            f"{other_errors}"
        )
        for o in tally.other[:20]:
            print(f"  other: {o}")
        print(
            f"seats {facts['seats']}: /admin/seats consumed {consumed}, licensed (filter) {lic}, "
            f"holds_seat rows {facts['holds_seat']}, seat_pool.consumed {facts['consumed']}, "
            f"ledger last consumedAfter {ledger_last} ({len(ledger)} entries); users whose last "
            f"answer disagrees with the server: {len(wrong)} (of {len(known)} known, "
            f"{len(unknown)} unknown)"
        )
        return verdict(
            "db-restart",
            [
                (f"PostgreSQL restart succeeded ({restart_s:.1f} s)", res.returncode == 0),
                (f"the restart was seen by clients: {tally.r503} x 503", tally.r503 > 0),
                (
                    f"no error besides 503 (retried) and 403 at the limit: {other_errors}",
                    other_errors == 0 and tally.exhausted == 0 and tally.conn_errors == 0,
                ),
                (
                    f"refusals at the limit happened: {tally.status.get(403, 0)} x 403",
                    tally.status.get(403, 0) > 0,
                ),
                (
                    f"consumed {consumed} == licensed {lic} == holds_seat {facts['holds_seat']} =="
                    f" pool {facts['consumed']} == ledger {ledger_last}",
                    consumed
                    == lic
                    == len(ids)
                    == facts["holds_seat"]
                    == facts["consumed"]
                    == ledger_last,
                ),
                (f"consumed {consumed} <= seats {args.seats}", consumed <= args.seats),
                (
                    f"every user is in the state its last answer said ({len(wrong)} differ)",
                    not wrong,
                ),
            ],
        )
    finally:
        cleanup(server, workdir, args.keep)


# -- scenario: SIGKILL ---------------------------------------------------------------------------


def sigkill(db: str, args: argparse.Namespace) -> bool:
    workdir = Path(tempfile.mkdtemp(prefix="seat-fault-"))
    server: sl.Server | None = None
    dead = sl.free_port()  # nothing listens here: every push fails, rows stay pending
    extra = "\n".join(
        [
            "[downstream]",
            'type = "scim"',
            f'url = "http://127.0.0.1:{dead}/scim/v2"',
            'token = "downstream-token"',
            "timeout_seconds = 1",
            "backoff_base_seconds = 1",
            "backoff_max_seconds = 5",
            "[scheduler]",
            "outbox_seconds = 1",
            "",
        ]
    )
    try:
        server = new_server(db, args.seats, args.workers, args.pg, workdir, extra)
        server.start()
        base = server.base
        print(
            f"\nsigkill on {db}: downstream scim at closed port {dead}; {args.threads} client "
            f"threads creating users; SIGKILL after {args.kill_after} creates",
            flush=True,
        )
        tally = Tally()
        got: dict[str, tuple[str, bool]] = {}  # id -> (userName, active) for each 201
        cut: dict[str, bool] = {}  # userName -> active, for requests with no answer
        lock = threading.Lock()
        stop = threading.Event()
        deadline = time.monotonic() + args.seconds
        run_id = uuid.uuid4().hex[:6]

        def client(t: int) -> None:
            c = session()
            for k in range(args.max_ops):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                name = f"kill{t}-{k:05d}.{run_id}@fault.example"
                body = sl.user_body(name)
                body["active"] = k % 3 != 2
                try:
                    r = c.post(base + "/Users", json=body, timeout=30)
                except requests.RequestException:
                    with lock:
                        cut[name] = body["active"]
                    return  # the server is gone
                with tally.lock:
                    tally.requests += 1
                    tally.status[r.status_code] += 1
                if r.status_code == 201:
                    with lock:
                        got[r.json()["id"]] = (name, body["active"])
                else:
                    tally.note_other(f"POST {r.status_code} {r.text[:200]}")

        threads = [
            threading.Thread(target=client, args=(t,), daemon=True) for t in range(args.threads)
        ]
        t0 = time.monotonic()
        for th in threads:
            th.start()
        for _ in range(int(args.seconds * 20)):
            if time.monotonic() > deadline or (
                len(got) >= args.kill_after and time.monotonic() - t0 >= args.kill_not_before
            ):
                break
            time.sleep(0.05)
        pids = group_pids(server)
        assert server.proc is not None
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(30)
        kill_t = time.monotonic() - t0
        for th in threads:
            th.join(60)
        stop.set()
        survivors = []
        for _ in range(50):
            survivors = [p for p in pids if alive(p)]
            if not survivors:
                break
            time.sleep(0.1)
        print(
            f"SIGKILL at t={kill_t:.1f} s to process group {server.proc.pid} ({len(pids)} "
            f"processes: master, workers, scheduler); survivors {survivors}; {len(got)} x 201 "
            f"before it, {len(cut)} requests cut",
            flush=True,
        )
        (workdir / "server-before-kill.log").write_bytes(server.log.read_bytes())

        # -- restart on the same database ---------------------------------------------------
        r0 = time.monotonic()
        server.start()
        print(f"restarted on the same database in {time.monotonic() - r0:.1f} s", flush=True)
        s = session()
        missing = []
        no_email = []
        for uid, (name, _active) in got.items():
            r = s.get(f"{base}/Users/{uid}", timeout=30)
            if r.status_code != 200 or r.json().get("userName") != name:
                missing.append(uid)
                continue
            r = s.get(
                base + "/Users",
                params={"filter": f'emails[type eq "work"].value eq "{name}"', "attributes": "id"},
                timeout=30,
            )
            hits = [u["id"] for u in r.json().get("Resources", [])] if r.ok else []
            if hits != [uid]:
                no_email.append(uid)
        facts = db_facts(server.db_url)
        users = facts["users"]
        names_in_db = {name: uid for uid, (name, _a) in users.items()}
        cut_committed = {n for n in cut if n in names_in_db}
        known_names = {n for n, _a in got.values()} | set(cut)
        phantom = [n for n in names_in_db if n not in known_names]
        half = [uid for uid in users if uid not in facts["with_values"]]
        no_outbox = [uid for uid in users if facts["pending_push"].get(uid, 0) < 1]
        expected_consumed = sum(1 for _n, a in got.values() if a) + sum(
            1 for n in cut_committed if cut[n]
        )
        consumed = admin(server.port, "/seats")["consumed"]
        lic = licensed_count(s, base)
        ledger = sl.ledger_entries(lambda path, **kw: admin(server.port, path, **kw))
        ledger_last = ledger[-1]["consumedAfter"] if ledger else None
        status = subprocess.run(
            ["seat-agent", "status", "--json", "--config", str(server.config)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        try:
            status_json = json.loads(status.stdout)
            status_depth = status_json["outbox"].get("push_user", 0)
            lease = status_json.get("scheduler")
        except (ValueError, KeyError):
            status_depth = lease = None
        # The restarted server takes writes (the seat-pool lock is free).
        after = []
        for i in range(5):
            r = s.post(
                base + "/Users", json=sl.user_body(f"after{i}.{run_id}@fault.example"), timeout=30
            )
            after.append(r.status_code)
        pending_total = sum(facts["pending_push"].values())
        print(
            f"after restart: {len(users)} users in the database ({len(got)} from a 201, "
            f"{len(cut_committed)} of {len(cut)} cut requests had committed); missing "
            f"{len(missing)}; not found by email {len(no_email)}; without user_values "
            f"{len(half)}; phantom {len(phantom)}; consumed {consumed}, licensed {lic}, "
            f"holds_seat {facts['holds_seat']}, pool {facts['consumed']}, expected "
            f"{expected_consumed}, ledger last {ledger_last}; pending push_user rows "
            f"{pending_total} (status --json says {status_depth}), users without one "
            f"{len(no_outbox)}, delivered rows {facts['delivered']}, max attempts "
            f"{facts['max_attempts']}; scheduler lease holder after restart {lease}; creates after "
            f"restart {after}"
        )
        for o in tally.other[:10]:
            print(f"  other: {o}")
        return verdict(
            f"sigkill ({db})",
            [
                (f"no error answers before the kill ({len(tally.other)})", not tally.other),
                (f"every process of the group died ({len(pids)} killed)", not survivors),
                (
                    f"every 201 user exists after restart ({len(missing)} missing of {len(got)})",
                    not missing and len(got) > 0,
                ),
                (f"every 201 user found by its work email ({len(no_email)} not)", not no_email),
                (
                    f"no half-written user: all {len(users)} have user_values rows "
                    f"({len(half)} not)",
                    not half,
                ),
                (f"no phantom user ({len(phantom)})", not phantom),
                (
                    f"consumed {consumed} == licensed {lic} == holds_seat {facts['holds_seat']} =="
                    f" pool {facts['consumed']} == expected {expected_consumed} == ledger "
                    f"{ledger_last}",
                    consumed
                    == lic
                    == facts["holds_seat"]
                    == facts["consumed"]
                    == expected_consumed
                    == ledger_last,
                ),
                (
                    f"every user has a pending push_user outbox row ({len(no_outbox)} have none)",
                    not no_outbox,
                ),
                (
                    f"seat-agent status --json outbox push_user {status_depth} == {pending_total}",
                    status_depth == pending_total,
                ),
                (f"the restarted server accepts creates: {after}", after == [201] * 5),
            ],
        )
    finally:
        cleanup(server, workdir, args.keep)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--scenario", choices=["db-restart", "sigkill"], required=True)
    p.add_argument(
        "--db",
        choices=["sqlite", "postgres", "both"],
        default="both",
        help="sigkill only (db-restart is PostgreSQL)",
    )
    p.add_argument("--pg", default=sl.PG_BASE)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=6, help="client threads")
    p.add_argument(
        "--seats",
        type=int,
        default=None,
        help="seats (db-restart default 200; sigkill default 100000)",
    )
    p.add_argument("--inactive-users", type=int, default=300, help="db-restart: users to activate")
    p.add_argument("--seconds", type=float, default=40, help="load duration bound")
    p.add_argument("--restart-at", type=float, default=12, help="db-restart: seconds into load")
    p.add_argument("--kill-after", type=int, default=400, help="sigkill: 201s before the kill")
    p.add_argument(
        "--kill-not-before",
        type=float,
        default=8,
        help="sigkill: seconds of load at least (the scheduler is delivering by then)",
    )
    p.add_argument("--max-ops", type=int, default=100_000, help="per client thread, a bound")
    p.add_argument("--max-retries", type=int, default=10)
    p.add_argument("--max-wait", type=float, default=5.0, help="cap on one Retry-After wait")
    p.add_argument("--random-seed", type=int, default=5)
    p.add_argument(
        "--pg-cluster",
        choices=["shared", "private"],
        default="shared",
        help="db-restart: restart the shared 15/main cluster (pg_ctlcluster), or a private "
        "throw-away cluster on a free port (initdb; disturbs nobody)",
    )
    p.add_argument(
        "--down-seconds",
        type=float,
        default=0,
        help="db-restart with --pg-cluster private: stop, wait this long, start (a longer outage)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="db-restart even while other pytest/bench processes run",
    )
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)

    if args.scenario == "db-restart":
        args.seats = 200 if args.seats is None else args.seats
        if args.pg_cluster == "private":
            cluster = PrivateCluster()
            args.pg, args.restart_cmd = cluster.url, cluster.restart_cmd(args.down_seconds)
            args.cluster_desc = f"private cluster on port {cluster.port}"
            try:
                return 0 if db_restart(args) else 1
            finally:
                cluster.destroy()
        busy = busy_processes()
        if busy and not args.force:
            print("refusing to restart PostgreSQL while these run (--force overrides):")
            for b in busy:
                print(f"  {b}")
            return 3
        args.restart_cmd = PG_RESTART
        args.cluster_desc = "shared cluster 15/main (pg_ctlcluster restart)"
        return 0 if db_restart(args) else 1
    args.seats = 100_000 if args.seats is None else args.seats
    dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    results = {db: sigkill(db, args) for db in dbs}
    print(
        "\n" + "; ".join(f"sigkill {db}: {'PASS' if ok else 'FAIL'}" for db, ok in results.items())
    )
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
