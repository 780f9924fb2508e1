"""The scheduled jobs: each a thin wrapper that calls plain service functions with the
agent's parts. Tests call the service functions directly; this only binds arguments."""

from __future__ import annotations

import json
import logging
from typing import Any

from agent.bootstrap import Agent
from agent.services.reconcile import ReconcileReport, drain_queue, reconcile

log = logging.getLogger("seat_agent.jobs")


class Jobs:
    def __init__(self, agent: Agent):
        self.agent = agent

    def reconcile(self, dry_run: bool = False, progress=None) -> ReconcileReport:
        a = self.agent
        report = reconcile(
            a.store,
            a.seats,
            dry_run=dry_run,
            progress=progress,
            compare_downstream=a.drift_check,
        )
        if not dry_run:
            with a.store.write() as tx:
                tx.put_state(
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
        return self.agent.delivery()

    def advance_workflows(self) -> Any:
        if self.agent.reductions is None:
            return None
        return self.agent.reductions.advance_all()

    def renewal_check(self) -> Any:
        if self.agent.reductions is None:
            return None
        return self.agent.reductions.propose_if_due(self.agent.clock())

    def digest(self) -> Any:
        if self.agent.digest is None:
            return None
        return self.agent.digest()
