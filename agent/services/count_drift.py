"""Reconcile with an application that cannot list its users (``type = "webhook"``): compare
the count of active users it reports at ``[downstream] count_url`` with the users the agent
announced active to it (agent.services.webhook_events keeps that in each user's link).

A count cannot say who differs, so drift is reported (and alerted once, like the per-user
drift of agent.services.drift), never repaired: the receiver re-reads or the admin looks. The
comparison waits while events are still on their way (the application cannot agree yet), and
is skipped, saying so, without ``count_url``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from agent.connectors.base import DeliveryError
from agent.services.drift import UNREACHABLE_KEY, DriftCheck
from agent.services.reconcile import Drift, ReconcileReport
from agent.services.webhook_events import ACTIVE, WEBHOOK
from agent.storage import outbox
from agent.storage.store import Store

COUNT_DIFFERS = "active count differs"
NO_COUNT_URL = (
    "the application takes webhooks and cannot list its users, and [downstream] count_url is"
    " not set: the comparison with the application is skipped (set count_url to compare"
    " counts)"
)


class CountDriftCheck(DriftCheck):
    """The reconcile comparison for a webhook application; ``count`` is the connector's
    ``active_count`` (None without ``count_url``)."""

    def __init__(
        self,
        store: Store,
        count: Callable[[], int] | None,
        clock: Callable[[], datetime],
        alerts=None,  # type: ignore[no-untyped-def]
    ):
        self.store = store
        self.count = count
        self.clock = clock
        self.alerts = alerts

    def __call__(
        self, report: ReconcileReport, progress: Callable[[int], None] | None = None
    ) -> None:
        if self.count is None:
            report.downstream_note = NO_COUNT_URL
            return
        with self.store.read() as tx:
            waiting = outbox.depth(tx).get(WEBHOOK, 0)
        if waiting:
            report.downstream_note = (
                f"{waiting} events are still on their way to the application; the count is"
                " compared at the next reconcile after they arrive"
            )
            return
        try:
            found = self.count()
        except DeliveryError as err:
            self._unreachable(report, str(err))
            return
        with self.store.read() as tx:
            expected = outbox.count_links(tx, ACTIVE)
        report.downstream_note = f"the application reports {found} active users"
        if found != expected:
            report.drift.append(
                Drift(None, None, COUNT_DIFFERS, f"{expected} active", f"{found} active")
            )
        if self.alerts is not None and not report.dry_run:
            with self.store.write() as tx:
                self.alerts.clear(tx, UNREACHABLE_KEY)
                self._alert(tx, report)
