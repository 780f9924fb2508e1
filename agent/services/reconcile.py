"""Reconciliation: recount seats from the users table, re-decide users whose seat state no
longer matches the policy, and compare with the downstream application's users.

A plain function the scheduler job and ``seat-agent reconcile`` call. It streams users in
batches (keyset on ``seq``) so memory stays flat as users grow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from agent.domain import license as lic
from agent.services.seats import Cause, SeatEngine, SeatRefused, directory_state
from agent.storage.records import SeatRow, UserRecord
from agent.storage.store import Store, StoreTx

BATCH = 1000
RECONCILE = Cause("reconcile")
Progress = Callable[[int], None]


@dataclass
class Drift:
    user_id: str | None
    user_name: str | None
    problem: str  # e.g. "missing downstream", "active differs", "unknown downstream user"
    expected: str = ""
    found: str = ""
    remote_id: str | None = None  # the downstream id, for users unknown to seat-agent


# The note of a reconcile with no application to compare with.
NO_DOWNSTREAM = 'no application is set up to compare with ([downstream] type = "none")'


@dataclass
class ReconcileReport:
    users: int = 0
    counter_before: int = 0
    counter_after: int = 0
    seats: int = 0
    resettled: list[str] = field(default_factory=list)  # userNames whose seat state changed
    unresolved: list[str] = field(default_factory=list)  # wanted a seat, none to give
    drift: list[Drift] = field(default_factory=list)
    repaired: bool = False
    dry_run: bool = False
    downstream_error: str | None = None  # set when the downstream could not be read
    downstream_note: str | None = None  # why the comparison was skipped or partial

    def as_dict(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "seats": self.seats,
            "counter_before": self.counter_before,
            "counter_after": self.counter_after,
            "resettled": self.resettled,
            "unresolved": self.unresolved,
            "drift": [d.__dict__ for d in self.drift],
            "repaired": self.repaired,
            "dry_run": self.dry_run,
            "downstream_error": self.downstream_error,
            "downstream_note": self.downstream_note,
        }


class CompareDownstream(Protocol):
    """The downstream comparison (agent.services.drift.DriftCheck)."""

    def __call__(self, report: ReconcileReport, progress: Progress | None = None) -> None: ...


def iter_users(store: Store, batch: int = BATCH) -> Iterator[list[UserRecord]]:
    """All users in batches, with group names attached, in stable ``seq`` order."""
    last = 0
    while True:
        with store.read() as tx:
            page = tx.users.after(last, batch)
            if not page.items:
                return
            last = page.last_seq
            records = page.items
            names = tx.groups.names_by_user([r.id for r in records])
        for r in records:
            r.groups = [("", n) for n in names.get(r.id, [])]
        yield records


def iter_seat_rows(store: Store, batch: int = BATCH) -> Iterator[list[SeatRow]]:
    """Every user's directory state and seat state, in batches (keyset on ``seq``): columns,
    role rows and group names only, so memory and time stay flat per user."""
    after = 0
    while True:
        with store.read() as tx:
            page = tx.users.seat_rows_after(after, batch)
        if not page.items:
            return
        after = page.last_seq
        yield page.items


def _needs_settling(seats: SeatEngine, row: SeatRow) -> bool:
    """Whether the stored seat state disagrees with what the policy says now. (Role values
    are compared lower-cased; the policy compares roles case-insensitively.)"""
    policy = seats.policy
    state = row.state
    fallback = row.on_fallback and state.active
    wants = lic.wants_seat(policy, state, fallback=fallback)
    if row.holds_seat != wants and not (wants and row.license_state == "queued"):
        return True
    if row.holds_seat and lic.app_status(policy, state).lower() != row.app_status.lower():
        return True
    return False


def reconcile(
    store: Store,
    seats: SeatEngine,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    compare_downstream: CompareDownstream | None = None,
    now: Callable[[], datetime] | None = None,
    downstream_progress: Progress | None = None,
) -> ReconcileReport:
    """Recount and repair, then compare with the downstream. Counter repair and re-decisions
    happen in write transactions that hold the seat-pool lock; nothing changes with
    ``dry_run``. ``progress`` counts users of the seat pass, ``downstream_progress`` those of
    the comparison. A downstream that cannot be read is a finding in the report
    (``downstream_error``), never a failure of the recount."""
    report = ReconcileReport(dry_run=dry_run)
    mismatched: list[str] = []
    for batch in iter_seat_rows(store):
        report.users += len(batch)
        mismatched.extend(r.id for r in batch if _needs_settling(seats, r))
        if progress:
            progress(len(batch))
    if not dry_run:
        for start in range(0, len(mismatched), BATCH):
            _resettle(store, seats, mismatched[start : start + BATCH], report)
    elif mismatched:
        with store.read() as tx:
            report.resettled = [u.user_name for u in tx.users.get_many(mismatched)]
    with store.write() if not dry_run else store.read() as tx:
        pool = tx.pool.current()
        counted = tx.users.count_holding_seats()
        report.counter_before = pool.consumed
        report.counter_after = counted
        report.seats = pool.seats
        if counted != pool.consumed and not dry_run:
            clock = now or seats.clock
            at = clock()
            tx.pool.update(pool.seats, counted, at)
            tx.ledger.append(
                at=at,
                kind="reconcile",
                cause="reconcile",
                detail=f"consumed counter {pool.consumed} -> {counted} (recounted)",
                seats_after=pool.seats,
                consumed_after=counted,
            )
            report.repaired = True
        if not dry_run:
            was, counted_users = tx.users.recount()  # the unfiltered list's totalResults
            report.repaired |= was != counted_users
            seats.promote_queue(tx, RECONCILE)
    if compare_downstream is not None:
        compare_downstream(report, progress=downstream_progress)
    else:
        report.downstream_note = NO_DOWNSTREAM
    return report


def _resettle(
    store: Store, seats: SeatEngine, user_ids: list[str], report: ReconcileReport
) -> None:
    """Re-decide a batch of users in one write transaction (the seat-pool lock is held once)."""
    with store.write() as tx:
        names = tx.groups.names_by_user(user_ids)
        records = tx.users.get_many(user_ids)
        # Everything read first; the pool, ledger and seat writes go out in bulk at the end.
        with tx.pool.deferred_writes():
            for record in records:
                try:
                    seat = seats.settle(
                        tx,
                        user_id=record.id,
                        user_name=record.user_name,
                        state=directory_state(record.resource, names.get(record.id, [])),
                        previous=record.seat,
                        cause=RECONCILE,
                    )
                except SeatRefused as refusal:  # raised before anything was written for it
                    report.unresolved.append(record.user_name)
                    seats.record_refusal(tx, refusal, announce=False)
                    continue
                if seat != record.seat:
                    tx.users.set_seat(record.id, seat, seats.clock())
                    seats.notifier.user_changed(tx, record.id)
                    report.resettled.append(record.user_name)
                    report.repaired = True
        seats.promote_queue(tx, RECONCILE)


def drain_queue(store: Store, seats: SeatEngine) -> list[str]:
    """Safety net: give any free seat to the head of the queue."""
    with store.write() as tx:
        return [u.user_name for u in seats.promote_queue(tx, Cause("queue"))]


def last_reconcile(tx: StoreTx) -> str | None:
    return tx.state.get("last_reconcile")
