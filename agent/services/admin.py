"""Admin use cases: seat report, license changes, queue, ledger, billing preview."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from decimal import Decimal
from typing import Any

from agent.config import LicenseSettings
from agent.domain import license as lic
from agent.domain.billing import (
    METERED_LOOKBACK,
    BillingPreview,
    BillingTerms,
    SeatChange,
    billing_preview,
)
from agent.services.refusals import refused_counts
from agent.services.seats import Cause, SeatEngine
from agent.storage import refusals as refusal_rows
from agent.storage.records import LedgerEntry, UserRecord
from agent.storage.refusals import RefusalRow
from agent.storage.store import Store

SEAT_CHANGING = ("licenses", "expand")
# The ledger entry Store.upgrade writes at first start: the configured count, held before.
INITIAL_CAUSE = "config"


@dataclass(frozen=True)
class LicenseChange:
    """The outcome of a license change, as the admin API and the CLI report it."""

    previous: int
    seats: int
    promoted: list[UserRecord]
    recorded: bool  # decrease = manual: a change made at the vendor, recorded here
    message: str
    vendor_steps: list[str] = field(default_factory=list)

    @property
    def change(self) -> str:
        if self.recorded:
            return "recorded"
        return "applied" if self.seats != self.previous else "unchanged"


@dataclass(frozen=True)
class DirectoryUser:
    """A user as the admin's list shows it: the record and since when it holds its seat."""

    record: UserRecord
    seat_since: datetime | None


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
            pool = tx.pool.current()
            breakdown = tx.users.seat_breakdown()
            roles = tx.users.role_values(True, self.seats.policy.group_roles)
            queued = tx.users.queued_count()
            refused = refused_counts(tx, self.clock())
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
            "refused": refused,
        }

    def set_licenses(
        self, seats: int, recorded_by_admin: bool = True, reduction: str | None = None
    ) -> tuple[int, list[UserRecord]]:
        """Set the license count: seed 000's rule (never below consumption) and the decrease
        mode. The reduction workflow calls it with ``recorded_by_admin=False`` and its id, which
        the ledger entry names."""
        change = self.change_licenses(
            seats, recorded_by_admin=recorded_by_admin, reduction=reduction
        )
        return change.seats, change.promoted

    def change_licenses(
        self, seats: int, recorded_by_admin: bool = True, reduction: str | None = None
    ) -> LicenseChange:
        """PUT /admin/licenses and ``seat-agent licenses set``.

        Raises InvalidLicenseCount (outside ``0..MAX_LICENSES``) or DecreaseRefused. With
        ``decrease = "manual"`` a lower count is a *recording* of a change the admin made at
        the vendor (seed 004): the result says so and carries the vendor-side steps.
        """
        lic.check_license_count(seats)
        with self.store.write() as tx:
            previous = tx.pool.current().seats
            new, promoted = self.seats.set_licenses(
                tx,
                seats,
                decrease_mode=self.license.decrease,
                renewal_date=self.license.renewal_date,
                window_days=self.license.renewal_window_days,
                recorded_by_admin=recorded_by_admin,
                cause=Cause("reduction") if reduction else Cause("admin"),
                note=f"reduction {reduction}" if reduction else None,
            )
        recorded = self.license.decrease == "manual" and new < previous
        return LicenseChange(
            previous=previous,
            seats=new,
            promoted=promoted,
            recorded=recorded,
            message=(
                f"Recorded a decrease from {previous} to {new} licenses made at the vendor "
                '(decrease = "manual": seat-agent never lowers the vendor\'s count itself).'
                if recorded
                else f"Licenses {previous} -> {new}."
                if new != previous
                else f"Licenses unchanged at {new}."
            ),
            vendor_steps=lic.manual_decrease_steps(previous, new) if recorded else [],
        )

    def users(
        self, *, state: str | None, text: str | None, after: int, limit: int
    ) -> tuple[list[DirectoryUser], int | None]:
        """One page of the admin's user list and the seq to continue after (None: the last
        page). Seat holders carry since when they hold it (their newest grant)."""
        with self.store.read() as tx:
            batch = tx.users.directory_after(after, limit, state=state, text=text)
            since = tx.ledger.seat_since([u.id for u in batch.items if u.seat.holds_seat])
            more = len(batch.items) == limit and bool(
                tx.users.directory_after(batch.last_seq, 1, state=state, text=text).items
            )
        return [DirectoryUser(u, since.get(u.id)) for u in batch.items], (
            batch.last_seq if more else None
        )

    def billable_users(self) -> Iterator[DirectoryUser]:
        """Every user holding a seat, in batches (memory stays flat): the CSV export."""
        after = 0
        while True:
            with self.store.read() as tx:
                batch = tx.users.holders_after(after, 1000)
                since = tx.ledger.seat_since([u.id for u in batch.items])
            if not batch.items:
                return
            for u in batch.items:
                yield DirectoryUser(u, since.get(u.id))
            after = batch.last_seq

    def find_user(self, key: str) -> UserRecord | None:
        """The user an id, a userName or an externalId names (None: no such user)."""
        with self.store.read() as tx:
            user_id = tx.users.find_id(key)
            return tx.users.get(user_id) if user_id is not None else None

    def refusals(
        self, since: datetime | None, after: int | None, limit: int
    ) -> tuple[list[RefusalRow], int | None]:
        """Refused demand in time order and the seq to continue after (None: no more)."""
        with self.store.read() as tx:
            found = refusal_rows.page(tx, since=since, after=after, limit=limit + 1)
        more = len(found) > limit
        return found[:limit], found[limit - 1].seq if more else None

    def queue(self) -> list[UserRecord]:
        with self.store.read() as tx:
            return tx.users.queued()

    def ledger(
        self, since: datetime | None, limit: int, after: int | None = None
    ) -> list[LedgerEntry]:
        """Ledger entries in time order: with ``since`` and/or ``after`` (a seq) the first
        ``limit`` from there (page forward by passing the last ``seq``), without either the
        ``limit`` newest."""
        with self.store.read() as tx:
            if since is not None or after is not None:
                return tx.ledger.entries(since=since, limit=limit, after=after)
            return tx.ledger.entries(limit=limit, newest_first=True)[::-1]

    def seats_at(self, moment: datetime) -> tuple[int, int] | None:
        """Seats held and consumed at a past moment, from the append-only ledger."""
        with self.store.read() as tx:
            return tx.ledger.state_at(moment)

    def period_peak(self, start: datetime, end: datetime) -> tuple[int, int] | None:
        """The period's high-water marks of seats held and consumed (seed 003 bills on it)."""
        with self.store.read() as tx:
            return tx.ledger.peak(start, end)

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
            pool = tx.pool.current()
            changes = tx.ledger.entries(kinds=SEAT_CHANGING, limit=1_000_000)
            last_active: list[datetime | None] = []
            if self.license.metered:
                last_active.extend(tx.ledger.metered_last_activity(now - METERED_LOOKBACK))
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
