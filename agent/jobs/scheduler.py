"""APScheduler 3 wiring: thin wrappers that call plain service functions.

Each job runs only while this process holds the scheduler lease (agent.jobs.lease), so exactly
one scheduler acts at a time whether it runs embedded beside ``seat-agent serve`` or as
``seat-agent scheduler`` under its own systemd unit, on one host or several. Jobs that work in
batches check the lease between batches (``Lease.valid``), and every run is counted in the
database (``job_runs``), so "each job ran once per interval, by the holder" can be checked.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from agent.bootstrap import Agent
from agent.jobs.lease import Lease, holder_id
from agent.storage.store import StoreTx

log = logging.getLogger("seat_agent.scheduler")
JOB_STATE_PREFIX = "job:"


PURGE_HOURS = 24.0
RUNS_KEPT_PER_HOLDER = 5  # job-run counts are kept for the last few scheduler processes


def job_table(
    agent: Agent, keep_going: Callable[[], bool] | None = None
) -> list[tuple[str, Callable[[], Any], float]]:
    """(name, function, interval seconds) for every job; functions take no arguments.
    ``keep_going`` (the lease check) is handed to the jobs that work in batches."""
    from agent.jobs.tasks import Jobs

    s = agent.settings.scheduler
    tasks = Jobs(agent, keep_going) if keep_going is not None else Jobs(agent)
    jobs: list[tuple[str, Callable[[], Any], float]] = [
        ("reconcile", tasks.reconcile, s.reconcile_minutes * 60),
        ("drain_queue", tasks.drain_queue, s.queue_drain_seconds),
        ("deliver_outbox", tasks.deliver_outbox, s.outbox_seconds),
        ("advance_workflows", tasks.advance_workflows, s.workflow_seconds),
        ("renewal_check", tasks.renewal_check, s.renewal_check_hours * 3600),
        ("purge_outbox", tasks.purge_outbox, PURGE_HOURS * 3600),
    ]
    if agent.settings.alerts.enabled and agent.settings.alerts.digest:
        jobs.append(("digest", tasks.digest, s.digest_hours * 3600))
    return jobs


def job_runs(tx: StoreTx, name: str) -> dict[str, Any]:
    """What the database records of job ``name``: ``runs`` (all schedulers together),
    ``last`` (ISO time), ``holder`` (who ran it last) and ``by`` (runs per recent holder)."""
    raw = tx.state.get(f"{JOB_STATE_PREFIX}{name}")
    return json.loads(raw) if raw else {"runs": 0, "last": None, "holder": None, "by": {}}


def record_run(tx: StoreTx, name: str, holder: str, at: datetime, ok: bool) -> None:
    """Count one run of ``name`` by ``holder`` (shown by ``seat-agent status``)."""
    data = job_runs(tx, name)
    by: dict[str, int] = data.get("by") or {}
    by[holder] = by.get(holder, 0) + 1
    if len(by) > RUNS_KEPT_PER_HOLDER:
        by = dict(list(by.items())[-RUNS_KEPT_PER_HOLDER:])
    data.update(runs=int(data.get("runs", 0)) + 1, last=at.isoformat(), holder=holder, by=by)
    data["failed"] = int(data.get("failed", 0)) + (0 if ok else 1)
    tx.state.put(f"{JOB_STATE_PREFIX}{name}", json.dumps(data))


def guarded(lease: Lease, name: str, fn: Callable[[], Any]) -> Callable[[], None]:
    """Run ``fn`` only while ``lease`` is valid, and record the run in the database."""

    def run() -> None:
        if not lease.valid():
            return
        ok = True
        try:
            fn()
        except Exception:  # a failing job must not stop the scheduler; it runs again next time
            ok = False
            log.exception("job %s failed", name)
        try:
            with lease.store.write() as tx:
                record_run(tx, name, lease.holder, lease.clock(), ok)
        except Exception:
            log.exception("recording the run of job %s failed", name)

    run.__name__ = f"job_{name}"
    return run


def build_scheduler(
    agent: Agent, blocking: bool, holder: str | None = None
) -> tuple[BaseScheduler, Lease]:
    scheduler: BaseScheduler = BlockingScheduler() if blocking else BackgroundScheduler()
    lease = Lease(
        agent.store, holder or holder_id(), agent.settings.scheduler.lease_seconds, agent.clock
    )

    def renew() -> None:
        was = lease.held
        try:
            lease.renew()
        except Exception:
            lease.held = False
            log.exception("lease renewal failed")
        if lease.held != was:
            log.info("scheduler lease %s by %s", "taken" if lease.held else "lost", lease.holder)

    scheduler.add_job(
        renew,
        "interval",
        seconds=max(agent.settings.scheduler.lease_seconds / 3, 1),
        id="lease",
        max_instances=1,
        coalesce=True,
        next_run_time=agent.clock(),
    )
    for name, fn, seconds in job_table(agent, keep_going=lease.valid):
        scheduler.add_job(
            guarded(lease, name, fn),
            "interval",
            seconds=seconds,
            id=name,
            max_instances=1,
            coalesce=True,
        )
    return scheduler, lease


def workflow_schedule(agent: Agent) -> dict[str, Any]:
    """When the scheduler next advances reduction workflows, for the answer to an approval:
    who holds the scheduler lease (None: no scheduler runs now), the interval, the last run
    of ``advance_workflows`` and the next one expected (None when unknown)."""
    from agent.jobs.lease import SCHEDULER_LEASE
    from agent.storage.outbox import lease_holder

    every = agent.settings.scheduler.workflow_seconds
    now = agent.clock()
    with agent.store.read() as tx:
        holder = lease_holder(tx, SCHEDULER_LEASE, now)
        last = job_runs(tx, "advance_workflows").get("last")
    next_run = None
    if holder is not None:
        after = datetime.fromisoformat(last) + timedelta(seconds=every) if last else now
        next_run = max(after, now).isoformat()
    return {"scheduler": holder, "every_seconds": every, "last_run": last, "next_run": next_run}


def schedule_text(schedule: dict[str, Any], reduction_id: str) -> str:
    """One sentence on when an approved reduction starts."""
    every = f"every {schedule['every_seconds']:g} seconds"
    if schedule["scheduler"] is None:
        return (
            "no scheduler is running now: the workflow starts when `seat-agent serve` (with its "
            f"embedded scheduler) or `seat-agent scheduler` runs; it is advanced {every}"
        )
    return (
        f"the scheduler carries it out at its next pass, by {schedule['next_run'][:19]} UTC "
        f"({every}); follow it with `seat-agent reduce --watch {reduction_id}`"
    )
