"""Compare the agent's view of each user with the downstream application's, and repair drift
by re-pushing (through the outbox) what the agent decided. Never deletes a downstream user it
does not know: those are reported only (they hold vendor licences all the same).

Compared per user: present, ``active``, the app status (when the application reports one) and
the role (case-insensitively). A downstream that cannot be read is itself a finding
("downstream unreachable", alerted once per outage); the seat recount does not depend on it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from agent.connectors.base import Connector, DeliveryError, RemoteUser, effective_user
from agent.services.outbox_notifier import PUSH_USER
from agent.services.reconcile import Drift, ReconcileReport, iter_users
from agent.storage import outbox
from agent.storage.store import Store, StoreTx

DRIFT_KEY = "drift"
UNREACHABLE_KEY = "downstream-unreachable"
UNREACHABLE = "downstream unreachable"


def _role(value: str | None) -> str | None:
    return value.casefold() if value else None


class DriftCheck:
    def __init__(
        self,
        store: Store,
        connector: Connector,
        fallback_role: str | None,
        clock: Callable[[], datetime],
        alerts=None,  # type: ignore[no-untyped-def]
    ):
        self.store = store
        self.connector = connector
        self.fallback_role = fallback_role
        self.clock = clock
        self.alerts = alerts

    def __call__(
        self, report: ReconcileReport, progress: Callable[[int], None] | None = None
    ) -> None:
        try:
            listed = list(self.connector.list_users())
        except DeliveryError as err:
            self._unreachable(report, str(err))
            return
        remote: dict[str, RemoteUser] = {}
        unlinked: list[RemoteUser] = []
        for r in listed:
            if r.external_id:
                remote.setdefault(r.external_id, r)
            else:
                unlinked.append(r)
        seen: set[str] = set()
        drifted: list[str] = []
        # A connector that does not manage the application's roles does not report them.
        compare_roles = bool(getattr(self.connector, "reports_roles", True))
        for batch in iter_users(self.store):
            for record in batch:
                seen.add(record.id)
                want = effective_user(record, self.fallback_role)
                found = remote.get(record.id)
                if found is None:
                    problem = Drift(
                        record.id, record.user_name, "missing downstream", "present", "absent"
                    )
                elif found.active != want.active:
                    problem = Drift(
                        record.id,
                        record.user_name,
                        "active differs",
                        str(want.active).lower(),
                        str(found.active).lower(),
                    )
                elif found.app_status is not None and found.app_status != want.app_status:
                    problem = Drift(
                        record.id,
                        record.user_name,
                        "status differs",
                        want.app_status,
                        found.app_status,
                    )
                elif compare_roles and _role(found.role) != _role(want.role):
                    problem = Drift(
                        record.id,
                        record.user_name,
                        "role differs",
                        want.role or "(none)",
                        found.role or "(none)",
                    )
                else:
                    continue
                report.drift.append(problem)
                drifted.append(record.id)
            if progress is not None:
                progress(len(batch))
        for external_id, r in remote.items():
            if external_id not in seen:
                report.drift.append(
                    Drift(
                        external_id,
                        r.user_name,
                        "unknown downstream user",
                        "absent",
                        "present",
                        remote_id=r.remote_id,
                    )
                )
        for r in unlinked:  # created in the application itself: not ours, but licensed
            report.drift.append(
                Drift(
                    None,
                    r.user_name,
                    "unknown downstream user",
                    "absent",
                    "present, no externalId",
                    remote_id=r.remote_id,
                )
            )
        with self.store.write() as tx:
            if drifted and not report.dry_run:
                now = self.clock()
                for user_id in drifted:
                    outbox.enqueue(tx, PUSH_USER, user_id, {"user_id": user_id}, now)
                report.repaired = True
            if self.alerts is not None and not report.dry_run:
                self.alerts.clear(tx, UNREACHABLE_KEY)
                self._alert(tx, report)

    def _unreachable(self, report: ReconcileReport, error: str) -> None:
        """The downstream could not be listed: a finding, and one alert per outage (cleared by
        the next reconcile that reads it)."""
        report.downstream_error = error
        report.drift.append(Drift(None, None, UNREACHABLE, "reachable", error))
        if self.alerts is None or report.dry_run:
            return
        with self.store.write() as tx:
            self.alerts.raise_alert(
                tx,
                UNREACHABLE_KEY,
                "unreachable",
                "Reconcile cannot read the application's users",
                [
                    f"Listing the application's users failed: {error}",
                    "Seats were recounted and repaired as usual; the comparison with the"
                    " application is skipped until it answers again. This alert is sent once"
                    " until a reconcile reads the application again.",
                ],
            )

    def _alert(self, tx: StoreTx, report: ReconcileReport) -> None:
        """One mail per reconcile that finds drift not reported before; each difference is
        remembered (alert_state ``drift:<id>:<problem>``) until it is gone."""
        now = self.clock()
        current = {
            f"{DRIFT_KEY}:{d.user_id or 'remote:' + (d.remote_id or '')}:{d.problem}": d
            for d in report.drift
        }
        known = outbox.alert_keys(tx, f"{DRIFT_KEY}:", "open")
        for gone in known - set(current):
            outbox.alert_changed(tx, gone, "closed", now)
        new = [d for key, d in current.items() if outbox.alert_changed(tx, key, "open", now)]
        if not new:
            return
        rows = [[d.user_name or d.user_id, d.problem, d.expected, d.found] for d in new[:50]]
        self.alerts.raise_alert(
            tx,
            DRIFT_KEY,
            f"found:{now.isoformat()}",
            f"Drift with the application: {len(new)} new differences",
            [
                f"Reconcile found {len(report.drift)} differences, {len(new)} of them new.",
                "Users seat-agent manages were re-pushed through the outbox; downstream users"
                " unknown to seat-agent are reported, never deleted.",
            ],
            (["user", "problem", "expected", "found"], rows),
        )
