"""Exactly one scheduler acts: a database lease, tested in-process and with two processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from conftest import write_config

from agent.jobs.lease import Lease
from agent.jobs.scheduler import build_scheduler, guarded, job_table


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


def test_scheduler_has_every_job(make_api):
    api = make_api()
    names = {name for name, _fn, _s in job_table(api.agent)}
    assert {
        "reconcile",
        "drain_queue",
        "deliver_outbox",
        "advance_workflows",
        "renewal_check",
    } <= names
    sched, lease = build_scheduler(api.agent, blocking=False, holder="t")
    assert {j.id for j in sched.get_jobs()} == names | {"lease"}


@pytest.mark.slow
@pytest.mark.postgres
def test_two_scheduler_processes_on_postgres_one_acts(pg_url, tmp_path):
    config = tmp_path / "agent.toml"
    write_config(config, pg_url, 8080)
    with open(config, "a") as f:
        f.write("[scheduler]\nlease_seconds = 5\nreconcile_minutes = 0.02\n")
    procs, logs = [], []
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
    try:
        deadline = time.monotonic() + 30
        holders: list[int] = []
        while time.monotonic() < deadline:
            holders = [i for i, log in enumerate(logs) if "lease taken" in log.read_text()]
            if holders:
                break
            time.sleep(0.2)
        time.sleep(3)  # both have renewed at least once by now
        holders = [i for i, log in enumerate(logs) if "lease taken" in log.read_text()]
        assert len(holders) == 1, [log.read_text() for log in logs]
        first = holders[0]
        procs[first].send_signal(signal.SIGKILL)  # the holder dies without releasing
        procs[first].wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "lease taken" not in logs[1 - first].read_text():
            time.sleep(0.2)
        assert "lease taken" in logs[1 - first].read_text()
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=15)
