"""Seat licensing rules: who consumes a seat, and what happens when none is free.

This module is the pure core of the agent: no I/O, no clock, no framework. Every path that can
make a user consume a seat (SCIM create, PATCH/PUT, role or group change, userType change, the
admin API) asks :func:`wants_seat` and then :func:`decide`, so the rules live in one place.

The rules come from five vendor documents kept in ``/work/shared/seeds/``:

* seed 000 (Kintone, "Reducing the Number of Licensed Users"): licenses can never be set below
  the number of users who consume one; reduce users first, then licenses, and only when the plan
  allows the change.
* seed 001 (role-based team licenses): Owner, Administrator and Member consume a license,
  Administrator Assistant and Assistant do not; members under invitation count.
* seed 002 (Kimai Cloud): each active user consumes one license, deactivated users do not; a
  user can be created or reactivated only while a license is free.
* seed 003 ("maximum number system"): suspended accounts are still "accounts in use", and the
  contracted number only ever rises.
* seed 004 (OpenCRM): statuses 'Active' and 'Locked' consume a licence; 'Room', 'Resource',
  'Asset' and 'Queue' do not; licences cannot be reduced from inside the application.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import Enum
from functools import cached_property

ON_FULL_CHOICES = ("refuse", "queue", "fallback", "expand")
DECREASE_MODES = ("anytime", "renewal", "manual")
# The largest license count the agent accepts: far above any real contract, far below the
# databases' integer columns, so a typo is a clear 400 rather than an overflow.
MAX_LICENSES = 1_000_000


class InvalidLicenseCount(ValueError):
    """A license count that is not a whole number in ``0..MAX_LICENSES``."""


def check_license_count(value: object) -> int:
    """The license count an admin asked for, or InvalidLicenseCount saying what is wrong."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidLicenseCount("'seats' must be an integer")
    if value < 0:
        raise InvalidLicenseCount("'seats' must not be negative")
    if value > MAX_LICENSES:
        raise InvalidLicenseCount(f"'seats' must be at most {MAX_LICENSES}")
    return value


def manual_decrease_steps(current: int, new: int) -> list[str]:
    """With ``decrease = "manual"`` the agent never lowers the count itself (seed 004: "please
    contact your Account Manager"); an admin lowering it records a change made at the vendor.
    These are the steps that change takes, shown with the recording."""
    return [
        f"1. At the vendor (portal or account manager) lower the licenses from {current} to "
        f"{new}; seat-agent does not change the vendor's count.",
        f"2. Check that the vendor's subscription or next invoice shows {new} licenses.",
        f"3. seat-agent now enforces {new} licenses; if the vendor has not made the change, "
        f"record the vendor's count again with PUT /admin/licenses or `seat-agent licenses set`.",
    ]


class PolicyError(ValueError):
    """The license policy is incoherent; the message names every problem found.

    Raised at start-up (from :meth:`LicensePolicy.validate`) so that a bad configuration is
    refused before any user is provisioned, rather than surfacing as a puzzling refusal later.
    """


def _fold(value: str) -> str:
    # Roles, userTypes, group names and status names arrive from several IdPs (Okta, Entra) and
    # from a hand-written TOML file; their case is not reliable, so all comparisons ignore it.
    return value.casefold()


def _fold_all(values: Iterable[str]) -> frozenset[str]:
    return frozenset(_fold(v) for v in values)


@dataclass(frozen=True)
class AccountStatus:
    """An application account status and whether a user in it holds a seat.

    Seed 004 defines licence use by status ('Active' and 'Locked' consume; 'Room', 'Resource',
    'Asset', 'Queue' and 'Inactive' do not), so consumption is a property of the status.
    ``pending`` marks invitation-like statuses: seed 001 says the license count includes
    "members under invitation", but whether to count them is the operator's choice
    (``LicensePolicy.count_pending``).
    """

    name: str
    consumes: bool
    pending: bool = False


DEFAULT_STATUSES: tuple[AccountStatus, ...] = (
    # Seed 002: active users consume a license, deactivated users do not.
    AccountStatus("Active", True),
    AccountStatus("Inactive", False),
    # Users waiting for a seat (on_full = "queue") must not hold one, or the queue never drains.
    AccountStatus("Queued", False),
    # Seed 003: "Suspended accounts are considered as 'Accounts in use'". Only reached when
    # LicensePolicy.inactive_consumes is true.
    AccountStatus("Suspended", True),
)


def merge_statuses(
    extra: Iterable[AccountStatus], base: Iterable[AccountStatus] = DEFAULT_STATUSES
) -> tuple[AccountStatus, ...]:
    """Return ``base`` with ``extra`` statuses added, a same-named extra one replacing its default.

    The configuration lists "extra or overriding" statuses (e.g. seed 004's Locked and Room), so
    an operator can add statuses without restating the defaults. Names match case-insensitively;
    the order is base first (in its order), then new names in the order given.
    """
    merged: dict[str, AccountStatus] = {_fold(s.name): s for s in base}
    for status in extra:
        merged[_fold(status.name)] = status
    return tuple(merged.values())


@dataclass(frozen=True)
class StatusRule:
    """One ordered mapping rule from directory state to an application status; first match wins.

    Any condition left None matches anything. Rules let the IdP's facts (SCIM ``active``,
    ``userType``, roles) express statuses the IdP has no word for, e.g. seed 004's 'Room'
    (a userType) or 'Locked' (an active-but-blocked account that still consumes).
    """

    status: str
    active: bool | None = None
    user_types: frozenset[str] | None = None
    roles_any: frozenset[str] | None = None

    def __post_init__(self) -> None:
        # Accept lists from the configuration layer; store immutable sets so the rule is hashable.
        if self.user_types is not None:
            object.__setattr__(self, "user_types", frozenset(self.user_types))
        if self.roles_any is not None:
            object.__setattr__(self, "roles_any", frozenset(self.roles_any))

    def matches(self, active: bool, user_type: str | None, roles: Iterable[str]) -> bool:
        """Whether every condition that is set holds (userType and roles case-insensitively)."""
        if self.active is not None and self.active != active:
            return False
        if self.user_types is not None:
            if user_type is None or _fold(user_type) not in _fold_all(self.user_types):
                return False
        if self.roles_any is not None:
            if not _fold_all(roles) & _fold_all(self.roles_any):
                return False
        return True


@dataclass(frozen=True)
class LicensePolicy:
    """Everything the operator decided about seats; see ``[license]`` in the configuration.

    ``on_full`` chooses what happens when a user wants a seat and none is free:

    * ``refuse``: the IdP's request fails with a readable reason (seed 002: "New user accounts
      can only be created if there are free licenses available").
    * ``queue``: the user is kept, in ``queued_status`` without a seat, until one is freed.
    * ``fallback``: the user is kept with ``fallback_role``, a free role (seed 001's Assistant).
    * ``expand``: a license is added, up to ``max_seats`` (seed 003 and seed 004: adding an
      account beyond the contract raises the contracted number).
    """

    seats: int
    on_full: str = "refuse"
    max_seats: int | None = None
    fallback_role: str | None = None
    free_roles: frozenset[str] = frozenset()
    free_user_types: frozenset[str] = frozenset()
    inactive_consumes: bool = False
    count_pending: bool = True
    statuses: tuple[AccountStatus, ...] = DEFAULT_STATUSES
    rules: tuple[StatusRule, ...] = ()
    active_status: str = "Active"
    inactive_status: str = "Inactive"
    queued_status: str = "Queued"
    suspended_status: str = "Suspended"
    group_roles: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        # Accept lists/dicts from the configuration layer; keep the policy immutable afterwards.
        object.__setattr__(self, "free_roles", frozenset(self.free_roles))
        object.__setattr__(self, "free_user_types", frozenset(self.free_user_types))
        object.__setattr__(self, "statuses", tuple(self.statuses))
        object.__setattr__(self, "rules", tuple(self.rules))
        object.__setattr__(self, "group_roles", dict(self.group_roles))

    # Folded lookups, computed once per policy: the seat decision and reconcile ask them for
    # every user. (cached_property writes the instance __dict__, which a frozen dataclass allows.)
    @cached_property
    def folded_free_roles(self) -> frozenset[str]:
        return _fold_all(self.free_roles)

    @cached_property
    def folded_free_user_types(self) -> frozenset[str]:
        return _fold_all(self.free_user_types)

    @cached_property
    def folded_group_roles(self) -> dict[str, str]:
        return {_fold(group): role for group, role in self.group_roles.items()}

    @cached_property
    def statuses_by_name(self) -> dict[str, AccountStatus]:
        by_name: dict[str, AccountStatus] = {}
        for status in self.statuses:
            by_name.setdefault(_fold(status.name), status)
        return by_name

    def status(self, name: str) -> AccountStatus:
        """The status called ``name`` (case-insensitive); PolicyError when there is none."""
        found = self.statuses_by_name.get(_fold(name))
        if found is not None:
            return found
        known = ", ".join(s.name for s in self.statuses)
        raise PolicyError(f"unknown account status {name!r} (known: {known})")

    def _has_status(self, name: str) -> bool:
        return any(_fold(s.name) == _fold(name) for s in self.statuses)

    def validate(self) -> None:
        """Raise PolicyError listing every incoherence, so a bad file is refused at start."""
        problems: list[str] = []
        if self.seats < 0:
            problems.append(f"seats must not be negative (got {self.seats})")
        if self.on_full not in ON_FULL_CHOICES:
            problems.append(
                f"on_full must be one of {', '.join(ON_FULL_CHOICES)} (got {self.on_full!r})"
            )
        if self.on_full == "expand" and self.max_seats is None:
            problems.append("on_full = 'expand' needs max_seats, the ceiling of automatic growth")
        if self.max_seats is not None and self.max_seats < self.seats:
            problems.append(f"max_seats ({self.max_seats}) must be at least seats ({self.seats})")
        if self.on_full == "fallback" and not self.fallback_role:
            problems.append("on_full = 'fallback' needs fallback_role")
        if self.fallback_role and _fold(self.fallback_role) not in _fold_all(self.free_roles):
            # A fallback role that consumes a seat would not relieve a full pool (seed 001: only
            # Administrator Assistant and Assistant roles do not consume a license).
            problems.append(f"fallback_role {self.fallback_role!r} must be listed in free_roles")
        seen: set[str] = set()
        for status in self.statuses:
            key = _fold(status.name)
            if key in seen:
                problems.append(f"duplicate account status {status.name!r}")
            seen.add(key)
        for index, rule in enumerate(self.rules, start=1):
            if not self._has_status(rule.status):
                problems.append(f"rule {index} names unknown status {rule.status!r}")
        named = [
            ("active_status", self.active_status),
            ("inactive_status", self.inactive_status),
            ("queued_status", self.queued_status),
        ]
        if self.inactive_consumes:
            named.append(("suspended_status", self.suspended_status))
        for key, name in named:
            if not self._has_status(name):
                problems.append(f"{key} names unknown status {name!r}")
        if self._has_status(self.queued_status) and status_consumes(self, self.queued_status):
            problems.append(
                f"queued_status {self.queued_status!r} consumes a seat; queued users must not"
            )
        if problems:
            raise PolicyError("invalid license policy: " + "; ".join(problems))


@dataclass(frozen=True)
class DirectoryState:
    """What the IdP said about a user: SCIM ``active``, ``roles[].value``, group memberships
    (by displayName) and ``userType``."""

    active: bool
    roles: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    user_type: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "roles", frozenset(self.roles))
        object.__setattr__(self, "groups", frozenset(self.groups))


def effective_roles(policy: LicensePolicy, state: DirectoryState) -> frozenset[str]:
    """SCIM roles plus the roles granted by group membership (``group_roles``).

    Many IdP set-ups express seed 001's roles as groups ("Team Assistants") rather than as SCIM
    roles, so both sources count. Group names match case-insensitively.
    """
    if not state.groups or not policy.group_roles:
        return state.roles
    by_group = policy.folded_group_roles
    from_groups = {by_group[_fold(g)] for g in state.groups if _fold(g) in by_group}
    return frozenset(state.roles) | frozenset(from_groups)


def _status_for(
    policy: LicensePolicy, active: bool, user_type: str | None, roles: frozenset[str]
) -> str:
    for rule in policy.rules:
        if rule.matches(active, user_type, roles):
            return policy.status(rule.status).name
    if active:
        return policy.status(policy.active_status).name
    if policy.inactive_consumes:
        # Seed 003: suspending an account does not decrease "Accounts in use".
        return policy.status(policy.suspended_status).name
    # Seed 000/002: deactivated ("Inactive") users are not counted as licensed users.
    return policy.status(policy.inactive_status).name


def app_status(policy: LicensePolicy, state: DirectoryState, fallback: bool = False) -> str:
    """The application status for a directory state: ``rules`` first, then the defaults.

    Defaults: active -> ``active_status``; inactive -> ``suspended_status`` when
    ``inactive_consumes`` (seed 003), else ``inactive_status`` (seeds 000, 002). With
    ``fallback=True`` the roles are just ``{fallback_role}``, as in :func:`wants_seat`: a user
    on the fallback role has the status of that role, not of the roles it asked for.
    """
    if fallback and policy.fallback_role:
        roles = frozenset({policy.fallback_role})
    else:
        roles = effective_roles(policy, state)
    return _status_for(policy, state.active, state.user_type, roles)


def is_free(policy: LicensePolicy, roles: Iterable[str], user_type: str | None) -> bool:
    """Whether a user never consumes a seat whatever the status.

    Free when the userType is free (seed 004's Room/Resource/Asset/Queue accounts), or when the
    user holds at least one role and every role is free (seed 001: Administrator Assistant and
    Assistant do not consume a license, but one consuming role is enough to need one). A user
    with no role at all is an ordinary member and is not free.
    """
    if user_type is not None and _fold(user_type) in policy.folded_free_user_types:
        return True
    folded = _fold_all(roles)
    return bool(folded) and folded <= policy.folded_free_roles


def status_consumes(policy: LicensePolicy, status_name: str) -> bool:
    """Whether a user in ``status_name`` holds a seat.

    Seed 001 counts "members under invitation" toward the license total; pending statuses do so
    only while ``count_pending`` is on, whatever their ``consumes`` says.
    """
    status = policy.status(status_name)
    if status.pending:
        return policy.count_pending
    return status.consumes


def wants_seat(policy: LicensePolicy, state: DirectoryState, fallback: bool = False) -> bool:
    """Whether this user needs a seat: the status consumes and the user is not free.

    With ``fallback=True`` the user's roles are taken to be just ``{fallback_role}`` (groups
    ignored), which is what the user would hold after an ``on_full = "fallback"`` decision.
    """
    if fallback:
        if not policy.fallback_role:
            raise PolicyError("fallback requested but the policy has no fallback_role")
        roles = frozenset({policy.fallback_role})
    else:
        roles = effective_roles(policy, state)
    status = _status_for(policy, state.active, state.user_type, roles)
    return status_consumes(policy, status) and not is_free(policy, roles, state.user_type)


class Outcome(Enum):
    """The result of :func:`decide` for a user who wants a seat."""

    GRANT = "grant"
    REFUSE = "refuse"
    QUEUE = "queue"
    FALLBACK = "fallback"
    EXPAND = "expand"


@dataclass(frozen=True)
class SeatPool:
    """Licenses held and how many are in use (seed 004's "Maximum Active Users" and
    "Number of Active Users")."""

    seats: int
    consumed: int

    @property
    def available(self) -> int:
        """Seed 004's "Number of Licences Available"; never negative, even when over-consumed."""
        return max(self.seats - self.consumed, 0)


def decide(policy: LicensePolicy, pool: SeatPool, reduction_target: int | None = None) -> Outcome:
    """The single seat decision every path goes through (create active, PATCH/PUT active, role
    change, group join, userType change, admin).

    GRANT while a seat is available (seed 004: "Provided the 'Number Of Licences Available'
    figure is greater than 0, you can add new users unrestricted"). Otherwise per ``on_full``;
    EXPAND only while ``pool.seats < max_seats``, else REFUSE, so automatic growth (seeds 003,
    004) has a ceiling the operator chose.

    ``reduction_target``: an approved reduce-users-then-licenses workflow (seed 000) is lowering
    consumption to this many seats. Seats above it are not given out (they are about to be
    removed), and the license is not expanded against the workflow: EXPAND becomes REFUSE.
    """
    held = reduction_target is not None and reduction_target < pool.seats
    limit = min(pool.seats, reduction_target) if held and reduction_target is not None else None
    if pool.available > 0 and (limit is None or pool.consumed < limit):
        return Outcome.GRANT
    if held and policy.on_full == "expand":
        return Outcome.REFUSE
    if policy.on_full == "queue":
        return Outcome.QUEUE
    if policy.on_full == "fallback":
        return Outcome.FALLBACK
    if policy.on_full == "expand":
        if policy.max_seats is not None and pool.seats < policy.max_seats:
            return Outcome.EXPAND
        return Outcome.REFUSE
    return Outcome.REFUSE


def _seats(n: int) -> str:
    return f"{n} seat" if n == 1 else f"{n} seats"


def refusal_detail(
    pool: SeatPool, policy: LicensePolicy, reduction_target: int | None = None
) -> str:
    """A one-line reason for a refused seat, shown as the SCIM error ``detail``.

    Okta's task list and Entra's provisioning log show this text to an administrator who may not
    know the agent, so it says what is full, why nothing more happens, and what to change.
    """
    head = f"Seat limit reached: {pool.consumed} of {_seats(pool.seats)} in use"
    add = (
        "add licenses (buy them from the vendor, then `seat-agent licenses set N` or "
        "PUT /admin/licenses)"
    )
    if reduction_target is not None and reduction_target < pool.seats:
        return (
            f"{head}; a license reduction to {_seats(reduction_target)} is in progress and "
            "holds the seats above it. Wait for it to finish or cancel it "
            "(`seat-agent reductions`, then `seat-agent reductions cancel ID`)."
        )
    if policy.on_full == "expand":
        ceiling = policy.max_seats if policy.max_seats is not None else pool.seats
        return (
            f"{head}; licenses are added automatically only up to {ceiling} (max_seats in the "
            "configuration file). Free a seat by deactivating a user, raise max_seats and "
            "reload, or " + add + "."
        )
    return f"{head}; no license is free. Free a seat by deactivating a user, or {add}."


class DecreaseRefused(Exception):
    """A license decrease that is not allowed now.

    ``reason`` is meant for the administrator; ``allowed_from`` is the first day the decrease
    could be made when only the date stands in the way (renewal window), else None.
    """

    def __init__(self, reason: str, allowed_from: date | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.allowed_from = allowed_from


def check_license_change(
    policy_decrease: str,
    current: int,
    new: int,
    consumed: int,
    today: date,
    renewal_date: date | None,
    window_days: int,
    recorded_by_admin: bool = True,
) -> None:
    """Refuse (DecreaseRefused) a change of the license count that the contract does not allow.

    Increases are always allowed (seeds 001, 002, 004: more licenses can be bought at any time).
    Decreases follow seed 000's two steps: first *when* the plan allows a change
    (``policy_decrease``), then *whether* enough users were deactivated:

    * ``"anytime"``: no date restriction.
    * ``"renewal"``: only from ``renewal_date - window_days`` up to ``renewal_date`` (seed 001:
      the count is reduced "at the time of contract renewal").
    * ``"manual"``: the vendor must make the change (seed 004: "please contact your Account
      Manager"; seed 003: the contracted number "cannot be decreased"). The administrator
      recording a vendor-side change (``recorded_by_admin=True``) is accepted; an automated
      decrease is refused.

    In every mode the new count may not be below the users consuming a seat (seed 000: "It is
    not possible to place an order with the number of licensed users less than the number of
    application users").
    """
    if policy_decrease not in DECREASE_MODES:
        raise PolicyError(
            f"decrease must be one of {', '.join(DECREASE_MODES)} (got {policy_decrease!r})"
        )
    if new < 0:
        raise DecreaseRefused(f"Cannot set licenses to {new}: the count must not be negative.")
    if new >= current:
        return
    if policy_decrease == "manual" and not recorded_by_admin:
        raise DecreaseRefused(
            f"Cannot lower licenses from {current} to {new} automatically: with decrease = "
            "manual only the vendor reduces licenses. Change it at the vendor, then record the "
            "new count with PUT /admin/licenses."
        )
    if policy_decrease == "renewal":
        if renewal_date is None:
            raise DecreaseRefused(
                f"Cannot lower licenses from {current} to {new}: decrease = renewal needs "
                "[license] renewal_date."
            )
        opens = renewal_date - timedelta(days=window_days)
        if today < opens:
            raise DecreaseRefused(
                f"Cannot lower licenses from {current} to {new} before {opens.isoformat()}: "
                f"decrease = renewal allows it only in the {window_days} days before the "
                f"renewal on {renewal_date.isoformat()}.",
                allowed_from=opens,
            )
        if today > renewal_date:
            raise DecreaseRefused(
                f"Cannot lower licenses from {current} to {new}: the renewal date "
                f"{renewal_date.isoformat()} has passed; set [license] renewal_date to the next "
                "renewal."
            )
    if new < consumed:
        raise DecreaseRefused(
            f"Cannot set licenses to {new}: {consumed} users consume a seat; deactivate at "
            f"least {consumed - new} first (in the directory, or with `seat-agent reduce --to "
            f"{new}`, which deactivates the least active users and then lowers the licenses)."
        )


def queue_order(entries: Iterable[tuple[str, datetime]]) -> list[str]:
    """User ids in the order queued users get freed seats: first come, first served by
    ``queued_at``, ties broken by id so that every process agrees on the same order."""
    return [user_id for user_id, _ in sorted(entries, key=lambda e: (e[1], e[0]))]
