"""Seat rules from the seed documents (000-004) and the decisions built on them."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from agent.domain.license import (
    DEFAULT_STATUSES,
    MAX_LICENSES,
    AccountStatus,
    DecreaseRefused,
    DirectoryState,
    InvalidLicenseCount,
    LicensePolicy,
    Outcome,
    PolicyError,
    SeatPool,
    StatusRule,
    app_status,
    check_license_change,
    check_license_count,
    decide,
    effective_roles,
    is_free,
    manual_decrease_steps,
    merge_statuses,
    queue_order,
    refusal_detail,
    status_consumes,
    wants_seat,
)

ASSISTANT_ROLES = frozenset({"Administrator Assistant", "Assistant"})


def user(active: bool = True, roles=(), groups=(), user_type: str | None = None) -> DirectoryState:
    return DirectoryState(
        active=active, roles=frozenset(roles), groups=frozenset(groups), user_type=user_type
    )


# --- seed 002: active users consume, deactivated users do not --------------------------------


def test_seed002_active_user_consumes_and_deactivated_does_not():
    policy = LicensePolicy(seats=5)
    assert app_status(policy, user(active=True)) == "Active"
    assert app_status(policy, user(active=False)) == "Inactive"
    assert wants_seat(policy, user(active=True)) is True
    assert wants_seat(policy, user(active=False)) is False


def test_seed002_new_account_only_while_a_licence_is_free():
    policy = LicensePolicy(seats=3)
    assert decide(policy, SeatPool(seats=3, consumed=2)) is Outcome.GRANT
    assert decide(policy, SeatPool(seats=3, consumed=3)) is Outcome.REFUSE


# --- seed 001: role-based, assistants free, invitations count ---------------------------------


def test_seed001_four_members_and_two_assistants_need_four_licenses():
    policy = LicensePolicy(seats=6, free_roles=ASSISTANT_ROLES)
    team = [
        user(roles={"Owner"}),
        user(roles={"Administrator"}),
        user(roles={"Member"}),
        user(roles={"Member"}),
        user(roles={"Administrator Assistant"}),
        user(roles={"Assistant"}),
    ]
    assert sum(wants_seat(policy, u) for u in team) == 4


def test_seed001_one_consuming_role_is_enough_to_need_a_license():
    policy = LicensePolicy(seats=1, free_roles=ASSISTANT_ROLES)
    assert is_free(policy, {"Assistant", "Member"}, None) is False
    assert is_free(policy, {"assistant"}, None) is True  # case-insensitive
    assert is_free(policy, set(), None) is False  # no role: an ordinary member


def test_seed001_members_under_invitation_count_only_with_count_pending():
    statuses = merge_statuses([AccountStatus("Invited", consumes=False, pending=True)])
    counting = LicensePolicy(seats=1, statuses=statuses, count_pending=True)
    not_counting = LicensePolicy(seats=1, statuses=statuses, count_pending=False)
    assert status_consumes(counting, "Invited") is True
    assert status_consumes(not_counting, "Invited") is False


def test_seed001_free_role_via_group_membership():
    policy = LicensePolicy(
        seats=1, free_roles=ASSISTANT_ROLES, group_roles={"Team Assistants": "Assistant"}
    )
    state = user(groups={"team assistants"})
    assert effective_roles(policy, state) == frozenset({"Assistant"})
    assert wants_seat(policy, state) is False
    assert wants_seat(policy, user(groups={"Engineering"})) is True


# --- seed 003: maximum number system, suspended accounts still count --------------------------


def test_seed003_inactive_consumes_maps_deactivated_to_suspended_which_consumes():
    policy = LicensePolicy(seats=2, inactive_consumes=True)
    deactivated = user(active=False)
    assert app_status(policy, deactivated) == "Suspended"
    assert status_consumes(policy, "Suspended") is True
    assert wants_seat(policy, deactivated) is True


def test_seed003_without_inactive_consumes_suspended_is_never_reached():
    policy = LicensePolicy(seats=2)
    assert app_status(policy, user(active=False)) == "Inactive"


def test_seed003_contract_never_lowered_automatically():
    with pytest.raises(DecreaseRefused) as info:
        check_license_change(
            "manual", 12, 10, 5, date(2025, 1, 1), None, 30, recorded_by_admin=False
        )
    assert "PUT /admin/licenses" in info.value.reason
    assert info.value.allowed_from is None


# --- seed 004: OpenCRM statuses ---------------------------------------------------------------


def opencrm_policy() -> LicensePolicy:
    statuses = merge_statuses(
        [
            AccountStatus("Locked", True),
            AccountStatus("Room", False),
            AccountStatus("Resource", False),
            AccountStatus("Asset", False),
            AccountStatus("Queue", False),
        ]
    )
    rules = (
        StatusRule("Room", user_types=frozenset({"Room"})),
        StatusRule("Resource", user_types=frozenset({"Resource"})),
        StatusRule("Locked", active=False, roles_any=frozenset({"locked"})),
    )
    return LicensePolicy(seats=2, statuses=statuses, rules=rules)


def test_seed004_locked_consumes_even_though_the_directory_says_inactive():
    policy = opencrm_policy()
    policy.validate()
    locked = user(active=False, roles={"Locked"})
    assert app_status(policy, locked) == "Locked"
    assert wants_seat(policy, locked) is True
    assert wants_seat(policy, user(active=False)) is False


def test_seed004_room_user_type_does_not_consume():
    policy = opencrm_policy()
    room = user(active=True, user_type="room")
    assert app_status(policy, room) == "Room"
    assert wants_seat(policy, room) is False
    assert wants_seat(policy, user(active=True, user_type="Employee")) is True


def test_seed004_free_user_types_never_consume():
    policy = LicensePolicy(seats=1, free_user_types=frozenset({"Asset"}))
    assert is_free(policy, {"Member"}, "ASSET") is True
    assert wants_seat(policy, user(user_type="asset")) is False


def test_rules_first_match_wins():
    policy = LicensePolicy(
        seats=1,
        rules=(
            StatusRule("Inactive", roles_any=frozenset({"alumni"})),
            StatusRule("Active", active=False),
        ),
    )
    assert app_status(policy, user(active=False, roles={"Alumni"})) == "Inactive"
    assert app_status(policy, user(active=False)) == "Active"


# --- seed 000: licenses never below consuming users -------------------------------------------


def test_seed000_decrease_50_to_40_refused_with_50_consumed():
    with pytest.raises(DecreaseRefused) as info:
        check_license_change("anytime", 50, 40, 50, date(2025, 3, 1), None, 30)
    assert info.value.reason == (
        "Cannot set licenses to 40: 50 users consume a seat; deactivate at least 10 first "
        "(in the directory, or with `seat-agent reduce --to 40`, which deactivates the least "
        "active users and then lowers the licenses)."
    )
    assert "seed" not in info.value.reason


def test_seed000_decrease_50_to_40_accepted_with_40_consumed():
    assert check_license_change("anytime", 50, 40, 40, date(2025, 3, 1), None, 30) is None


def test_increase_always_allowed_even_outside_renewal_window_and_manual():
    check_license_change("renewal", 10, 12, 30, date(2025, 1, 1), date(2025, 12, 31), 30)
    check_license_change("manual", 10, 12, 30, date(2025, 1, 1), None, 30, recorded_by_admin=False)


def test_renewal_decrease_before_window_refused_with_opening_date():
    renewal = date(2025, 6, 30)
    with pytest.raises(DecreaseRefused) as info:
        check_license_change("renewal", 50, 40, 10, date(2025, 5, 30), renewal, 30)
    assert info.value.allowed_from == date(2025, 5, 31)
    assert "2025-05-31" in info.value.reason


def test_renewal_decrease_within_window_allowed():
    renewal = date(2025, 6, 30)
    check_license_change("renewal", 50, 40, 10, date(2025, 5, 31), renewal, 30)
    check_license_change("renewal", 50, 40, 10, renewal, renewal, 30)


def test_renewal_decrease_within_window_still_needs_users_reduced():
    renewal = date(2025, 6, 30)
    with pytest.raises(DecreaseRefused) as info:
        check_license_change("renewal", 50, 40, 45, date(2025, 6, 15), renewal, 30)
    assert info.value.allowed_from is None
    assert "deactivate at least 5" in info.value.reason


def test_renewal_decrease_after_renewal_date_or_without_one_refused():
    with pytest.raises(DecreaseRefused, match="has passed"):
        check_license_change("renewal", 50, 40, 10, date(2025, 7, 1), date(2025, 6, 30), 30)
    with pytest.raises(DecreaseRefused, match="renewal_date"):
        check_license_change("renewal", 50, 40, 10, date(2025, 7, 1), None, 30)


def test_manual_decrease_recorded_by_admin_accepted_but_not_below_consumed():
    check_license_change("manual", 50, 40, 40, date(2025, 3, 1), None, 30)
    with pytest.raises(DecreaseRefused):
        check_license_change("manual", 50, 40, 41, date(2025, 3, 1), None, 30)


def test_negative_license_count_and_unknown_mode_refused():
    with pytest.raises(DecreaseRefused):
        check_license_change("anytime", 5, -1, 0, date(2025, 3, 1), None, 30)
    with pytest.raises(PolicyError):
        check_license_change("whenever", 5, 4, 0, date(2025, 3, 1), None, 30)


# --- decide() and refusal_detail() ------------------------------------------------------------


@pytest.mark.parametrize(
    ("on_full", "expected"),
    [
        ("refuse", Outcome.REFUSE),
        ("queue", Outcome.QUEUE),
        ("fallback", Outcome.FALLBACK),
        ("expand", Outcome.EXPAND),
    ],
)
def test_decide_when_full_follows_on_full(on_full, expected):
    policy = LicensePolicy(
        seats=10,
        on_full=on_full,
        max_seats=12,
        fallback_role="Assistant",
        free_roles=ASSISTANT_ROLES,
    )
    policy.validate()
    assert decide(policy, SeatPool(seats=10, consumed=10)) is expected
    assert decide(policy, SeatPool(seats=10, consumed=9)) is Outcome.GRANT


@pytest.mark.parametrize(
    ("on_full", "expected"),
    [
        ("refuse", Outcome.REFUSE),
        ("queue", Outcome.QUEUE),
        ("fallback", Outcome.FALLBACK),
        ("expand", Outcome.REFUSE),  # never grows the license against a reduction
    ],
)
def test_decide_under_a_reduction_holds_the_seats_above_its_target(on_full, expected):
    """Seed 000: between approval and the license change, seats above the target are held."""
    policy = LicensePolicy(seats=10, on_full=on_full, max_seats=12, fallback_role="Assistant")
    pool = SeatPool(seats=10, consumed=8)
    assert decide(policy, pool) is Outcome.GRANT
    assert decide(policy, pool, reduction_target=8) is expected
    assert decide(policy, pool, reduction_target=9) is Outcome.GRANT
    # a target at or above the license holds nothing
    assert decide(policy, SeatPool(seats=10, consumed=10), reduction_target=10) is decide(
        policy, SeatPool(seats=10, consumed=10)
    )
    detail = refusal_detail(pool, policy, reduction_target=8)
    assert "8 of 10 seats in use" in detail and "reduction to 8 seats is in progress" in detail


def test_decide_expand_at_ceiling_refuses():
    policy = LicensePolicy(seats=10, on_full="expand", max_seats=12)
    assert decide(policy, SeatPool(seats=11, consumed=11)) is Outcome.EXPAND
    assert decide(policy, SeatPool(seats=12, consumed=12)) is Outcome.REFUSE


def test_pool_available_never_negative():
    assert SeatPool(seats=10, consumed=12).available == 0
    assert SeatPool(seats=10, consumed=7).available == 3
    assert decide(LicensePolicy(seats=10), SeatPool(seats=10, consumed=12)) is Outcome.REFUSE


def test_refusal_detail_for_refuse():
    detail = refusal_detail(SeatPool(10, 10), LicensePolicy(seats=10))
    assert detail == (
        "Seat limit reached: 10 of 10 seats in use; no license is free. Free a seat by "
        "deactivating a user, or add licenses (buy them from the vendor, then "
        "`seat-agent licenses set N` or PUT /admin/licenses)."
    )
    # the live count is in the database: never "[license] seats", never "on_full="
    assert "[license]" not in detail and "on_full" not in detail


def test_refusal_detail_for_expand_at_ceiling_mentions_max_seats():
    policy = LicensePolicy(seats=10, on_full="expand", max_seats=20)
    detail = refusal_detail(SeatPool(20, 20), policy)
    assert "20 of 20 seats in use" in detail
    assert "only up to 20 (max_seats in the configuration file)" in detail
    assert "raise max_seats and reload" in detail and "seat-agent licenses set" in detail


def test_wants_seat_with_fallback_uses_only_the_fallback_role():
    policy = LicensePolicy(
        seats=1,
        on_full="fallback",
        fallback_role="Assistant",
        free_roles=ASSISTANT_ROLES,
        group_roles={"Staff": "Member"},
    )
    member = user(roles={"Member"}, groups={"Staff"})
    assert wants_seat(policy, member) is True
    assert wants_seat(policy, member, fallback=True) is False
    with pytest.raises(PolicyError):
        wants_seat(LicensePolicy(seats=1), member, fallback=True)


# --- validate() -------------------------------------------------------------------------------


def test_default_policy_is_valid():
    LicensePolicy(seats=0).validate()
    assert [s.name for s in DEFAULT_STATUSES] == ["Active", "Inactive", "Queued", "Suspended"]


@pytest.mark.parametrize(
    ("policy", "fragment"),
    [
        (LicensePolicy(seats=1, on_full="grow"), "on_full must be one of"),
        (LicensePolicy(seats=1, on_full="expand"), "needs max_seats"),
        (LicensePolicy(seats=5, on_full="expand", max_seats=4), "max_seats (4) must be at least"),
        (LicensePolicy(seats=1, on_full="fallback"), "needs fallback_role"),
        (
            LicensePolicy(seats=1, on_full="fallback", fallback_role="Member"),
            "must be listed in free_roles",
        ),
        (LicensePolicy(seats=1, rules=(StatusRule("Locked"),)), "unknown status 'Locked'"),
        (
            LicensePolicy(seats=1, queued_status="Active"),
            "queued_status 'Active' consumes a seat",
        ),
        (LicensePolicy(seats=-1), "seats must not be negative"),
        (
            LicensePolicy(seats=1, statuses=DEFAULT_STATUSES + (AccountStatus("active", True),)),
            "duplicate account status 'active'",
        ),
        (
            LicensePolicy(seats=1, inactive_consumes=True, suspended_status="Frozen"),
            "suspended_status names unknown status 'Frozen'",
        ),
    ],
)
def test_validate_rejects(policy, fragment):
    with pytest.raises(PolicyError) as info:
        policy.validate()
    assert fragment in str(info.value)


def test_validate_rejects_pending_queued_status_when_pending_counts():
    statuses = (AccountStatus("Active", True), AccountStatus("Waiting", False, pending=True))
    bad = LicensePolicy(
        seats=1, statuses=statuses, queued_status="Waiting", inactive_status="Waiting"
    )
    with pytest.raises(PolicyError, match="queued_status 'Waiting' consumes"):
        bad.validate()
    LicensePolicy(
        seats=1,
        statuses=statuses,
        queued_status="Waiting",
        inactive_status="Waiting",
        count_pending=False,
    ).validate()


def test_unknown_status_name_is_an_error():
    with pytest.raises(PolicyError, match="unknown account status"):
        status_consumes(LicensePolicy(seats=1), "Nope")


# --- queue ------------------------------------------------------------------------------------


def test_queue_first_come_first_served_then_id():
    t0 = datetime(2025, 1, 1, 9, 0)
    order = queue_order(
        [("c", t0 + timedelta(minutes=5)), ("b", t0), ("a", t0), ("d", t0 - timedelta(days=1))]
    )
    assert order == ["d", "a", "b", "c"]


def test_policy_accepts_lists_from_configuration():
    policy = LicensePolicy(
        seats=1,
        free_roles=["Assistant"],  # type: ignore[arg-type]
        statuses=list(DEFAULT_STATUSES),  # type: ignore[arg-type]
        rules=[StatusRule("Inactive", user_types=["Robot"])],  # type: ignore[arg-type]
    )
    assert hash(policy) == hash(policy)  # stays hashable once normalised
    assert app_status(policy, user(user_type="robot")) == "Inactive"


# --- license count bounds, manual decreases, fallback status -----------------------------------


@pytest.mark.parametrize("value", [0, 7, MAX_LICENSES])
def test_license_count_in_bounds(value):
    assert check_license_count(value) == value


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (MAX_LICENSES + 1, "at most"),
        (2**63, "at most"),
        (-1, "negative"),
        (True, "integer"),
        ("5", "integer"),
        (5.0, "integer"),
        (None, "integer"),
    ],
)
def test_license_count_out_of_bounds(value, problem):
    with pytest.raises(InvalidLicenseCount, match=problem):
        check_license_count(value)


def test_manual_decrease_steps_name_the_vendor_and_both_counts():
    steps = manual_decrease_steps(10, 8)
    assert steps[0].startswith("1. At the vendor") and "from 10 to 8" in steps[0]
    assert all(str(8) in step for step in steps)


def test_fallback_user_status_follows_the_fallback_role():
    policy = LicensePolicy(
        seats=1,
        on_full="fallback",
        fallback_role="Assistant",
        free_roles=frozenset({"Assistant"}),
        statuses=merge_statuses([AccountStatus("Editor", True), AccountStatus("Viewer", False)]),
        rules=(
            StatusRule(status="Editor", roles_any=frozenset({"Editor"})),
            StatusRule(status="Viewer", roles_any=frozenset({"Assistant"})),
        ),
    )
    editor = user(roles=["Editor"])
    assert app_status(policy, editor) == "Editor"
    assert app_status(policy, editor, fallback=True) == "Viewer"
