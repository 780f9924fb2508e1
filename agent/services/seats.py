"""The seat engine: one decision for every path to a seat, applied inside the caller's
write transaction (which already holds the seat-pool lock).

Paths that reach ``settle``: SCIM create with ``active: true``, PATCH/PUT to ``active: true``,
a role change, a group join that maps to a role, a userType change, and the admin API. Every
one gets the same outcome at the limit (refuse, queue, fallback or expand, per
``[license] on_full``). Seats freed by any path go to queued users first come first served, in
the same transaction that frees them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from agent.domain import license as lic
from agent.domain.billing import BillingTerms, prorated_cost
from agent.domain.reduction import SEAT_HOLDING_STATES
from agent.services.events import Notifier, NullNotifier, SeatEvent
from agent.storage import refusals
from agent.storage.records import PoolRow, SeatState, UserRecord
from agent.storage.reductions import reduction_ceiling
from agent.storage.store import StoreTx


class SeatRefused(Exception):
    """No seat could be given; ``detail`` is written for Okta's task list and Entra's log."""

    def __init__(
        self,
        detail: str,
        user_id: str | None = None,
        user_name: str | None = None,
        *,
        at: datetime | None = None,
        path: str = "",
        request: str | None = None,
    ):
        super().__init__(detail)
        self.detail = detail
        self.user_id = user_id
        self.user_name = user_name
        # For the refusals table: when, on which path, in which request.
        self.at = at
        self.path = path
        self.request = request


@dataclass(frozen=True)
class Cause:
    """Who or what caused a seat change, for the ledger."""

    kind: str  # "scim" | "admin" | "reconcile" | "queue"
    request: str | None = None
    # The path a refused demand came in on, as the refusals list shows it ("scim POST /Users",
    # "scim PATCH", "group membership", "reconcile"); the kind when not given.
    path: str | None = None

    def via(self, operation: str) -> Cause:
        """This cause on one operation: ``Cause("scim").via("PATCH")`` -> "scim PATCH"."""
        return replace(self, path=f"{self.kind} {operation}")

    @property
    def where(self) -> str:
        return self.path or self.kind


def directory_state(resource: dict, group_names: Iterable[str]) -> lic.DirectoryState:
    """The IdP's view of a user, from its SCIM resource and group memberships."""
    roles = frozenset(
        str(r.get("value")) for r in resource.get("roles") or [] if r.get("value") is not None
    )
    return lic.DirectoryState(
        active=bool(resource.get("active", True)),
        roles=roles,
        groups=frozenset(group_names),
        user_type=resource.get("userType"),
    )


@dataclass(frozen=True, slots=True)
class _Claim:
    """One user's claim on a seat as ``SeatEngine.settle`` decides it: who, the directory
    state, the seat state before, the cause, and what follows from them at ``now``."""

    user_id: str
    user_name: str
    state: lic.DirectoryState
    prev: SeatState
    cause: Cause
    now: datetime
    status: str
    fallback: bool
    last_active: datetime | None
    deactivated_at: datetime | None


class SeatEngine:
    def __init__(
        self,
        policy: lic.LicensePolicy,
        terms: BillingTerms,
        clock: Callable[[], datetime],
        notifier: Notifier | None = None,
        request_id: Callable[[], str | None] = lambda: None,
    ):
        self.policy = policy
        self.terms = terms
        self.clock = clock
        self.notifier: Notifier = notifier or NullNotifier()
        # The id of the request being served, if any (agent.web.observability).
        self.request_id = request_id

    def _announce(
        self,
        tx: StoreTx,
        kind: str,
        user_id: str | None,
        user_name: str | None,
        detail: str = "",
        cost: Decimal | None = None,
        after: tuple[int, int] | None = None,
    ) -> None:
        """Tell the notifier; ``after`` is (seats, consumed) after the change when the caller
        knows it (saves a read on the hot path)."""
        if after is None:
            pool = tx.pool.current()
            after = (pool.seats, pool.consumed)
        self.notifier.seat_event(
            tx,
            SeatEvent(
                kind=kind,
                seats=after[0],
                consumed=after[1],
                user_id=user_id,
                user_name=user_name,
                detail=detail,
                cost=cost,
            ),
        )

    def _ledger(self, tx: StoreTx, *, cause: Cause, **entry: Any) -> None:
        """Append to the seat ledger with the cause and the request it came in on (the
        ``X-Request-Id`` the web layer assigned), so an entry can be traced to the IdP call."""
        tx.ledger.append(cause=cause.kind, request=cause.request or self.request_id(), **entry)

    def _policy(self, seats: int) -> lic.LicensePolicy:
        return replace(self.policy, seats=seats)

    def settle(
        self,
        tx: StoreTx,
        *,
        user_id: str,
        user_name: str,
        state: lic.DirectoryState,
        previous: SeatState | None,
        cause: Cause,
    ) -> SeatState:
        """Decide the user's seat state for ``state``; update the pool and ledger.

        Raises SeatRefused (and the caller's transaction rolls back, changing nothing) when the
        user needs a seat, holds none, and on_full is refuse or expand at max_seats.
        """
        claim = self._claim(user_id, user_name, state, previous, cause)
        pool = tx.pool.current()
        if not lic.wants_seat(self.policy, state, fallback=claim.fallback):
            return self._without_seat(tx, claim, pool)
        kept = self._seat_or_place_kept(claim)
        if kept is not None:
            return kept
        outcome = self._outcome_at_limit(tx, claim, pool)
        if outcome is lic.Outcome.QUEUE:
            return self._queue(tx, claim, pool)
        if outcome is lic.Outcome.FALLBACK:
            return self._fall_back(tx, claim, pool)
        return self._grant(tx, claim, pool, expand=outcome is lic.Outcome.EXPAND)

    def _claim(
        self,
        user_id: str,
        user_name: str,
        state: lic.DirectoryState,
        previous: SeatState | None,
        cause: Cause,
    ) -> _Claim:
        now = self.clock()
        prev = previous or SeatState(holds_seat=False)
        # A user kept on the fallback role stays there while active (it was never given a seat).
        fallback = prev.on_fallback and state.active
        # Seed 002 metered billing: a user is active up to the moment it is deactivated.
        was_active = previous is not None and prev.deactivated_at is None
        return _Claim(
            user_id=user_id,
            user_name=user_name,
            state=state,
            prev=prev,
            cause=cause,
            now=now,
            status=lic.app_status(self.policy, state, fallback=fallback),
            fallback=fallback,
            last_active=now if state.active or was_active else prev.last_active_at,
            deactivated_at=self._deactivated_at(prev, state, now),
        )

    def _without_seat(self, tx: StoreTx, claim: _Claim, pool: PoolRow) -> SeatState:
        """The user wants no seat: one it holds goes back to the pool."""
        if claim.prev.holds_seat:
            why = (
                "deactivated"
                if not claim.state.active
                else "needs no seat now (a free role, status or user type)"
            )
            self._release(tx, claim.user_id, claim.user_name, pool, claim.cause, claim.now, why)
        return SeatState(
            app_status=claim.status,
            license_state=self._free_state(claim.state, claim.status),
            holds_seat=False,
            on_fallback=claim.fallback,
            last_active_at=claim.last_active,
            deactivated_at=claim.deactivated_at,
        )

    def _seat_or_place_kept(self, claim: _Claim) -> SeatState | None:
        """The user wants a seat and already holds one, or waits in the queue (or leaves it,
        deactivated): no decision at the limit. None when the limit decides."""
        prev = claim.prev
        if prev.holds_seat:
            return SeatState(
                app_status=claim.status,
                license_state="licensed",
                holds_seat=True,
                last_active_at=claim.last_active,
                deactivated_at=claim.deactivated_at,
            )
        if prev.license_state == "queued" and not claim.state.active:
            # Deactivated while waiting (inactive_consumes keeps a *held* seat, seed 003, but
            # a user that never got one has nothing to keep): it leaves the queue, no seat.
            return SeatState(
                app_status=self.policy.inactive_status,
                license_state="inactive",
                holds_seat=False,
                last_active_at=claim.last_active,
                deactivated_at=claim.deactivated_at,
            )
        if prev.license_state == "queued" and prev.queued_at is not None:
            # Still waiting: keep its place in line (first come, first served).
            return replace(
                prev, last_active_at=claim.last_active, deactivated_at=claim.deactivated_at
            )
        return None

    def _outcome_at_limit(self, tx: StoreTx, claim: _Claim, pool: PoolRow) -> lic.Outcome:
        """What ``[license] on_full`` gives a user who needs a new seat. A refusal raises
        SeatRefused; a queued or fallback user is recorded as refused demand."""
        # An approved reduction holds the seats above its target (seed 000): every path to a
        # seat gives the same outcome as if the license were already lowered.
        target = reduction_ceiling(tx, SEAT_HOLDING_STATES)
        current = lic.SeatPool(pool.seats, pool.consumed)
        outcome = lic.decide(self._policy(pool.seats), current, target)
        if outcome is lic.Outcome.REFUSE:
            raise SeatRefused(
                lic.refusal_detail(current, self._policy(pool.seats), target),
                claim.user_id,
                claim.user_name,
                at=claim.now,
                path=claim.cause.where,
                request=claim.cause.request or self.request_id(),
            )
        if outcome is not lic.Outcome.EXPAND and outcome is not lic.Outcome.GRANT:
            self._refused_demand(
                tx,
                "queued" if outcome is lic.Outcome.QUEUE else "fallback",
                claim.now,
                claim.cause.where,
                claim.user_id,
                claim.user_name,
                claim.cause.request,
            )
        return outcome

    def _queue(self, tx: StoreTx, claim: _Claim, pool: PoolRow) -> SeatState:
        """No seat free: the user waits in line, from now."""
        self._ledger(
            tx,
            at=claim.now,
            kind="queue",
            cause=claim.cause,
            user_id=claim.user_id,
            user_name=claim.user_name,
            detail=f"no seat free ({pool.consumed} of {pool.seats} in use); queued",
            seats_after=pool.seats,
            consumed_after=pool.consumed,
        )
        self._announce(
            tx, "queued", claim.user_id, claim.user_name, after=(pool.seats, pool.consumed)
        )
        return SeatState(
            app_status=self.policy.queued_status,
            license_state="queued",
            holds_seat=False,
            queued_at=claim.now,
            last_active_at=claim.prev.last_active_at,
        )

    def _fall_back(self, tx: StoreTx, claim: _Claim, pool: PoolRow) -> SeatState:
        """No seat free: the user works on the fallback role, which needs none."""
        self._announce(
            tx,
            "fallback",
            claim.user_id,
            claim.user_name,
            str(self.policy.fallback_role),
            after=(pool.seats, pool.consumed),
        )
        return SeatState(
            app_status=lic.app_status(self.policy, claim.state, fallback=True),
            license_state="free",
            holds_seat=False,
            on_fallback=True,
            last_active_at=claim.last_active,
        )

    def _grant(self, tx: StoreTx, claim: _Claim, pool: PoolRow, *, expand: bool) -> SeatState:
        """The user takes a seat, after the license count grows by one when ``expand``."""
        seats = self._expand(tx, claim, pool) if expand else pool.seats
        tx.pool.update(seats, pool.consumed + 1, claim.now)
        self._ledger(
            tx,
            at=claim.now,
            kind="grant",
            cause=claim.cause,
            user_id=claim.user_id,
            user_name=claim.user_name,
            detail=f"status {claim.status}",
            seats_after=seats,
            consumed_after=pool.consumed + 1,
        )
        self._announce(
            tx, "granted", claim.user_id, claim.user_name, after=(seats, pool.consumed + 1)
        )
        return SeatState(
            app_status=claim.status,
            license_state="licensed",
            holds_seat=True,
            last_active_at=claim.last_active,
            deactivated_at=claim.deactivated_at,
        )

    def _expand(self, tx: StoreTx, claim: _Claim, pool: PoolRow) -> int:
        """One license more (``on_full = "expand"``), billed pro rata; the new license count."""
        seats = pool.seats + 1
        cost = prorated_cost(self.terms, 1, claim.now.date())
        tx.pool.update(seats, pool.consumed, claim.now)
        self._ledger(
            tx,
            at=claim.now,
            kind="expand",
            cause=claim.cause,
            user_id=claim.user_id,
            user_name=claim.user_name,
            detail=(
                f"licenses {pool.seats} -> {seats} "
                f"(added automatically, ceiling {self.policy.max_seats})"
            ),
            seats_after=seats,
            consumed_after=pool.consumed,
            cost=cost,
        )
        self._announce(
            tx,
            "expanded",
            claim.user_id,
            claim.user_name,
            f"{pool.seats} -> {seats}",
            cost,
            after=(seats, pool.consumed),
        )
        return seats

    def _free_state(self, state: lic.DirectoryState, status: str) -> str:
        if lic.status_consumes(self.policy, status):
            return "free"  # consuming status, but a free role or userType
        return "free" if state.active else "inactive"

    @staticmethod
    def _deactivated_at(prev: SeatState, state: lic.DirectoryState, now: datetime):
        if state.active:
            return None
        return prev.deactivated_at or now

    def _release(
        self,
        tx: StoreTx,
        user_id: str,
        user_name: str,
        pool,
        cause: Cause,
        now: datetime,
        detail: str | None = None,
    ) -> None:
        consumed = max(pool.consumed - 1, 0)
        tx.pool.update(pool.seats, consumed, now)
        self._ledger(
            tx,
            at=now,
            kind="release",
            cause=cause,
            user_id=user_id,
            user_name=user_name,
            detail=detail,
            seats_after=pool.seats,
            consumed_after=consumed,
        )
        self._announce(tx, "released", user_id, user_name, after=(pool.seats, consumed))

    def _refused_demand(
        self,
        tx: StoreTx,
        outcome: str,
        at: datetime,
        path: str,
        user_id: str | None,
        user_name: str | None,
        request: str | None,
    ) -> None:
        """One row of refused demand (issue 14), with the pool as it stands in ``tx``."""
        pool = tx.pool.current()
        refusals.record(
            tx,
            at=at,
            outcome=outcome,
            path=path,
            licensed=pool.seats,
            consumed=pool.consumed,
            queued=tx.users.queued_count(),
            user_id=user_id,
            user_name=user_name,
            request=request or self.request_id(),
        )

    def record_refusal(self, tx: StoreTx, refusal: SeatRefused, announce: bool = True) -> None:
        """A refused activation rolled back: record it (refusals table) and announce it
        (alerts) from a transaction of its own, or in reconcile's, which goes on."""
        self._refused_demand(
            tx,
            "refused",
            refusal.at or self.clock(),
            refusal.path or "unknown",
            refusal.user_id,
            refusal.user_name,
            refusal.request,
        )
        if announce:
            self._announce(tx, "refused", refusal.user_id, refusal.user_name, refusal.detail)

    def release_deleted(self, tx: StoreTx, record: UserRecord, cause: Cause) -> None:
        """A deleted user gives back its seat (seed 003: only deletion frees a suspended one)."""
        if record.seat.holds_seat:
            self._release(
                tx,
                record.id,
                record.user_name,
                tx.pool.current(),
                cause,
                self.clock(),
                "user deleted",
            )

    def promote_queue(self, tx: StoreTx, cause: Cause) -> list[UserRecord]:
        """Give free seats to queued users, first come first served, in this transaction.

        While a reduce-users-then-licenses workflow (seed 000) is carrying out its plan, seats
        it frees are not handed to the queue above its target: otherwise each deactivation
        would be refilled, consumption would never drop, and the workflow would deactivate
        twice the users it planned. Promotion capacity is ``min(seats, target) - consumed``.
        """
        promoted: list[UserRecord] = []
        ceiling = reduction_ceiling(tx, SEAT_HOLDING_STATES)
        while True:
            pool = tx.pool.current()
            usable = pool.seats if ceiling is None else min(pool.seats, ceiling)
            if usable - pool.consumed <= 0:
                return promoted
            head = tx.users.queued(limit=1)
            if not head:
                return promoted
            user = head[0]
            state = directory_state(user.resource, tx.groups.names_of_user(user.id))
            now = self.clock()
            if not state.active or not lic.wants_seat(self.policy, state):
                # Its directory state no longer needs a seat (or it was deactivated while
                # waiting): leave the queue without one.
                status = lic.app_status(self.policy, state)
                left = (
                    (self.policy.inactive_status, "inactive")
                    if not state.active
                    else (status, self._free_state(state, status))
                )
                tx.users.set_seat(
                    user.id,
                    SeatState(
                        app_status=left[0],
                        license_state=left[1],
                        last_active_at=user.seat.last_active_at,
                        deactivated_at=user.seat.deactivated_at,
                    ),
                    now,
                )
                continue
            seat = SeatState(
                app_status=lic.app_status(self.policy, state),
                license_state="licensed",
                holds_seat=True,
                last_active_at=now,
            )
            tx.users.set_seat(user.id, seat, now)
            tx.pool.update(pool.seats, pool.consumed + 1, now)
            self._ledger(
                tx,
                at=now,
                kind="promote",
                cause=cause,
                user_id=user.id,
                user_name=user.user_name,
                detail=f"queued since {user.seat.queued_at}",
                seats_after=pool.seats,
                consumed_after=pool.consumed + 1,
            )
            user.seat = seat
            user.queue_position = None  # out of the queue now
            promoted.append(user)
            self.notifier.user_changed(tx, user.id)
            self._announce(
                tx, "promoted", user.id, user.user_name, after=(pool.seats, pool.consumed + 1)
            )

    def set_licenses(
        self,
        tx: StoreTx,
        new: int,
        *,
        decrease_mode: str,
        renewal_date: date | None,
        window_days: int,
        recorded_by_admin: bool,
        cause: Cause,
        note: str | None = None,
    ) -> tuple[int, list[UserRecord]]:
        """Change the license count (seed 000: never below consuming users), then serve the
        queue."""
        pool = tx.pool.current()
        now = self.clock()
        if decrease_mode == "never" and new < pool.seats:
            raise lic.DecreaseRefused(
                f"Cannot lower licenses from {pool.seats} to {new}: this contract's count only "
                "rises (a maximum-number contract: decrease = 'never'); ask the vendor whether "
                "it can be lowered."
            )
        lic.check_license_change(
            "manual" if decrease_mode == "never" else decrease_mode,
            pool.seats,
            new,
            pool.consumed,
            now.date(),
            renewal_date,
            window_days,
            recorded_by_admin=recorded_by_admin,
        )
        if new != pool.seats:
            cost = (
                prorated_cost(self.terms, new - pool.seats, now.date())
                if new > pool.seats
                else None
            )
            tx.pool.update(new, pool.consumed, now)
            self._ledger(
                tx,
                at=now,
                kind="licenses",
                cause=cause,
                detail=f"licenses {pool.seats} -> {new}"
                + (
                    " (recorded: lowered at the vendor, decrease = manual)"
                    if decrease_mode == "manual" and new < pool.seats
                    else ""
                )
                + (f" ({note})" if note else ""),
                seats_after=new,
                consumed_after=pool.consumed,
                cost=cost,
            )
            self._announce(
                tx,
                "licenses",
                None,
                None,
                f"{pool.seats} -> {new}",
                cost,
                after=(new, pool.consumed),
            )
        return new, self.promote_queue(tx, cause)
