"""The reduce-users-then-licenses workflow (seed 000): the plan, the change window, the states.

Pure: standard library only. The service (agent.services.reductions) gathers the facts, asks
these functions, and applies their answers one idempotent step at a time.

Seed 000 (Kintone, "Reducing the Number of Licensed Users") fixes the order: STEP 1 check *when*
the plan allows a change, STEP 2 reduce the application users ("set the status to 'Inactive'
for at least 10 users"), STEP 3 reduce the licenses, then "if necessary, delete the users who are
deactivated" -- with the warning that deleting a user deletes its data. Seed 001 adds the
automatic adjustment at renewal to "the number of members (including members under
invitation)"; seed 003 (maximum-number contracts) says suspended accounts stay "in use" and only
deletion frees them, and that the contracted number only rises; seed 004 says licences are
reduced only by the account manager.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum


class State(StrEnum):
    """Workflow states, in the order a reduction normally passes through them."""

    PLANNED = "planned"
    APPROVED = "approved"
    DEACTIVATING = "deactivating"
    VERIFYING = "verifying"
    REDUCING_LICENSES = "reducing_licenses"
    AWAITING_MANUAL_LICENSE_CHANGE = "awaiting_manual_license_change"
    CLEANUP = "cleanup"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"


FINAL_STATES = frozenset({State.DONE, State.CANCELLED, State.FAILED})
OPEN_STATES = frozenset(State) - FINAL_STATES
# From approval until the license change, the workflow lowers consumption to its target: the
# seats above the target are held, neither refilled from the queue nor given to activations.
SEAT_HOLDING_STATES = tuple(
    s.value
    for s in (
        State.APPROVED,
        State.DEACTIVATING,
        State.VERIFYING,
        State.REDUCING_LICENSES,
        State.AWAITING_MANUAL_LICENSE_CHANGE,
    )
)

_STOP = frozenset({State.CANCELLED, State.FAILED})
TRANSITIONS: dict[State, frozenset[State]] = {
    State.PLANNED: frozenset({State.APPROVED}) | _STOP,
    State.APPROVED: frozenset({State.DEACTIVATING}) | _STOP,
    State.DEACTIVATING: frozenset({State.VERIFYING}) | _STOP,
    # Verifying goes back to deactivating once when the directory re-activated someone.
    State.VERIFYING: frozenset(
        {State.DEACTIVATING, State.REDUCING_LICENSES, State.AWAITING_MANUAL_LICENSE_CHANGE}
    )
    | _STOP,
    # Consumption rose again before the licenses could be lowered: verify (and retry) again.
    State.REDUCING_LICENSES: frozenset({State.VERIFYING, State.CLEANUP, State.DONE}) | _STOP,
    State.AWAITING_MANUAL_LICENSE_CHANGE: frozenset({State.VERIFYING, State.CLEANUP, State.DONE})
    | _STOP,
    State.CLEANUP: frozenset({State.DONE}) | _STOP,
    State.DONE: frozenset(),
    State.CANCELLED: frozenset(),
    State.FAILED: frozenset(),
}


class InvalidTransition(Exception):
    """A workflow cannot move from its state to the one asked (HTTP 409)."""


def check_transition(current: str, new: str) -> None:
    """Raise InvalidTransition unless ``current -> new`` is an edge of the workflow."""
    cur, nxt = State(current), State(new)
    if nxt not in TRANSITIONS[cur]:
        if cur in FINAL_STATES:
            raise InvalidTransition(f"reduction is already {cur.value}; it cannot become {nxt}")
        raise InvalidTransition(f"a {cur.value} reduction cannot become {nxt.value}")


# -- the change window (seed 000 STEP 1) -----------------------------------------------------


@dataclass(frozen=True)
class ChangeWindow:
    """When the license count may be lowered.

    ``kind``: ``now``; ``from`` (a renewal window opening on ``opens``); ``manual`` (only the
    vendor lowers licenses: seed 004's account manager, or seed 003's count that only rises);
    ``closed`` (the renewal date is unset or passed: the configuration needs a new date).
    """

    kind: str
    opens: date | None
    detail: str

    def as_dict(self) -> dict[str, str | None]:
        return {
            "kind": self.kind,
            "opens": self.opens.isoformat() if self.opens else None,
            "detail": self.detail,
        }


def change_window(
    decrease: str, renewal_date: date | None, window_days: int, today: date
) -> ChangeWindow:
    """When ``[license] decrease`` allows the agent itself to lower the license count.

    Mirrors ``agent.domain.license.check_license_change`` so the plan can say in advance what
    the reducing_licenses step will meet.
    """
    if decrease == "anytime":
        return ChangeWindow("now", today, "licenses can be lowered now (decrease = anytime)")
    if decrease == "manual":
        return ChangeWindow(
            "manual",
            None,
            "manual at the vendor: only the vendor lowers licenses (decrease = manual);"
            " the admin records the new count with PUT /admin/licenses",
        )
    if decrease == "never":
        return ChangeWindow(
            "manual",
            None,
            "manual at the vendor: this contract's count only rises (decrease = never);"
            " ask the vendor",
        )
    if renewal_date is None:
        return ChangeWindow("closed", None, "decrease = renewal needs [license] renewal_date")
    opens = renewal_date - timedelta(days=window_days)
    if today > renewal_date:
        return ChangeWindow(
            "closed",
            None,
            f"the renewal date {renewal_date.isoformat()} has passed; set [license] renewal_date"
            " to the next renewal",
        )
    if today < opens:
        return ChangeWindow(
            "from",
            opens,
            f"from {opens.isoformat()}, in the {window_days} days before the renewal on "
            f"{renewal_date.isoformat()} (decrease = renewal)",
        )
    return ChangeWindow(
        "now",
        today,
        f"now: the renewal window is open until {renewal_date.isoformat()} (decrease = renewal)",
    )


def renewal_window_open(renewal_date: date | None, window_days: int, today: date) -> bool:
    """Whether ``today`` falls in the days before renewal when seed 001 adjusts the count."""
    if renewal_date is None:
        return False
    return renewal_date - timedelta(days=window_days) <= today <= renewal_date


def manual_steps(decrease: str, current: int, target: int) -> list[str]:
    """The exact steps an admin takes when only the vendor can lower the count.

    Seed 000 STEP 3: "change the number of licensed users after you confirm the number of
    application users", so the first step is that check. Seed 004: the portal "cannot reduce
    your number of licences here, if you wish to do this please contact your Account Manager".
    """
    record = f'PUT /admin/licenses {{"seats": {target}}} or `seat-agent licenses set {target}`'
    check = (
        f"1. Check the number of application users in the application's own user or"
        f" subscription screen: it must be at most {target} (seat-agent has deactivated the"
        " users of this reduction and verified the count)."
    )
    if decrease == "never":
        return [
            f"1. This contract's license count only rises (decrease = never); ask the"
            f" vendor whether it can be reduced from {current} to {target}.",
            f'2. If the vendor reduced it: set [license] decrease = "manual", restart, and'
            f" record it: {record}.",
        ]
    return [
        check,
        f"2. Contact your account manager at the vendor and ask them to reduce the licences from"
        f" {current} to {target}; the vendor portal can only increase them.",
        f"3. When the vendor confirms the new count, record it: {record}.",
    ]


# -- the plan (seed 000 STEP 2) --------------------------------------------------------------


DEACTIVATE = "deactivate"
DELETE = "delete"


@dataclass(frozen=True)
class SeatHolder:
    """A user consuming a seat, as the planner sees it.

    ``frees_on_deactivation``: whether directory ``active = false`` would free the seat under
    the license policy (not so with ``inactive_consumes``, seed 003, or a consuming rule).
    ``last_activity`` is the downstream's last login when known, else the agent's last
    directory activity; ``activity_source`` says which.
    """

    user_id: str
    user_name: str
    active: bool
    roles: frozenset[str]
    created: datetime
    last_activity: datetime | None
    activity_source: str
    frees_on_deactivation: bool


@dataclass(frozen=True)
class PlanRules:
    """``[reductions]`` settings the planner applies."""

    grace_days: int = 14
    protected_roles: frozenset[str] = frozenset({"Owner"})
    break_glass: frozenset[str] = frozenset()
    allow_delete: bool = False  # [reductions] cleanup: the operator's consent to deletion


@dataclass(frozen=True)
class Candidate:
    user_id: str
    user_name: str
    action: str  # deactivate | delete
    reason: str
    last_activity: datetime | None
    activity_source: str


@dataclass(frozen=True)
class Excluded:
    user_name: str
    reason: str


@dataclass
class Plan:
    """Who stops consuming, why, and what stands in the way.

    ``needed`` users must stop consuming (seed 000: licenses never below consuming users);
    ``candidates`` are the first ``needed`` of the ranking; ``shortfall`` is how many more would
    be needed but no eligible user exists.
    """

    target: int
    seats: int
    consumed: int
    needed: int
    candidates: list[Candidate]
    excluded: list[Excluded]
    excluded_counts: dict[str, int]
    window: ChangeWindow
    ranked_available: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def shortfall(self) -> int:
        return max(self.needed - len(self.candidates), 0)

    @property
    def feasible(self) -> bool:
        return self.shortfall == 0

    def problem(self) -> str | None:
        """Why this plan cannot be carried out, for the admin; None when it can."""
        if self.feasible:
            return None
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(self.excluded_counts.items()))
        return (
            f"Not enough users can stop consuming: {self.needed} must (consumed {self.consumed},"
            f" target {self.target}) but only {len(self.candidates)} are eligible"
            + (f"; excluded: {reasons}" if reasons else "")
            + ". Lower fewer licenses, or deactivate users in the directory first."
        )


EXCLUDED_SHOWN = 200


def _fold(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v.casefold() for v in values)


def _idle_reason(holder: SeatHolder, now: datetime) -> str:
    if holder.last_activity is None:
        return f"no recorded activity ({holder.activity_source})"
    days = max((now - holder.last_activity).days, 0)
    return (
        f"{days} days without activity ({holder.activity_source}"
        f" {holder.last_activity.date().isoformat()})"
    )


def plan_reduction(
    *,
    target: int,
    seats: int,
    consumed: int,
    holders: Iterable[SeatHolder],
    rules: PlanRules,
    now: datetime,
    window: ChangeWindow,
    exclude_ids: Iterable[str] = (),
    exclude_reason: str = "already part of this reduction",
) -> Plan:
    """Rank the users who could stop consuming and choose the first ``consumed - target``.

    Ranking: first users the directory already deactivated but who still consume a seat
    (seed 003: only deletion frees them; chosen only with ``allow_delete``, since seed 000 warns
    that deletion deletes the user's data); then active users whose deactivation frees the seat,
    longest without activity first (no activity known counts as the longest). Never chosen:
    break-glass userNames, holders of a protected role (e.g. Owner), users created within
    ``grace_days``, and ``exclude_ids``.
    """
    needed = max(consumed - target, 0)
    protected = _fold(rules.protected_roles)
    break_glass = _fold(rules.break_glass)
    skip = set(exclude_ids)
    grace_start = now - timedelta(days=rules.grace_days)
    inactive: list[SeatHolder] = []
    idle: list[SeatHolder] = []
    excluded: list[Excluded] = []
    counts: dict[str, int] = {}

    def exclude(h: SeatHolder, key: str, reason: str) -> None:
        counts[key] = counts.get(key, 0) + 1
        if len(excluded) < EXCLUDED_SHOWN:
            excluded.append(Excluded(h.user_name, reason))

    for h in holders:
        if h.user_id in skip:
            exclude(h, "previously chosen", exclude_reason)
        elif h.user_name.casefold() in break_glass:
            exclude(h, "break-glass", "break-glass account ([reductions] break_glass)")
        elif _fold(h.roles) & protected:
            roles = ", ".join(sorted(r for r in h.roles if r.casefold() in protected))
            exclude(h, "protected role", f"holds protected role {roles}")
        elif h.created > grace_start:
            exclude(
                h,
                "within grace period",
                f"created {h.created.date().isoformat()}, within the {rules.grace_days}-day grace",
            )
        elif not h.active:
            if rules.allow_delete:
                inactive.append(h)
            else:
                exclude(
                    h,
                    "needs deletion",
                    "inactive in the directory but still consuming; only deletion frees the seat"
                    " and [reductions] cleanup = false",
                )
        elif not h.frees_on_deactivation:
            exclude(
                h,
                "deactivation frees no seat",
                "deactivation would not free the seat (inactive users still consume);"
                " unassign the user in the IdP",
            )
        else:
            idle.append(h)

    def oldest_first(h: SeatHolder) -> tuple[datetime, datetime, str]:
        last = h.last_activity or datetime.min.replace(tzinfo=now.tzinfo)
        return (last, h.created, h.user_name.casefold())

    ranked: list[Candidate] = [
        Candidate(
            h.user_id,
            h.user_name,
            DELETE,
            "inactive in the directory but still consuming a seat; only deleting frees it, and"
            " deleting deletes the user's data",
            h.last_activity,
            h.activity_source,
        )
        for h in sorted(inactive, key=oldest_first)
    ]
    ranked += [
        Candidate(
            h.user_id,
            h.user_name,
            DEACTIVATE,
            _idle_reason(h, now),
            h.last_activity,
            h.activity_source,
        )
        for h in sorted(idle, key=oldest_first)
    ]
    return Plan(
        target=target,
        seats=seats,
        consumed=consumed,
        needed=needed,
        candidates=ranked[:needed],
        excluded=excluded,
        excluded_counts=counts,
        window=window,
        ranked_available=len(ranked),
    )


def after_verify(consumed: int, target: int, retried: bool, decrease: str) -> State:
    """Verifying: on target -> lower licenses (or wait for the vendor when only the vendor
    lowers them: decrease = manual or never); over it -> one more round, then failure."""
    if consumed <= target:
        if decrease in ("manual", "never"):
            return State.AWAITING_MANUAL_LICENSE_CHANGE
        return State.REDUCING_LICENSES
    return State.FAILED if retried else State.DEACTIVATING


def cleanup_due(deactivated_at: datetime, after_days: int, now: datetime) -> bool:
    """Seed 000 STEP 3 "if necessary, delete": only after the grace period."""
    return now >= deactivated_at + timedelta(days=after_days)
