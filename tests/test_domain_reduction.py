"""The pure reduction rules: change windows, the ranked plan, the state machine (seed 000)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from agent.domain import reduction as red
from agent.domain.reduction import State

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
TODAY = NOW.date()


def holder(
    name: str,
    idle_days: float | None = 100,
    age_days: float = 365,
    active: bool = True,
    roles: tuple[str, ...] = (),
    frees: bool = True,
) -> red.SeatHolder:
    return red.SeatHolder(
        user_id="id-" + name,
        user_name=name,
        active=active,
        roles=frozenset(roles),
        created=NOW - timedelta(days=age_days),
        last_activity=None if idle_days is None else NOW - timedelta(days=idle_days),
        activity_source="last directory activity",
        frees_on_deactivation=frees,
    )


def plan(holders, target: int, rules: red.PlanRules | None = None, **kw) -> red.Plan:
    return red.plan_reduction(
        target=target,
        seats=len(holders),
        consumed=len(holders),
        holders=holders,
        rules=rules or red.PlanRules(),
        now=NOW,
        window=red.change_window("anytime", None, 30, TODAY),
        **kw,
    )


# -- change window -----------------------------------------------------------------------------


def test_window_anytime_is_now():
    assert red.change_window("anytime", None, 30, TODAY).kind == "now"


@pytest.mark.parametrize("mode", ["manual", "never"])
def test_window_manual_and_never_are_at_the_vendor(mode):
    w = red.change_window(mode, date(2027, 1, 1), 30, TODAY)
    assert (w.kind, w.opens) == ("manual", None)
    assert "vendor" in w.detail


def test_window_renewal_before_in_and_after():
    renewal = TODAY + timedelta(days=60)
    before = red.change_window("renewal", renewal, 30, TODAY)
    assert (before.kind, before.opens) == ("from", renewal - timedelta(days=30))
    assert before.opens.isoformat() in before.detail
    assert red.change_window("renewal", renewal, 30, renewal - timedelta(days=30)).kind == "now"
    assert red.change_window("renewal", renewal, 30, renewal).kind == "now"
    after = red.change_window("renewal", renewal, 30, renewal + timedelta(days=1))
    assert after.kind == "closed" and "passed" in after.detail
    assert red.change_window("renewal", None, 30, TODAY).kind == "closed"


def test_renewal_window_open():
    renewal = TODAY + timedelta(days=10)
    assert red.renewal_window_open(renewal, 30, TODAY)
    assert not red.renewal_window_open(renewal, 5, TODAY)
    assert not red.renewal_window_open(None, 30, TODAY)
    assert not red.renewal_window_open(TODAY - timedelta(days=1), 30, TODAY)


def test_manual_steps_are_exact():
    steps = red.manual_steps("manual", 50, 40)
    assert len(steps) == 3
    # seed 000 STEP 3: confirm the number of application users first
    assert steps[0].startswith("1. Check the number of application users")
    assert "at most 40" in steps[0]
    # seed 004: only the account manager reduces; the portal cannot
    assert steps[1] == (
        "2. Contact your account manager at the vendor and ask them to reduce the licences from"
        " 50 to 40; the vendor portal can only increase them."
    )
    assert steps[2] == (
        "3. When the vendor confirms the new count, record it: "
        'PUT /admin/licenses {"seats": 40} or `seat-agent licenses set 40`.'
    )
    never = " ".join(red.manual_steps("never", 50, 40))
    assert "only rises" in never and 'decrease = "manual"' in never


# -- plan --------------------------------------------------------------------------------------


def test_plan_needs_consumed_minus_target_and_ranks_longest_idle_first():
    hs = [holder("recent", 1), holder("old", 300), holder("mid", 50), holder("never", None)]
    p = plan(hs, target=2)
    assert p.needed == 2 and p.feasible and p.shortfall == 0
    assert [c.user_name for c in p.candidates] == ["never", "old"]
    assert all(c.action == red.DEACTIVATE for c in p.candidates)
    assert p.candidates[1].reason.startswith("300 days without activity")
    assert p.ranked_available == 4


def test_plan_target_at_or_above_consumption_needs_nobody():
    p = plan([holder("a"), holder("b")], target=5)
    assert p.needed == 0 and p.candidates == [] and p.feasible


def test_plan_never_chooses_owner_break_glass_or_newest():
    hs = [
        holder("owner", 999, roles=("owner",)),  # role match ignores case
        holder("BreakGlass@corp", 999),
        holder("newbie", 999, age_days=3),
        holder("ok", 10),
    ]
    rules = red.PlanRules(
        grace_days=14,
        protected_roles=frozenset({"Owner"}),
        break_glass=frozenset({"breakglass@corp"}),
    )
    p = plan(hs, target=3, rules=rules)
    assert [c.user_name for c in p.candidates] == ["ok"]
    assert p.excluded_counts == {
        "protected role": 1,
        "break-glass": 1,
        "within grace period": 1,
    }
    reasons = {e.user_name: e.reason for e in p.excluded}
    assert reasons["owner"] == "holds protected role owner"
    assert "grace" in reasons["newbie"]


def test_inactive_but_consuming_users_come_first_only_when_deletion_is_allowed():
    hs = [holder("idle", 500), holder("suspended", 5, active=False, frees=False)]
    p = plan(hs, target=1, rules=red.PlanRules(allow_delete=True))
    assert [(c.user_name, c.action) for c in p.candidates] == [("suspended", red.DELETE)]
    assert "deletes the user's data" in p.candidates[0].reason
    p = plan(hs, target=1, rules=red.PlanRules(allow_delete=False))
    assert [c.user_name for c in p.candidates] == ["idle"]
    assert p.excluded_counts == {"needs deletion": 1}


def test_active_user_whose_deactivation_frees_nothing_is_not_chosen():
    p = plan([holder("stuck", 500, frees=False), holder("ok", 5)], target=1)
    assert [c.user_name for c in p.candidates] == ["ok"]
    assert p.excluded_counts == {"deactivation frees no seat": 1}


def test_not_enough_candidates_is_reported_with_the_reasons():
    hs = [holder("owner", roles=("Owner",)), holder("new", age_days=1), holder("ok")]
    p = plan(hs, target=0)
    assert (p.needed, len(p.candidates), p.shortfall, p.feasible) == (3, 1, 2, False)
    problem = p.problem()
    assert problem is not None
    assert "3 must" in problem and "only 1 are eligible" in problem
    assert "1 protected role" in problem and "1 within grace period" in problem


def test_plan_excludes_previously_chosen_ids():
    p = plan([holder("a", 500), holder("b", 5)], target=1, exclude_ids=["id-a"])
    assert [c.user_name for c in p.candidates] == ["b"]
    assert p.excluded_counts == {"previously chosen": 1}


# -- states ------------------------------------------------------------------------------------


def test_happy_path_edges_are_allowed():
    path = [
        State.PLANNED,
        State.APPROVED,
        State.DEACTIVATING,
        State.VERIFYING,
        State.REDUCING_LICENSES,
        State.CLEANUP,
        State.DONE,
    ]
    for a, b in zip(path, path[1:], strict=False):
        red.check_transition(a, b)
    red.check_transition(State.VERIFYING, State.AWAITING_MANUAL_LICENSE_CHANGE)
    red.check_transition(State.AWAITING_MANUAL_LICENSE_CHANGE, State.DONE)


@pytest.mark.parametrize("state", sorted(red.OPEN_STATES))
def test_every_open_state_can_be_cancelled_or_fail(state):
    red.check_transition(state, State.CANCELLED)
    red.check_transition(state, State.FAILED)


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (State.PLANNED, State.DEACTIVATING),  # never without approval
        (State.APPROVED, State.APPROVED),
        (State.DONE, State.CANCELLED),
        (State.CANCELLED, State.APPROVED),
        (State.FAILED, State.DEACTIVATING),
        (State.DEACTIVATING, State.REDUCING_LICENSES),  # never without verifying
    ],
)
def test_invalid_edges_are_refused(current, new):
    with pytest.raises(red.InvalidTransition):
        red.check_transition(current, new)


def test_after_verify():
    assert red.after_verify(40, 40, False, "anytime") is State.REDUCING_LICENSES
    assert red.after_verify(39, 40, True, "renewal") is State.REDUCING_LICENSES
    assert red.after_verify(40, 40, False, "manual") is State.AWAITING_MANUAL_LICENSE_CHANGE
    assert red.after_verify(40, 40, False, "never") is State.AWAITING_MANUAL_LICENSE_CHANGE
    assert red.after_verify(41, 40, False, "anytime") is State.DEACTIVATING
    assert red.after_verify(41, 40, True, "anytime") is State.FAILED


def test_cleanup_due_only_after_the_grace_period():
    at = NOW - timedelta(days=30)
    assert red.cleanup_due(at, 30, NOW)
    assert not red.cleanup_due(at + timedelta(seconds=1), 30, NOW)
