"""Billing figures for the seats held: period bounds, prorated add-ons, metered usage.

Pure arithmetic over dates and Decimals: the agent does not bill anyone, it shows the
administrator what the vendor will charge so a license change can be weighed before it is made.

Sources (``/work/shared/seeds/``):

* seed 001: "You will be charged for the licenses you hold", used or not.
* seed 002 (Kimai Cloud): additional licences are "billed immediately, but only for the
  remaining time of your current payment period" and "always aligned with your existing
  subscription period"; on the deprecated metered plans, deactivated users are billed too if
  they were active within the last month.
* seed 003 ("maximum number system"): the contracted number follows the highest number of
  accounts in use and never falls back.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal

PERIODS = ("monthly", "annual")
CENT = Decimal("0.01")
# Seed 002 says "within the last month"; a fixed 30 days keeps the figure independent of
# month lengths.
METERED_LOOKBACK = timedelta(days=30)


@dataclass(frozen=True)
class BillingTerms:
    """The subscription's price and period. ``renewal_date`` anchors the periods (seed 002:
    new licences are aligned with the existing subscription period)."""

    price_per_seat: Decimal
    period: str
    renewal_date: date | None
    currency: str = "USD"

    def __post_init__(self) -> None:
        if self.period not in PERIODS:
            raise ValueError(f"period must be one of {', '.join(PERIODS)} (got {self.period!r})")


def _shift_months(anchor: date, months: int) -> date:
    # Always step from the anchor, not from the previous result, so a 31st anchor gives
    # Jan 31 -> Feb 28 -> Mar 31 rather than drifting to the 28th.
    index = anchor.year * 12 + (anchor.month - 1) + months
    year, month = divmod(index, 12)
    month += 1
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return date(year, month, day)


def period_bounds(terms: BillingTerms, today: date) -> tuple[date, date]:
    """The current billing period ``[start, end)``, ``end`` being the next renewal date.

    Periods step from ``renewal_date`` by whole months (monthly; day clamped to the month's end)
    or years (annual; 29 February clamped to the 28th). A renewal day starts a new period. When
    no renewal date is known the periods follow the calendar (month or year starting the 1st).
    """
    step = 1 if terms.period == "monthly" else 12
    if terms.renewal_date is not None:
        anchor = terms.renewal_date
    else:
        anchor = date(today.year, 1, 1)
    months = (today.year - anchor.year) * 12 + (today.month - anchor.month)
    k = months // step
    end = _shift_months(anchor, k * step)
    while end <= today:
        k += 1
        end = _shift_months(anchor, k * step)
    # k started at or below today's month, so the period before ``end`` starts on or before today.
    start = _shift_months(anchor, (k - 1) * step)
    return start, end


def prorated_cost(terms: BillingTerms, added_seats: int, on: date) -> Decimal:
    """What adding ``added_seats`` on ``on`` costs now (seed 002).

    Additional licences are billed only for the remaining time of the current period:
    ``price * seats * remaining_days / period_days``, rounded to cents (ROUND_HALF_UP). Seed 002's
    example: one licence added to an annual subscription 6 months old costs about half a year.
    """
    if added_seats < 0:
        raise ValueError(f"added_seats must not be negative (got {added_seats})")
    start, end = period_bounds(terms, on)
    remaining = (end - on).days
    period_days = (end - start).days
    cost = terms.price_per_seat * added_seats * remaining / period_days
    return cost.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class SeatChange:
    """One entry of the append-only seat ledger: the license count after a change at ``at`` and
    what that change was charged (the prorated cost for an increase, zero otherwise).

    ``initial`` marks the entry the agent writes at first start with the configured count: the
    contract already held before the ledger began, not a purchase made at that moment."""

    at: datetime
    seats_after: int
    cost: Decimal
    initial: bool = False


def _ordered(changes: Sequence[tuple[datetime, int]]) -> list[tuple[datetime, int]]:
    # Stable sort: entries recorded at the same instant keep ledger order, the later one wins.
    return sorted(changes, key=lambda c: c[0])


def seats_at(changes: Sequence[tuple[datetime, int]], moment: datetime) -> int | None:
    """Licenses held at ``moment`` per the ledger of ``(time, seats_after)``; None if the ledger
    has no entry at or before ``moment``."""
    held: int | None = None
    for at, seats_after in _ordered(changes):
        if at > moment:
            break
        held = seats_after
    return held


def high_water_mark(changes: Sequence[tuple[datetime, int]], start: datetime, end: datetime) -> int:
    """The most licenses held at any time in ``[start, end)``; 0 when the ledger is silent.

    Seed 003's "maximum number system" bills the highest count reached, since the contracted
    number is raised when exceeded and "cannot be decreased".
    """
    at_start = seats_at(changes, start)
    peak = at_start if at_start is not None else 0
    for at, seats_after in changes:
        if start <= at < end:
            peak = max(peak, seats_after)
    return peak


@dataclass(frozen=True)
class BillingPreview:
    """What the current period costs, for the admin page and ``GET /admin/billing``.

    ``base_cost`` is the seats held at the period's start at full price (seed 001: charged for
    the licenses held); ``addon_cost`` is the prorated charges for seats added during the period
    (seed 002). On a metered plan (seed 002, deprecated plans) ``total`` is ``metered_cost``;
    otherwise it is ``base_cost + addon_cost``. ``metered_users``/``metered_cost`` are None when
    the plan is not metered.
    """

    seats_held: int
    seats_consumed: int
    base_cost: Decimal
    addon_cost: Decimal
    total: Decimal
    period_start: date
    period_end: date
    metered_users: int | None
    metered_cost: Decimal | None
    currency: str = "USD"


def billing_preview(
    terms: BillingTerms,
    seats_held: int,
    seats_consumed: int,
    addons: Sequence[SeatChange],
    metered: bool,
    last_active: Sequence[datetime | None],
    now: datetime,
) -> BillingPreview:
    """Cost of the current period.

    ``addons`` is the seat ledger. The base is priced on the seats held at the period start per
    the ledger; with an empty ledger nothing changed, so the base is ``seats_held``. When the
    ledger begins inside the period with the ``initial`` entry (the agent's first start), those
    seats are the contract held before it and are priced for the whole period (seed 001:
    "charged for the licenses you hold"); when it begins with a purchase, no seats were held
    before it and that purchase's prorated cost is the add-on charge.

    Metered (seed 002): billed users are the active users (``seats_consumed``) plus deactivated
    users whose last activity (``last_active``, one entry per deactivated user, None when never
    active) is within the last 30 days, or later. ``now`` and the datetimes must agree on
    timezone awareness.
    """
    start, end = period_bounds(terms, now.date())
    ledger = [(c.at, c.seats_after) for c in addons]
    start_moment = datetime.combine(start, time.min, tzinfo=now.tzinfo)
    if ledger:
        held_at_start = seats_at(ledger, start_moment)
        if held_at_start is not None:
            base_seats = held_at_start
        else:
            first = min(addons, key=lambda c: c.at)
            base_seats = first.seats_after if first.initial else 0
    else:
        base_seats = seats_held
    price = terms.price_per_seat
    base_cost = (price * base_seats).quantize(CENT, rounding=ROUND_HALF_UP)
    addon_cost = sum(
        (c.cost for c in addons if start <= c.at.date() < end and not c.initial),
        start=Decimal("0"),
    ).quantize(CENT, rounding=ROUND_HALF_UP)

    metered_users: int | None = None
    metered_cost: Decimal | None = None
    if metered:
        since = now - METERED_LOOKBACK
        recent = sum(1 for t in last_active if t is not None and t >= since)
        metered_users = seats_consumed + recent
        metered_cost = (price * metered_users).quantize(CENT, rounding=ROUND_HALF_UP)
        total = metered_cost
    else:
        total = base_cost + addon_cost

    return BillingPreview(
        seats_held=seats_held,
        seats_consumed=seats_consumed,
        base_cost=base_cost,
        addon_cost=addon_cost,
        total=total,
        period_start=start,
        period_end=end,
        metered_users=metered_users,
        metered_cost=metered_cost,
        currency=terms.currency,
    )
