"""APScheduler 3 wiring: thin wrappers that call plain service functions.

Each job runs only while this process holds the scheduler lease (agent.jobs.lease), so exactly
one scheduler acts at a time whether it runs embedded beside ``seat-agent serve`` or as
``seat-agent scheduler`` under its own systemd unit, on one host or several.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from agent.bootstrap import Agent
from agent.jobs.lease import Lease, holder_id

log = logging.getLogger("seat_agent.scheduler")


def job_table(agent: Agent) -> list[tuple[str, Callable[[], Any], float]]:
    """(name, function, interval seconds) for every job; functions take no arguments."""
    from agent.jobs.tasks import Jobs

    s = agent.settings.scheduler
    tasks = Jobs(agent)
    jobs: list[tuple[str, Callable[[], Any], float]] = [
        ("reconcile", tasks.reconcile, s.reconcile_minutes * 60),
        ("drain_queue", tasks.drain_queue, s.queue_drain_seconds),
        ("deliver_outbox", tasks.deliver_outbox, s.outbox_seconds),
        ("advance_workflows", tasks.advance_workflows, s.workflow_seconds),
        ("renewal_check", tasks.renewal_check, s.renewal_check_hours * 3600),
    ]
    if agent.settings.alerts.enabled and agent.settings.alerts.digest:
        jobs.append(("digest", tasks.digest, s.digest_hours * 3600))
    return jobs


def guarded(lease: Lease, name: str, fn: Callable[[], Any]) -> Callable[[], None]:
    def run() -> None:
        if not lease.held:
            return
        try:
            fn()
        except Exception:  # a failing job must not stop the scheduler; it runs again next time
            log.exception("job %s failed", name)

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
    for name, fn, seconds in job_table(agent):
        scheduler.add_job(
            guarded(lease, name, fn),
            "interval",
            seconds=seconds,
            id=name,
            max_instances=1,
            coalesce=True,
        )
    return scheduler, lease
