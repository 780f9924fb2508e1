"""Exactly one scheduler acts: a database lease, tested in-process and with two processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from conftest import write_config

from agent.jobs.lease import SCHEDULER_LEASE, Lease
from agent.jobs.scheduler import build_scheduler, guarded, job_runs, job_table
from agent.storage import outbox
from agent.storage.store import Store


def test_lease_is_held_by_one_holder_until_it_lapses(make_api, clock):
    api = make_api()
    a = Lease(api.agent.store, "host-a", 30, clock)
    b = Lease(api.agent.store, "host-b", 30, clock)
    assert a.renew() is True
    assert b.renew() is False
    assert a.current_holder() == "host-a"
    clock.advance(seconds=20)
    assert a.renew() is True  # renewal extends
    clock.advance(seconds=20)
    assert b.renew() is False
    clock.advance(seconds=31)  # host-a died and stopped renewing
    assert b.renew() is True
    assert a.renew() is False
    b.release()
    assert b.current_holder() is None


def test_jobs_run_only_while_the_lease_is_held(make_api, clock):
    api = make_api()
    ran = []
    lease = Lease(api.agent.store, "me", 30, clock)
    job = guarded(lease, "x", lambda: ran.append(1))
    job()
    assert ran == []
    lease.renew()
    job()
    assert ran == [1]


def test_a_lapsed_lease_stops_jobs_and_runs_are_recorded(make_api, clock):
    api = make_api()
    ran = []
    lease = Lease(api.agent.store, "me", 30, clock)
    job = guarded(lease, "x", lambda: ran.append(1))
    lease.renew()
    job()
    clock.advance(seconds=31)  # no renewal came through: the lease lapsed by the clock
    assert lease.held and not lease.valid()
    job()
    assert ran == [1]
    with api.agent.store.read() as tx:
        runs = job_runs(tx, "x")
    assert (runs["runs"], runs["holder"], runs["by"]) == (1, "me", {"me": 1})


def test_batch_jobs_stop_when_the_lease_is_lost(make_api, clock):
    api = make_api()
    calls = []

    class Reductions:
        def advance_all(self, keep_going):
            calls.append(keep_going())
            return []

    api.agent.reductions = Reductions()
    lease = Lease(api.agent.store, "me", 30, clock)
    lease.renew()
    jobs = dict((name, fn) for name, fn, _s in job_table(api.agent, keep_going=lease.valid))
    jobs["advance_workflows"]()
    clock.advance(seconds=31)
    jobs["advance_workflows"]()
    assert calls == [True, False]  # the job itself is told, between its batches


def test_purge_job_removes_only_old_delivered_outbox_rows(make_api, clock):
    from datetime import timedelta

    from agent.jobs.tasks import Jobs
    from agent.storage.tables import outbox as outbox_table

    api = make_api()
    store = api.agent.store
    with store.write() as tx:
        for key in ("old-delivered", "new-delivered", "old-undelivered"):
            outbox.enqueue(tx, "note", key, {}, clock())
        rows = {m.key: m.seq for m in outbox.failing(tx, 0)}
        outbox.mark_delivered(tx, rows["old-delivered"], clock() - timedelta(days=8))
        outbox.mark_delivered(tx, rows["new-delivered"], clock() - timedelta(days=6))
    assert Jobs(api.agent).purge_outbox() == 1  # retention: 7 days by default
    with store.read() as tx:
        left = {r.key for r in tx.conn.execute(outbox_table.select())}
    assert left == {"new-delivered", "old-undelivered"}  # undelivered rows are never purged
    assert "purge_outbox" in {name for name, _fn, _s in job_table(api.agent)}


def test_scheduler_has_every_job(make_api):
    api = make_api()
    names = {name for name, _fn, _s in job_table(api.agent)}
    assert {
        "reconcile",
        "drain_queue",
        "deliver_outbox",
        "advance_workflows",
        "renewal_check",
        "purge_outbox",
    } <= names
    sched, lease = build_scheduler(api.agent, blocking=False, holder="t")
    assert {j.id for j in sched.get_jobs()} == names | {"lease"}


def _runs(store: Store, names: list[str]) -> dict[str, dict]:
    with store.read() as tx:
        return {n: job_runs(tx, n) for n in names}


def _wait_for(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.postgres
def test_two_scheduler_processes_on_postgres_one_acts(pg_url, tmp_path):
    """Two real scheduler processes: every job run recorded in the database is by the lease
    holder, never by the standby; reconcile runs at most once per interval between them; when
    the holder is killed, the standby takes over and the dead one's counts stop."""
    config = tmp_path / "agent.toml"
    write_config(config, pg_url, 8080)
    interval = 1.2
    with open(config, "a") as f:
        f.write(
            f"[scheduler]\nlease_seconds = 5\nreconcile_minutes = {interval / 60}\n"
            "outbox_seconds = 1\nworkflow_seconds = 1\nqueue_drain_seconds = 1\n"
        )
    store = Store.from_url(pg_url)
    store.upgrade(10, datetime.now(UTC))  # the schema exists before the first poll
    procs, logs = [], []
    started = time.monotonic()
    for i in range(2):
        log = tmp_path / f"sched{i}.log"
        logs.append(log)
        with open(log, "wb") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "agent.cli", "scheduler", "--config", str(config)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    names = ["reconcile", "deliver_outbox", "advance_workflows", "drain_queue"]
    try:
        _wait_for(lambda: _runs(store, ["reconcile"])["reconcile"]["runs"] >= 8)
        runs = _runs(store, names)
        elapsed = time.monotonic() - started
        with store.read() as tx:
            holder = outbox.lease_holder(tx, SCHEDULER_LEASE, datetime.now(UTC))
        assert holder is not None
        for name in names:
            assert runs[name]["runs"] > 0, (name, runs[name])
            # every run by the holder; the standby ran none
            assert runs[name]["by"] == {holder: runs[name]["runs"]}, (name, runs[name])
        # at most one run per interval between the two processes (two acting would double it)
        assert runs["reconcile"]["runs"] <= elapsed / interval + 1
        texts = [log.read_text() for log in logs]
        [first] = [i for i, text in enumerate(texts) if f"scheduler {holder} started" in text]
        standby = 1 - first
        procs[first].send_signal(signal.SIGKILL)  # the holder dies without releasing
        procs[first].wait()
        dead_counts = {n: _runs(store, [n])[n]["by"][holder] for n in names}

        def taken_over() -> bool:
            by = _runs(store, ["reconcile"])["reconcile"]["by"]
            return any(h != holder and n >= 3 for h, n in by.items())

        _wait_for(taken_over)
        after = _runs(store, names)
        assert "lease taken" in logs[standby].read_text()
        for name in names:
            by = after[name]["by"]
            assert by[holder] == dead_counts[name]  # the dead one did nothing more
            assert set(by) - {holder}, (name, by)  # the standby runs it now
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=15)
        store.dispose()
