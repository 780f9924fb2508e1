"""The status page's health panel: what ``seat-agent status`` prints, as checks a person can
scan: who runs the scheduler and when each job last ran, the last reconcile and whether the
application answered it, the outbox backlog and its oldest failure.

Each check is ``ok``, ``warn``, ``bad`` or ``off`` (not configured), and a check that is not ok
says what the admin can do about it. Every figure comes from a handful of indexed reads
(lease row, agent_state, grouped outbox counts), none per user.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from agent.services.delivery import delivery_status
from agent.storage import outbox

# A job is late when its last run is older than this many intervals (plus the lease, the
# longest a failover takes).
LATE_AFTER_INTERVALS = 2
# Undelivered changes older than this are a backlog worth a look even without errors.
BACKLOG_WARN = timedelta(minutes=15)


@dataclass(frozen=True)
class Check:
    name: str
    state: str  # ok | warn | bad | off
    summary: str
    advice: str = ""


@dataclass(frozen=True)
class JobLine:
    name: str
    every: str
    last: str
    holder: str
    runs: int
    failed: int
    state: str  # ok | warn (late) | off (never ran)


@dataclass(frozen=True)
class Health:
    checks: list[Check]
    jobs: list[JobLine]
    failing: list[dict[str, Any]] = field(default_factory=list)

    @property
    def worst(self) -> str:
        order = ("bad", "warn", "ok", "off")
        return next((s for s in order if any(c.state == s for c in self.checks)), "ok")


def when(at: datetime | None, now: datetime) -> str:
    """'2026-12-03 05:40:12 UTC (3 min ago)'; 'never' for None."""
    if at is None:
        return "never"
    return f"{at.strftime('%Y-%m-%d %H:%M:%S UTC')} ({ago(now - at)})"


def ago(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return "just now"
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 172_800:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86_400} days ago"


def every(seconds: float) -> str:
    if seconds < 120:
        return f"every {seconds:g} s"
    if seconds < 7200:
        return f"every {seconds / 60:g} min"
    return f"every {seconds / 3600:g} h"


def _iso(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def agent_health(agent: Any) -> Health:
    """Read the health figures (the same sources as ``seat-agent status``) and judge them."""
    from agent.jobs.lease import SCHEDULER_LEASE
    from agent.jobs.scheduler import job_runs, job_table

    now: datetime = agent.clock()
    settings = agent.settings
    lease = timedelta(seconds=settings.scheduler.lease_seconds)
    table = [(name, seconds) for name, _fn, seconds in job_table(agent)]
    with agent.store.read() as tx:
        holder = outbox.lease_holder(tx, SCHEDULER_LEASE, now)
        raw_reconcile = tx.state.get("last_reconcile")
        runs = {name: job_runs(tx, name) for name, _ in table}
    delivery = delivery_status(agent.store, settings.downstream.alert_after_attempts)

    jobs: list[JobLine] = []
    for name, seconds in table:
        run = runs[name]
        last = _iso(run.get("last"))
        late = (
            last is not None
            and now - last > LATE_AFTER_INTERVALS * timedelta(seconds=seconds) + lease
        )
        failed = int(run.get("failed", 0) or 0)
        jobs.append(
            JobLine(
                name=name,
                every=every(seconds),
                last=when(last, now),
                holder=str(run.get("holder") or ""),
                runs=int(run.get("runs", 0) or 0),
                failed=failed,
                state="off" if last is None else "warn" if late else "ok",
            )
        )

    checks = [
        _scheduler_check(holder, settings.scheduler.embedded),
        *_reconcile_checks(raw_reconcile, now, settings, lease),
        *_outbox_checks(delivery, now, settings.downstream.alert_after_attempts),
    ]
    return Health(checks=checks, jobs=jobs, failing=delivery["failing"][:5])


def _scheduler_check(holder: str | None, embedded: bool) -> Check:
    if holder:
        return Check("Scheduler", "ok", f"running on {holder}")
    where = (
        "restart `seat-agent serve` (its embedded scheduler takes the lease)"
        if embedded
        else "start `seat-agent scheduler` on one host (`[scheduler] embedded = false` here)"
    )
    return Check(
        "Scheduler",
        "bad",
        "no scheduler holds the lease: reconcile, outbox delivery and workflows are not running",
        f"Check the scheduler's log, then {where}.",
    )


def _reconcile_checks(
    raw: str | None, now: datetime, settings: Any, lease: timedelta
) -> list[Check]:
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        data = None
    at = _iso(data.get("at")) if data else None
    interval = timedelta(minutes=settings.scheduler.reconcile_minutes)
    if at is None:
        reconcile = Check(
            "Last reconcile",
            "warn",
            "never",
            "Run `seat-agent reconcile` once, or check that the scheduler is running.",
        )
    elif now - at > LATE_AFTER_INTERVALS * interval + lease:
        reconcile = Check(
            "Last reconcile",
            "warn",
            when(at, now),
            f"It should run every {settings.scheduler.reconcile_minutes:g} min: check the "
            "scheduler's log, or run `seat-agent reconcile`.",
        )
    else:
        reconcile = Check("Last reconcile", "ok", when(at, now))

    if settings.downstream.type == "none":
        app = Check("Application", "off", "no downstream application configured ([downstream])")
    elif data is None:
        app = Check("Application", "warn", "not compared yet: no reconcile has run")
    elif data.get("downstream_error"):
        app = Check(
            "Application",
            "bad",
            f"did not answer at the last reconcile: {data['downstream_error']}",
            "Check `[downstream] url` and its token, and that the application is up; the "
            "next reconcile compares again.",
        )
    else:
        drift = data.get("drift") or []
        differences = f"{len(drift)} difference{'s' if len(drift) != 1 else ''} found"
        app = Check(
            "Application",
            "ok" if not drift else "warn",
            f"answered at the last reconcile; {differences}",
            "" if not drift else "`seat-agent reconcile` lists them.",
        )
    return [reconcile, app]


def _outbox_checks(delivery: dict[str, Any], now: datetime, alert_after: int) -> list[Check]:
    pending = int(delivery["pending"])
    oldest = _iso(delivery["oldest_pending"])
    if pending == 0:
        backlog = Check("Outbox backlog", "ok", "nothing waiting")
    else:
        late = oldest is not None and now - oldest > BACKLOG_WARN
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(delivery["depth"].items()))
        backlog = Check(
            "Outbox backlog",
            "warn" if late else "ok",
            f"{pending} waiting ({kinds}); oldest written {when(oldest, now)}",
            "Deliveries retry on their own; check the application and the scheduler's log."
            if late
            else "",
        )
    failing = delivery["failing"]
    if not failing:
        failures = Check("Delivery failures", "ok", "none")
    else:
        first = failing[0]
        count = f"{len(failing)}{'+' if len(failing) >= 100 else ''}"
        failures = Check(
            "Delivery failures",
            "bad",
            f"{count} change(s) failed {alert_after} or more times; oldest: {first['kind']} "
            f"{first['key']}, {first['attempts']} attempts since "
            f"{when(_iso(first['created']), now)}, last error: {first['last_error']}",
            "The agent keeps retrying with back-off; fix what the error names (the "
            "application's address, token or its refusal), then watch this line clear.",
        )
    return [backlog, failures]
