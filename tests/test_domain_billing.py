"""Billing figures: period bounds, seed 002 proration and metering, seed 003 high-water mark."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from agent.domain.billing import (
    BillingTerms,
    SeatChange,
    billing_preview,
    high_water_mark,
    period_bounds,
    prorated_cost,
    seats_at,
)


def annual(renewal: date | None, price: str = "120.00") -> BillingTerms:
    return BillingTerms(price_per_seat=Decimal(price), period="annual", renewal_date=renewal)


def monthly(renewal: date | None, price: str = "10.00") -> BillingTerms:
    return BillingTerms(price_per_seat=Decimal(price), period="monthly", renewal_date=renewal)


def at(y: int, m: int, d: int, h: int = 12) -> datetime:
    return datetime(y, m, d, h, tzinfo=UTC)


# --- period_bounds ----------------------------------------------------------------------------


def test_annual_period_ends_at_next_renewal():
    assert period_bounds(annual(date(2026, 1, 1)), date(2025, 7, 2)) == (
        date(2025, 1, 1),
        date(2026, 1, 1),
    )


def test_anchor_in_the_past_steps_forward():
    assert period_bounds(annual(date(2023, 3, 15)), date(2025, 7, 2)) == (
        date(2025, 3, 15),
        date(2026, 3, 15),
    )


def test_renewal_day_starts_a_new_period():
    assert period_bounds(monthly(date(2025, 5, 10)), date(2025, 6, 10)) == (
        date(2025, 6, 10),
        date(2025, 7, 10),
    )
    assert period_bounds(monthly(date(2025, 5, 10)), date(2025, 6, 9)) == (
        date(2025, 5, 10),
        date(2025, 6, 10),
    )


def test_monthly_on_the_31st_clamps_to_month_end_without_drift():
    terms = monthly(date(2025, 1, 31))
    assert period_bounds(terms, date(2025, 2, 15)) == (date(2025, 1, 31), date(2025, 2, 28))
    assert period_bounds(terms, date(2025, 3, 1)) == (date(2025, 2, 28), date(2025, 3, 31))


def test_annual_on_29_february_clamps():
    assert period_bounds(annual(date(2024, 2, 29)), date(2025, 1, 10)) == (
        date(2024, 2, 29),
        date(2025, 2, 28),
    )


def test_without_renewal_date_periods_follow_the_calendar():
    assert period_bounds(monthly(None), date(2025, 6, 18)) == (date(2025, 6, 1), date(2025, 7, 1))
    assert period_bounds(annual(None), date(2025, 6, 18)) == (date(2025, 1, 1), date(2026, 1, 1))


def test_unknown_period_rejected():
    with pytest.raises(ValueError, match="period"):
        BillingTerms(Decimal("1"), "weekly", None)


# --- seed 002 proration -----------------------------------------------------------------------


def test_seed002_licence_added_to_six_month_old_annual_subscription_costs_about_half():
    terms = annual(date(2026, 1, 1), price="120.00")
    cost = prorated_cost(terms, 1, date(2025, 7, 2))  # 183 of 365 days remain
    assert cost == Decimal("60.16")
    assert Decimal("59") < cost < Decimal("61")


def test_prorated_cost_scales_with_seats_and_is_full_price_on_the_first_day():
    terms = monthly(date(2025, 7, 1), price="10.00")
    assert prorated_cost(terms, 3, date(2025, 6, 1)) == Decimal("30.00")
    # 15 of 30 June days remain: 3 * 10 * 15 / 30.
    assert prorated_cost(terms, 3, date(2025, 6, 16)) == Decimal("15.00")
    assert prorated_cost(terms, 0, date(2025, 6, 16)) == Decimal("0.00")


def test_prorated_cost_rounds_half_up_to_cents():
    # 1 day of a 30-day June at 0.15 -> 0.005 -> 0.01 (banker's rounding would give 0.00).
    terms = monthly(date(2025, 7, 1), price="0.15")
    assert prorated_cost(terms, 1, date(2025, 6, 30)) == Decimal("0.01")


def test_prorated_cost_rejects_negative_seats():
    with pytest.raises(ValueError):
        prorated_cost(monthly(None), -1, date(2025, 6, 1))


# --- ledger -----------------------------------------------------------------------------------


LEDGER = [(at(2025, 1, 1), 10), (at(2025, 3, 1), 14), (at(2025, 4, 1), 12)]


def test_seats_at_reads_the_ledger():
    assert seats_at(LEDGER, at(2024, 12, 31)) is None
    assert seats_at(LEDGER, at(2025, 1, 1)) == 10
    assert seats_at(LEDGER, at(2025, 3, 15)) == 14
    assert seats_at(list(reversed(LEDGER)), at(2025, 5, 1)) == 12


def test_seats_at_same_instant_later_entry_wins():
    t = at(2025, 1, 1)
    assert seats_at([(t, 10), (t, 11)], t) == 11


def test_seed003_high_water_mark_is_the_peak_in_the_period():
    assert high_water_mark(LEDGER, at(2025, 2, 1), at(2025, 5, 1)) == 14
    assert high_water_mark(LEDGER, at(2025, 3, 15), at(2025, 5, 1)) == 14  # held at start
    assert high_water_mark(LEDGER, at(2025, 4, 2), at(2025, 5, 1)) == 12
    assert high_water_mark(LEDGER, at(2025, 1, 2), at(2025, 3, 1)) == 10  # end exclusive
    assert high_water_mark([], at(2025, 1, 1), at(2025, 2, 1)) == 0


# --- billing_preview --------------------------------------------------------------------------


def test_preview_base_plus_addons_in_current_period():
    terms = monthly(date(2025, 7, 1), price="10.00")
    addons = [
        SeatChange(at(2025, 5, 1), 8, Decimal("80.00")),  # previous period
        SeatChange(at(2025, 6, 16), 10, Decimal("10.00")),
    ]
    preview = billing_preview(terms, 10, 9, addons, False, [], at(2025, 6, 20))
    assert (preview.period_start, preview.period_end) == (date(2025, 6, 1), date(2025, 7, 1))
    assert preview.base_cost == Decimal("80.00")  # 8 seats held when the period began
    assert preview.addon_cost == Decimal("10.00")
    assert preview.total == Decimal("90.00")
    assert preview.metered_users is None and preview.metered_cost is None
    assert (preview.seats_held, preview.seats_consumed) == (10, 9)


def test_preview_with_empty_ledger_bills_seats_held():
    preview = billing_preview(monthly(None), 7, 3, [], False, [], at(2025, 6, 20))
    assert preview.base_cost == Decimal("70.00")
    assert preview.total == Decimal("70.00")


def test_preview_ledger_starting_inside_period_has_no_base():
    terms = monthly(date(2025, 7, 1))
    addons = [SeatChange(at(2025, 6, 16), 5, Decimal("25.00"))]
    preview = billing_preview(terms, 5, 5, addons, False, [], at(2025, 6, 20))
    assert preview.base_cost == Decimal("0.00")
    assert preview.total == Decimal("25.00")


def test_seed002_metered_bills_active_plus_recently_active_deactivated_users():
    now = at(2025, 6, 30)
    last_active = [
        now - timedelta(days=3),  # logged in this month
        now - timedelta(days=30),  # exactly a month ago: still billed
        now - timedelta(days=31),  # too old
        None,  # never active
        now + timedelta(hours=1),  # "or later"
    ]
    preview = billing_preview(monthly(None), 10, 4, [], True, last_active, now)
    assert preview.metered_users == 4 + 3
    assert preview.metered_cost == Decimal("70.00")
    assert preview.total == Decimal("70.00")
    assert preview.base_cost == Decimal("100.00")


def test_preview_initial_contract_entry_inside_period_is_priced_for_the_whole_period():
    """The agent's first start writes the configured count: that contract was held before,
    so it is the base at full price; only later purchases are prorated add-ons."""
    terms = annual(date(2027, 5, 2), price="100.00")
    addons = [
        SeatChange(at(2026, 11, 2), 10, Decimal("0"), initial=True),
        SeatChange(at(2026, 11, 2, 13), 11, Decimal("49.59")),
    ]
    preview = billing_preview(terms, 11, 10, addons, False, [], at(2026, 11, 3))
    assert preview.base_cost == Decimal("1000.00")
    assert preview.addon_cost == Decimal("49.59")
    assert preview.total == Decimal("1049.59")
