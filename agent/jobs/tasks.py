"""The scheduled jobs: each a thin wrapper that calls plain service functions with the
agent's parts. Tests call the service functions directly; this only binds arguments.

``keep_going`` is the scheduler's lease check: jobs that work in batches (outbox delivery,
the reduction workflows) ask it between batches and stop when this process no longer holds
the lease, so a scheduler that lost it never keeps acting beside the new holder.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from agent.bootstrap import Agent
from agent.services.reconcile import Progress, ReconcileReport, drain_queue, reconcile
from agent.storage import outbox

log = logging.getLogger("seat_agent.jobs")


def _always() -> bool:
    return True


class Jobs:
    def __init__(self, agent: Agent, keep_going: Callable[[], bool] = _always):
        self.agent = agent
        self.keep_going = keep_going

    def reconcile(
        self,
        dry_run: bool = False,
        progress: Progress | None = None,
        downstream_progress: Progress | None = None,
    ) -> ReconcileReport:
        """Recount, compare with the downstream, record the run, then propose a reduction
        when one is due. A downstream that cannot be read is a finding of the report; the
        rest still happens."""
        a = self.agent
        report = reconcile(
            a.store,
            a.seats,
            dry_run=dry_run,
            progress=progress,
            compare_downstream=a.drift_check,
            downstream_progress=downstream_progress,
        )
        if not dry_run:
            with a.store.write() as tx:
                tx.state.put(
                    "last_reconcile",
                    json.dumps({"at": a.clock().isoformat(), **report.as_dict()}, default=str)[
                        :100_000
                    ],
                )
            if a.reductions is not None:
                a.reductions.propose_if_due(a.clock())
        return report

    def drain_queue(self) -> list[str]:
        return drain_queue(self.agent.store, self.agent.seats)

    def deliver_outbox(self) -> Any:
        if self.agent.delivery is None:
            return None
        return self.agent.delivery(keep_going=self.keep_going)

    def advance_workflows(self) -> Any:
        if self.agent.reductions is None:
            return None
        return self.agent.reductions.advance_all(keep_going=self.keep_going)

    def renewal_check(self) -> Any:
        if self.agent.reductions is None:
            return None
        return self.agent.reductions.propose_if_due(self.agent.clock())

    def digest(self) -> Any:
        if self.agent.digest is None:
            return None
        return self.agent.digest()

    def purge_outbox(self) -> int:
        """Delete delivered outbox rows older than ``[scheduler] outbox_retention_days``
        (undelivered rows are never purged: an accepted change is never dropped)."""
        a = self.agent
        before = a.clock() - timedelta(days=a.settings.scheduler.outbox_retention_days)
        with a.store.write() as tx:
            purged = outbox.purge_delivered(tx, before)
        if purged:
            log.info("purged %d delivered outbox rows older than %s", purged, before.isoformat())
        return purged
