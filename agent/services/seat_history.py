"""Seats over time for the status page: per UTC day from the seat ledger, the range's busiest
day, and the billing period's high-water marks (seed 003 bills on the highest number in use).

The ledger is append-only and every entry is written at the time it happens, so a day that has
ended never changes: ``ClosedDays`` keeps each process's summary of past days, and a page view
sums up only today's entries (a few grouped statements, never a row per user or per entry).
A day counts as ended ``CLOSE_MARGIN`` after midnight, for hosts whose clocks differ a little.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from agent.domain.billing import BillingTerms, period_bounds
from agent.domain.seat_history import DayFigures, LedgerDay, busiest_day, daily_figures
from agent.services.refusals import refusals_per_day
from agent.storage import history
from agent.storage.store import Store, StoreTx

CLOSE_MARGIN = timedelta(hours=1)
KEEP_DAYS = 800  # a year of chart and an annual billing period, with room


@dataclass(frozen=True)
class SeatHistory:
    days: list[DayFigures]
    busiest: DayFigures | None  # the day of the range with the most seats consumed
    period_start: date
    period_end: date  # exclusive: the next renewal
    period_peak: tuple[int, int] | None  # (seats held, consumed) high-water marks so far

    @property
    def first(self) -> date:
        return self.days[0].day

    @property
    def last(self) -> date:
        return self.days[-1].day


def midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


class ClosedDays:
    """Ledger summaries of days that have ended, per process (None: a day without entries)."""

    def __init__(self, keep: int = KEEP_DAYS):
        self.keep = keep
        self._days: dict[date, LedgerDay | None] = {}
        self._lock = threading.Lock()

    def get(self, first: date, last: date) -> list[LedgerDay] | None:
        """The recorded days of [first, last] if every one of them is known, else None."""
        out: list[LedgerDay] = []
        with self._lock:
            day = first
            while day <= last:
                if day not in self._days:
                    return None
                found = self._days[day]
                if found is not None:
                    out.append(found)
                day += timedelta(days=1)
        return out

    def put(self, first: date, last: date, recorded: list[LedgerDay]) -> None:
        by_day = {d.day: d for d in recorded}
        with self._lock:
            day = first
            while day <= last:
                self._days[day] = by_day.get(day)
                day += timedelta(days=1)
            for old in sorted(self._days)[: max(0, len(self._days) - self.keep)]:
                del self._days[old]


def _recorded(
    tx: StoreTx, first: date, today: date, now: datetime, closed: ClosedDays | None
) -> list[LedgerDay]:
    """Ledger summaries of [first, today]: ended days from ``closed`` when it has them all."""
    last_closed = today
    while last_closed >= first and midnight(last_closed + timedelta(days=1)) + CLOSE_MARGIN > now:
        last_closed -= timedelta(days=1)
    end = midnight(today + timedelta(days=1))
    if closed is None or last_closed < first:
        return history.ledger_days(tx, midnight(first), end)
    past = closed.get(first, last_closed)
    if past is None:
        past = history.ledger_days(tx, midnight(first), midnight(last_closed + timedelta(days=1)))
        closed.put(first, last_closed, past)
    recent = history.ledger_days(tx, midnight(last_closed + timedelta(days=1)), end)
    return past + recent


def seat_history(
    store: Store,
    terms: BillingTerms,
    now: datetime,
    days: int,
    closed: ClosedDays | None = None,
) -> SeatHistory:
    """The last ``days`` UTC days up to and including today, with the activations refused each
    day (a refusal changes no seat, so the ledger has none: the refusals table counts them),
    and the current billing period's high-water marks (the state in force when it began
    counts, as in ``ledger_peak``)."""
    today = now.astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    period_start, period_end = period_bounds(terms, today)
    since = min(first, period_start)
    with store.read() as tx:
        opening = history.state_before(tx, midnight(since))
        recorded = _recorded(tx, since, today, now, closed)
        refused = {day: n["refused"] for day, n in refusals_per_day(tx, midnight(first))}
    figures = daily_figures(since, today, opening, recorded, refused)
    shown = [d for d in figures if d.day >= first]
    in_period = [d for d in figures if d.day >= period_start and d.licensed is not None]
    peak = None
    if in_period:
        peak = (max(d.licensed or 0 for d in in_period), max(d.consumed or 0 for d in in_period))
    return SeatHistory(
        days=shown,
        busiest=busiest_day(shown),
        period_start=period_start,
        period_end=period_end,
        period_peak=peak,
    )
