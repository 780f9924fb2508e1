"""Admin use cases: seat report, license changes, queue, ledger, billing preview."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time
from decimal import Decimal
from typing import Any

from agent.config import LicenseSettings
from agent.domain.billing import (
    METERED_LOOKBACK,
    BillingPreview,
    BillingTerms,
    SeatChange,
    billing_preview,
)
from agent.services.seats import Cause, SeatEngine
from agent.storage.records import LedgerEntry, UserRecord
from agent.storage.store import Store

SEAT_CHANGING = ("licenses", "expand")
# The ledger entry Store.upgrade writes at first start: the configured count, held before.
INITIAL_CAUSE = "config"


class SeatAdmin:
    def __init__(
        self,
        store: Store,
        seats: SeatEngine,
        license_settings: LicenseSettings,
        terms: BillingTerms,
        clock: Callable[[], datetime],
    ):
        self.store = store
        self.seats = seats
        self.license = license_settings
        self.terms = terms
        self.clock = clock

    def report(self) -> dict[str, Any]:
        """Seats held, consumed, available and queued, with breakdowns by status and role."""
        with self.store.read() as tx:
            pool = tx.pool()
            breakdown = tx.seat_breakdown()
            roles = tx.role_values(True)
            queued = tx.queued_count()
        by_status: dict[str, dict[str, int]] = {}
        by_state: dict[str, int] = {}
        for status, state, holds, n in breakdown:
            entry = by_status.setdefault(status, {"users": 0, "consuming": 0})
            entry["users"] += n
            entry["consuming"] += n if holds else 0
            by_state[state] = by_state.get(state, 0) + n
        return {
            "licensed": pool.seats,
            "consumed": pool.consumed,
            "available": max(pool.seats - pool.consumed, 0),
            "queued": queued,
            "on_full": self.license.on_full,
            "max_seats": self.license.max_seats,
            "by_status": by_status,
            "by_license_state": by_state,
            "by_role": dict(sorted(roles)),
        }

    def set_licenses(
        self, seats: int, recorded_by_admin: bool = True
    ) -> tuple[int, list[UserRecord]]:
        """PUT /admin/licenses: seed 000's rule (never below consumption) and the decrease mode."""
        with self.store.write() as tx:
            return self.seats.set_licenses(
                tx,
                seats,
                decrease_mode=self.license.decrease,
                renewal_date=self.license.renewal_date,
                window_days=self.license.renewal_window_days,
                recorded_by_admin=recorded_by_admin,
                cause=Cause("admin"),
            )

    def queue(self) -> list[UserRecord]:
        with self.store.read() as tx:
            return tx.queued_users()

    def ledger(self, since: datetime | None, limit: int) -> list[LedgerEntry]:
        with self.store.read() as tx:
            return tx.ledger(since=since, limit=limit)

    def seats_at(self, moment: datetime) -> tuple[int, int] | None:
        """Seats held and consumed at a past moment, from the append-only ledger."""
        with self.store.read() as tx:
            return tx.ledger_at(moment)

    def period_peak(self, start: datetime, end: datetime) -> tuple[int, int] | None:
        """The period's high-water marks of seats held and consumed (seed 003 bills on it)."""
        with self.store.read() as tx:
            return tx.ledger_peak(start, end)

    def billing_report(self) -> dict[str, Any]:
        """The billing preview as the admin API and the CLI show it, with the period's
        high-water marks from the ledger."""
        p = self.billing()
        start = datetime.combine(p.period_start, time.min, tzinfo=UTC)
        end = datetime.combine(p.period_end, time.min, tzinfo=UTC)
        peak = self.period_peak(start, end)
        return {
            "seats_held": p.seats_held,
            "seats_consumed": p.seats_consumed,
            "peak_seats": peak[0] if peak else None,
            "peak_consumed": peak[1] if peak else None,
            "period_start": p.period_start.isoformat(),
            "period_end": p.period_end.isoformat(),
            "base_cost": str(p.base_cost),
            "addon_cost": str(p.addon_cost),
            "total": str(p.total),
            "currency": p.currency,
            "metered_users": p.metered_users,
            "metered_cost": str(p.metered_cost) if p.metered_cost is not None else None,
        }

    def billing(self) -> BillingPreview:
        now = self.clock()
        with self.store.read() as tx:
            pool = tx.pool()
            changes = tx.ledger(kinds=SEAT_CHANGING, limit=1_000_000)
            last_active: list[datetime | None] = []
            if self.license.metered:
                last_active.extend(tx.metered_last_activity(now - METERED_LOOKBACK))
        addons = [
            SeatChange(
                e.at,
                e.seats_after,
                e.cost or Decimal(0),
                initial=e.kind == "licenses" and e.cause == INITIAL_CAUSE,
            )
            for e in changes
        ]
        return billing_preview(
            self.terms, pool.seats, pool.consumed, addons, self.license.metered, last_active, now
        )
