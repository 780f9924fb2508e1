"""Seats over time, per UTC day, and how close the pool is to full: pure arithmetic.

The seat ledger records every change to seats held and consumed (seed 001: "you will be
charged for the licenses you hold"; seed 003: the contracted number follows the highest number
of accounts in use). A day's figure is its high-water mark: the state in force when the day
began and every entry written during it, so a day without entries carries the day before on.

"Near full" is the admin's early warning: from ``near_full_percent`` of the licensed seats in
use, or from the point where the low-seats alert fires (``low_seats_threshold`` seats left),
whichever comes first, so the page turns amber no later than the alert email is sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from enum import Enum


@dataclass(frozen=True)
class LedgerDay:
    """What the ledger recorded on one UTC day that has entries."""

    day: date
    seats_peak: int
    consumed_peak: int
    seats_close: int  # after the day's last entry
    consumed_close: int
    queued: int  # users put in the queue that day


@dataclass(frozen=True)
class DayFigures:
    """One day of the chart. ``licensed``/``consumed`` are None before the ledger's first
    entry (the agent was not running yet)."""

    day: date
    licensed: int | None
    consumed: int | None
    queued: int
    refused: int


class PoolState(Enum):
    OK = "ok"
    NEAR_FULL = "near-full"
    FULL = "full"


def daily_figures(
    first: date,
    last: date,
    opening: tuple[int, int] | None,
    recorded: Sequence[LedgerDay],
    refused: Mapping[date, int] | None = None,
) -> list[DayFigures]:
    """Every day from ``first`` to ``last`` inclusive. ``opening`` is (seats, consumed) in force
    when ``first`` began (None before the first ledger entry); ``recorded`` the days that have
    entries; ``refused`` the refusals per day (they change nothing, so the ledger has none)."""
    by_day = {d.day: d for d in recorded}
    refused = refused or {}
    state = opening
    out: list[DayFigures] = []
    day = first
    while day <= last:
        entry = by_day.get(day)
        licensed = consumed = None
        if state is not None:
            licensed, consumed = state
        if entry is not None:
            licensed = max(licensed or 0, entry.seats_peak)
            consumed = max(consumed or 0, entry.consumed_peak)
            state = (entry.seats_close, entry.consumed_close)
        out.append(
            DayFigures(
                day=day,
                licensed=licensed,
                consumed=consumed,
                queued=entry.queued if entry else 0,
                refused=int(refused.get(day, 0)),
            )
        )
        day += timedelta(days=1)
    return out


def busiest_day(days: Sequence[DayFigures]) -> DayFigures | None:
    """The day with the most seats consumed (the earliest of equals); None without data."""
    known = [d for d in days if d.consumed is not None]
    if not known:
        return None
    return max(known, key=lambda d: (d.consumed, -d.day.toordinal()))


def near_full_from(licensed: int, near_full_percent: int, low_seats_threshold: int) -> int:
    """Seats in use from which the pool counts as near full: ``near_full_percent`` % of the
    licensed seats (rounded up), or ``licensed - low_seats_threshold`` (the low-seats alert),
    whichever is lower; never below 0."""
    by_percent = -(-licensed * near_full_percent // 100)
    by_alert = licensed - low_seats_threshold
    return max(0, min(by_percent, by_alert))


def pool_state(licensed: int, consumed: int, near_from: int) -> PoolState:
    """Full when no seat is free, near full from ``near_from`` seats in use."""
    if consumed >= licensed:
        return PoolState.FULL
    if consumed >= near_from:
        return PoolState.NEAR_FULL
    return PoolState.OK
