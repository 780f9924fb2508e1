"""The reduction workflow (seed 000: reduce users, then licenses), persisted and resumable.

``advance(reduction_id)`` and ``advance_all()`` are plain functions a scheduler job calls. Each
step is idempotent: it reads the persisted state, does what is still left, and records its
progress, so calling it twice in a row or after a crash mid-step never deactivates extra users
and never lowers the licenses twice. The seat engine keeps the invariant at every step: the
license count is never below the users consuming a seat.

How users stop consuming: the reduction PATCHes ``active: false`` through the provisioning
service with ``Cause("admin")``, the same path as an IdP deactivation, so the seat engine,
the ledger, the queue and the downstream push all behave as they would for the IdP. The
directory owns ``active``: the IdP sees ``active: false`` on its next read, and the plan lists
who was chosen so the admin also unassigns them in Okta or Entra (otherwise the next IdP push
may re-activate them, which the verifying step notices). Users the directory already
deactivated but who still consume (seed 003) are freed only by deletion, so they are chosen
only when ``[reductions] cleanup = true`` (seed 000 warns that deletion deletes data).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from agent.config import LicenseSettings, ReductionSettings
from agent.connectors.base import DeliveryError, RemoteUser
from agent.domain import license as lic
from agent.domain import reduction as red
from agent.domain.reduction import State
from agent.scim.errors import ScimError
from agent.services.admin import SeatAdmin
from agent.services.outbox_notifier import DELETE_USER, PUSH_USER
from agent.services.provisioning import Provisioning
from agent.services.seats import Cause, directory_state
from agent.services.webhook_events import ACTIVE, WEBHOOK
from agent.storage import outbox
from agent.storage import reductions as rows
from agent.storage.records import UserRecord
from agent.storage.reductions import ReductionRow
from agent.storage.store import Store, StoreTx

log = logging.getLogger("seat_agent.reductions")

ADMIN = Cause("admin")
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
DEACTIVATE_BODY = {
    "schemas": [PATCH_OP],
    "Operations": [{"op": "replace", "path": "active", "value": False}],
}
RENEWAL_PROPOSED_KEY = "reductions.renewal_proposed_for"
MAX_STEPS = 20
BATCH = 1000

LastLogin = Callable[[], Mapping[str, datetime]]
AppUsers = Callable[[], Iterable[RemoteUser]]
AlertTable = tuple[Sequence[str], Sequence[Sequence[object]]]  # (headers, rows)


class ReductionAlerts(Protocol):
    """The alerts service (another module): one deduplicated alert per (key, state)."""

    def raise_alert(
        self,
        tx: StoreTx,
        key: str,
        state: str,
        subject: str,
        lines: list[str],
        table: AlertTable | None = None,
    ) -> object: ...


class ReductionNotFound(Exception):
    """No reduction with this id (HTTP 404)."""


class ReductionConflict(Exception):
    """The request conflicts with the workflow's state (HTTP 409); ``plan`` when one was made."""

    def __init__(self, message: str, plan: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.plan = plan


class NothingToReduce(ReductionConflict):
    """A target at or above the licenses held: no reduction (a bad argument on the CLI)."""

    def __init__(self, seats: int, target: int):
        super().__init__(
            f"nothing to reduce: {seats} licenses are held and the target is {target}; a "
            f"reduction needs a target below {seats} (to add licenses: seat-agent licenses set "
            f"{target})"
        )
        self.seats = seats
        self.target = target


InvalidTransition = red.InvalidTransition


@dataclass
class AppView:
    """The downstream application's users, read once and outside any database transaction
    (a slow or dead downstream never holds the write lock). ``error`` says why it could not
    be read; the plan then ranks by directory activity and verifying waits."""

    logins: dict[str, datetime] = field(default_factory=dict)
    active_ids: set[str] = field(default_factory=set)  # externalIds of active app users
    active_unlinked: int = 0  # active app users without an externalId (not ours)
    active_count: int | None = None  # an application that only counts (webhook count_url)
    error: str | None = None

    def notes(self) -> list[str]:
        if self.error is None:
            return []
        return [
            f"The application's last-login data could not be read ({self.error}); candidates"
            " are ranked by their last directory activity instead."
        ]


@dataclass
class Reduction:
    """A workflow as the admin API and the CLI show it."""

    id: str
    target: int
    state: str
    created: datetime
    updated: datetime
    proposed_by: str
    reason: str | None
    plan: dict[str, Any]
    history: list[dict[str, Any]]

    @classmethod
    def of(cls, row: ReductionRow) -> Reduction:
        return cls(
            row.id,
            row.target,
            row.state,
            row.created,
            row.updated,
            row.proposed_by,
            row.reason,
            row.plan,
            row.history,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "target": self.target,
            "state": self.state,
            "created": self.created.isoformat(),
            "updated": self.updated.isoformat(),
            "proposed_by": self.proposed_by,
            "reason": self.reason,
            "plan": self.plan,
            "history": self.history,
        }

    def summary(self) -> dict[str, Any]:
        chosen = self.plan.get("candidates", [])
        return {
            "id": self.id,
            "target": self.target,
            "state": self.state,
            "created": self.created.isoformat(),
            "updated": self.updated.isoformat(),
            "proposed_by": self.proposed_by,
            "reason": self.reason,
            "users": len(chosen),
            "deactivated": sum(1 for c in chosen if c.get("outcome") in ("deactivated", "deleted")),
        }


def _iso(value: datetime | date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def plan_dict(plan: red.Plan, round_no: int = 1) -> dict[str, Any]:
    """The plan as stored (JSON) and shown."""
    return {
        "target": plan.target,
        "seats": plan.seats,
        "consumed": plan.consumed,
        "needed": plan.needed,
        "shortfall": plan.shortfall,
        "feasible": plan.feasible,
        "problem": plan.problem(),
        "window": plan.window.as_dict(),
        "candidates": [candidate_dict(c, round_no) for c in plan.candidates],
        "excluded": [{"user_name": e.user_name, "reason": e.reason} for e in plan.excluded],
        "excluded_counts": plan.excluded_counts,
        "notes": list(plan.notes),
        "retried": False,
    }


def candidate_dict(c: red.Candidate, round_no: int) -> dict[str, Any]:
    return {
        "user_id": c.user_id,
        "user_name": c.user_name,
        "action": c.action,
        "reason": c.reason,
        "last_activity": _iso(c.last_activity),
        "activity_source": c.activity_source,
        "round": round_no,
        "outcome": None,  # deactivated | deleted | not needed | skipped: ... | gone
        "done_at": None,
        "cleanup": None,  # deleted | kept: ... | gone
    }


PLAN_HEADERS = ("userName", "action", "reason", "last activity")


def plan_table(plan: Mapping[str, Any]) -> AlertTable:
    """(headers, rows): userName, action, reason, last activity of each chosen user."""
    rows = [
        (c["user_name"], c["action"], c["reason"], (c["last_activity"] or "never")[:10])
        for c in plan.get("candidates", [])
    ]
    return PLAN_HEADERS, rows


class Reductions:
    """Plan, approve, cancel and advance reductions; propose them when due."""

    def __init__(
        self,
        store: Store,
        provisioning: Provisioning,
        seat_admin: SeatAdmin,
        settings: ReductionSettings,
        license_settings: LicenseSettings,
        clock: Callable[[], datetime],
        alerts: ReductionAlerts | None = None,
        last_login: LastLogin | None = None,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        app_users: AppUsers | None = None,
        app_count: Callable[[], int] | None = None,
    ):
        self.store = store
        self.provisioning = provisioning
        self.seat_admin = seat_admin
        self.settings = settings
        self.license = license_settings
        self.clock = clock
        self.alerts = alerts
        self.last_login = last_login
        self.new_id = new_id
        self.app_users = app_users
        # An application that cannot be listed but counts its active users (webhook).
        self.app_count = app_count

    @property
    def _reads_app(self) -> bool:
        return self.app_users is not None or self.app_count is not None

    @property
    def policy(self) -> lic.LicensePolicy:
        return self.seat_admin.seats.policy

    # -- planning --------------------------------------------------------------------------

    def _rules(self) -> red.PlanRules:
        return red.PlanRules(
            grace_days=self.settings.grace_days,
            protected_roles=frozenset(self.settings.protected_roles),
            break_glass=frozenset(self.settings.break_glass),
            allow_delete=self.settings.cleanup,
        )

    def _window(self, today: date) -> red.ChangeWindow:
        return red.change_window(
            self.license.decrease,
            self.license.renewal_date,
            self.license.renewal_window_days,
            today,
        )

    def _app_view(self) -> AppView | None:
        """Read the application's users now, with no transaction open; None without a
        downstream. A downstream that cannot be read gives a view with ``error`` set."""
        if not self._reads_app and self.last_login is None:
            return None
        view = AppView()
        try:
            if self.app_count is not None:
                view.active_count = self.app_count()
            if self.last_login is not None:
                view.logins = dict(self.last_login())
            if self.app_users is not None:
                for r in self.app_users():
                    if r.external_id and r.last_login is not None:
                        view.logins.setdefault(r.external_id, r.last_login)
                    if r.active and r.external_id:
                        view.active_ids.add(r.external_id)
                    elif r.active:
                        view.active_unlinked += 1
        except DeliveryError as err:
            log.warning("cannot read the application's users: %s", err)
            return AppView(error=str(err))
        return view

    def _holders(self, tx: StoreTx, logins: Mapping[str, datetime]) -> Iterator[red.SeatHolder]:
        """Every user holding a seat, in batches (memory stays flat as users grow)."""
        last = 0
        while True:
            batch = tx.users.holders_after(last, BATCH)
            if not batch.items:
                return
            last = batch.last_seq
            records = batch.items
            names = tx.groups.names_by_user([r.id for r in records])
            for record in records:
                yield self._holder(record, names.get(record.id, []), logins)

    def _holder(
        self, record: UserRecord, groups: list[str], logins: Mapping[str, datetime]
    ) -> red.SeatHolder:
        state = directory_state(record.resource, groups)
        inactive = lic.DirectoryState(
            active=False, roles=state.roles, groups=state.groups, user_type=state.user_type
        )
        login = logins.get(record.id)
        if login is not None:
            last, source = login, "last login at the application"
        else:
            last = record.seat.last_active_at or record.last_modified
            source = "last directory activity"
        return red.SeatHolder(
            user_id=record.id,
            user_name=record.user_name,
            active=state.active,
            roles=lic.effective_roles(self.policy, state),
            created=record.created,
            last_activity=last,
            activity_source=source,
            frees_on_deactivation=not lic.wants_seat(self.policy, inactive),
        )

    def _plan(
        self,
        tx: StoreTx,
        target: int,
        view: AppView | None,
        exclude_ids: tuple[str, ...] = (),
        reason: str = "",
    ) -> red.Plan:
        pool = tx.pool.current()
        now = self.clock()
        kwargs = {"exclude_reason": reason} if reason else {}
        plan = red.plan_reduction(
            target=target,
            seats=pool.seats,
            consumed=pool.consumed,
            holders=self._holders(tx, view.logins if view is not None else {}),
            rules=self._rules(),
            now=now,
            window=self._window(now.date()),
            exclude_ids=exclude_ids,
            **kwargs,
        )
        if view is not None:
            plan.notes.extend(view.notes())
        return plan

    def preview(self, target: int) -> dict[str, Any]:
        """The plan a reduction to ``target`` would follow now; creates nothing (dry run)."""
        _check_target(target)
        with self.store.read() as tx:
            seats = tx.pool.current().seats
        if target >= seats:
            raise NothingToReduce(seats, target)
        view = self._app_view()
        with self.store.read() as tx:
            return plan_dict(self._plan(tx, target, view))

    def create(self, target: int, proposed_by: str = "admin", trigger: str = "admin") -> Reduction:
        """Plan a reduction to ``target`` licenses and persist it (``planned``, or ``approved``
        with ``auto_approve``). ReductionConflict when another is open, when there is nothing
        to reduce, or when not enough users can stop consuming. The application's users
        (last logins) are read before the write transaction opens; when they cannot be read
        the plan ranks by directory activity and says so in its notes."""
        _check_target(target)
        view = self._app_view()
        with self.store.write() as tx:
            return self._create(tx, target, proposed_by, trigger, view)

    def _create(
        self, tx: StoreTx, target: int, proposed_by: str, trigger: str, view: AppView | None
    ) -> Reduction:
        open_ = rows.list_reductions(tx, tuple(s.value for s in red.OPEN_STATES), limit=1)
        if open_:
            raise ReductionConflict(
                f"reduction {open_[0].id} is still {open_[0].state}; finish or cancel it first"
            )
        pool = tx.pool.current()
        if target >= pool.seats:
            raise NothingToReduce(pool.seats, target)
        plan = self._plan(tx, target, view)
        data = plan_dict(plan)
        data["trigger"] = trigger
        if not plan.feasible:
            raise ReductionConflict(plan.problem() or "plan is not feasible", data)
        now = self.clock()
        state = State.APPROVED if self.settings.auto_approve else State.PLANNED
        note = f"proposed by {proposed_by}: {plan.needed} users stop consuming, licenses " + (
            f"{pool.seats} -> {target}; change window: {plan.window.detail}"
        )
        history = [{"at": now.isoformat(), "state": State.PLANNED.value, "note": note}]
        if state is State.APPROVED:
            history.append(
                {"at": now.isoformat(), "state": state.value, "note": "auto_approve = true"}
            )
        row = ReductionRow(
            id=self.new_id(),
            target=target,
            state=state.value,
            created=now,
            updated=now,
            plan=data,
            reason=None if state is State.APPROVED else "awaiting approval",
            history=history,
            proposed_by=proposed_by,
        )
        rows.insert_reduction(tx, row)
        self._alert_created(tx, row)
        return Reduction.of(row)

    # -- reading ---------------------------------------------------------------------------

    def get(self, reduction_id: str) -> Reduction:
        with self.store.read() as tx:
            return Reduction.of(self._require(tx, reduction_id))

    def list_all(self, limit: int = 100) -> list[Reduction]:
        with self.store.read() as tx:
            return [Reduction.of(r) for r in rows.list_reductions(tx, limit=limit)]

    @staticmethod
    def _require(tx: StoreTx, reduction_id: str) -> ReductionRow:
        row = rows.get_reduction(tx, reduction_id)
        if row is None:
            raise ReductionNotFound(f"reduction {reduction_id} not found")
        return row

    # -- admin decisions -------------------------------------------------------------------

    def approve(self, reduction_id: str, by: str = "admin") -> Reduction:
        with self.store.write() as tx:
            row = self._require(tx, reduction_id)
            self._move(tx, row, State.APPROVED, f"approved by {by}", reason=None)
            return Reduction.of(row)

    def cancel(self, reduction_id: str, reason: str | None = None, by: str = "admin") -> Reduction:
        """Stop at any open state. Users already deactivated stay so (the directory owns
        ``active``: re-activate them in the IdP if wanted); the plan lists who they are."""
        with self.store.write() as tx:
            row = self._require(tx, reduction_id)
            done = [
                c["user_name"]
                for c in row.plan.get("candidates", [])
                if c.get("outcome") in ("deactivated", "deleted")
            ]
            why = f"cancelled by {by}" + (f": {reason}" if reason else "")
            note = why + (f"; already deactivated: {', '.join(done)}" if done else "")
            self._move(tx, row, State.CANCELLED, note, reason=why)
            return Reduction.of(row)

    # -- the workflow ----------------------------------------------------------------------

    def advance_all(self, keep_going: Callable[[], bool] | None = None) -> list[Reduction]:
        """The scheduler job: advance every open reduction as far as it can go now.
        ``keep_going`` (the scheduler's lease check) is asked before each reduction."""
        out = []
        with self.store.read() as tx:
            ids = [
                r.id
                for r in rows.list_reductions(
                    tx, tuple(s.value for s in red.OPEN_STATES), limit=100
                )
            ]
        for reduction_id in ids:
            if keep_going is not None and not keep_going():
                log.info("scheduler lease lost: reductions are advanced by the new holder")
                break
            try:
                out.append(self.advance(reduction_id))
            except Exception:  # a transient failure: the next run resumes from the same state
                log.exception("advancing reduction %s failed; will retry", reduction_id)
        return out

    def advance(self, reduction_id: str) -> Reduction:
        """Take steps until the reduction waits (approval, a window, the vendor, the cleanup
        grace) or ends."""
        reduction = self.get(reduction_id)
        for _ in range(MAX_STEPS):
            before = (reduction.state, reduction.reason)
            reduction = self.step(reduction_id)
            if (reduction.state, reduction.reason) == before or reduction.state in {
                s.value for s in red.FINAL_STATES
            }:
                break
        return reduction

    def step(self, reduction_id: str) -> Reduction:
        """One step of the workflow; safe to repeat."""
        state = State(self.get(reduction_id).state)
        if state is State.APPROVED:
            self._transition(reduction_id, state, State.DEACTIVATING, "deactivating users")
        elif state is State.DEACTIVATING:
            self._deactivate(reduction_id)
        elif state is State.VERIFYING:
            self._verify(reduction_id)
        elif state is State.REDUCING_LICENSES:
            self._reduce_licenses(reduction_id)
        elif state is State.AWAITING_MANUAL_LICENSE_CHANGE:
            self._await_manual(reduction_id)
        elif state is State.CLEANUP:
            self._cleanup(reduction_id)
        return self.get(reduction_id)

    def _deactivate(self, reduction_id: str) -> None:
        """Stop planned users consuming, in plan order, while consumption exceeds the target.

        Each user is one provisioning transaction followed by one progress record; after a
        crash between the two, the user no longer consumes and is recorded as done, not
        deactivated twice. A cancel between users is honoured before the next one.
        """
        while True:
            with self.store.read() as tx:
                row = self._require(tx, reduction_id)
                if row.state != State.DEACTIVATING:
                    return
                consumed = tx.pool.current().consumed
                index = _next_pending(row.plan)
                record = (
                    tx.users.get(row.plan["candidates"][index]["user_id"])
                    if index is not None
                    else None
                )
            if index is None:
                self._transition(reduction_id, State.DEACTIVATING, State.VERIFYING, "verifying")
                return
            candidate = row.plan["candidates"][index]
            if self._ours_before_crash(record, row):
                # Deactivated by this reduction just before a crash (the progress record was
                # never written): it is ours, so the cleanup step may delete it later.
                outcome = "deactivated"
            elif consumed <= row.target:
                outcome = "not needed"
            else:
                outcome = self._stop_consuming(candidate, record)
            self._record_outcome(reduction_id, index, outcome)

    def _ours_before_crash(self, record: UserRecord | None, row: ReductionRow) -> bool:
        if record is None or record.seat.holds_seat or record.active:
            return False
        return self._released_by_us(record.id, _deactivating_since(row))

    def _stop_consuming(self, candidate: dict[str, Any], record: UserRecord | None) -> str:
        if record is None:
            return "gone"
        if not record.seat.holds_seat:
            return "already not consuming"
        state = directory_state(record.resource, [g[1] for g in record.groups])
        roles = {r.casefold() for r in lic.effective_roles(self.policy, state)}
        if roles & {r.casefold() for r in self.settings.protected_roles}:
            return "skipped: now holds a protected role"
        if record.user_name.casefold() in {b.casefold() for b in self.settings.break_glass}:
            return "skipped: break-glass account"
        try:
            if candidate["action"] == red.DELETE:
                if not self.settings.cleanup or record.active:
                    return "skipped: deletion no longer allowed"
                self.provisioning.delete_user(record.id, None, cause=ADMIN)
                return "deleted"
            if not record.active:
                return "skipped: inactive in the directory yet consuming"
            after = self.provisioning.patch_user(record.id, DEACTIVATE_BODY, None, cause=ADMIN)
        except ScimError as err:
            if err.status == 404:
                return "gone"
            raise
        return "deactivated" if not after.seat.holds_seat else "skipped: still consuming"

    def _released_by_us(self, user_id: str, since: datetime | None) -> bool:
        """Whether the seat ledger shows an admin-caused release of ``user_id`` since this
        reduction began deactivating (the reduction's own PATCH)."""
        if since is None:
            return False
        with self.store.read() as tx:
            return tx.ledger.released_since(user_id, ADMIN.kind, since)

    def _record_outcome(self, reduction_id: str, index: int, outcome: str) -> None:
        with self.store.write() as tx:
            row = self._require(tx, reduction_id)
            candidate = row.plan["candidates"][index]
            if candidate.get("outcome") is not None:
                return
            now = self.clock()
            candidate["outcome"] = outcome
            candidate["done_at"] = now.isoformat()
            row.updated = now
            rows.save_reduction(tx, row, row.state)

    def _verify(self, reduction_id: str) -> None:
        """Recount: still over the target (a planned user could not be deactivated, e.g. it
        gained a protected role meanwhile) means one more round with fresh candidates, once.
        Activations cannot take the seats above the target while the workflow holds them.

        On target by the agent's own count, the step also waits (the reason shown in the
        workflow) until the application agrees, seed 000 STEP 3 "change the number of licensed
        users after you confirm the number of application users": every deactivation of this
        reduction delivered (no pending outbox push for those users) and, with a downstream,
        the application's active users at or below the target. After ``[reductions]
        verify_timeout_hours`` of waiting the reduction fails with the reason.
        """
        with self.store.read() as tx:
            row = self._require(tx, reduction_id)
            if row.state != State.VERIFYING:
                return
            pool = tx.pool.current()
            local = red.after_verify(
                pool.consumed, row.target, bool(row.plan.get("retried")), self.license.decrease
            )
            # The application is read only when its answer matters now (not while our own
            # deactivations are still on their way to it).
            wanted = local is State.DEACTIVATING or (
                local is not State.FAILED and self._reads_app and not _pending_deliveries(tx, row)
            )
        view = self._app_view() if wanted else None  # outside the write transaction
        with self.store.write() as tx:
            row = self._require(tx, reduction_id)
            if row.state != State.VERIFYING:
                return
            pool = tx.pool.current()
            retried = bool(row.plan.get("retried"))
            nxt = red.after_verify(pool.consumed, row.target, retried, self.license.decrease)
            if nxt is State.DEACTIVATING:
                chosen = tuple(c["user_id"] for c in row.plan["candidates"])
                plan = self._plan(
                    tx,
                    row.target,
                    view,
                    exclude_ids=chosen,
                    reason="already chosen by this reduction",
                )
                if not plan.feasible:
                    why = f"after one more round: {plan.problem()}"
                    self._move(tx, row, State.FAILED, why, reason=why)
                    self._alert(tx, row, "failed", [why])
                    return
                row.plan["retried"] = True
                row.plan.pop("verify_waiting_since", None)
                row.plan["candidates"] += [candidate_dict(c, 2) for c in plan.candidates]
                names = ", ".join(c.user_name for c in plan.candidates)
                note = (
                    f"{pool.consumed} users consume, target {row.target}: one more round with "
                    f"{len(plan.candidates)} users ({names})"
                )
                self._move(tx, row, State.DEACTIVATING, note, reason=None)
            elif nxt is State.FAILED:
                why = (
                    f"{pool.consumed} users still consume after two rounds, target {row.target}"
                    " (planned users could not be deactivated; see the plan's outcomes)"
                )
                self._move(tx, row, State.FAILED, why, reason=why)
                self._alert(tx, row, "failed", [why])
            else:
                waiting = self._application_lags(tx, row, view)
                if waiting is not None:
                    self._wait_or_fail(tx, row, waiting)
                    return
                row.plan.pop("verify_waiting_since", None)
                if nxt is State.AWAITING_MANUAL_LICENSE_CHANGE:
                    self._enter_manual(tx, row, pool.seats)
                else:
                    note = (
                        f"{pool.consumed} users consume, target {row.target}"
                        + (", and the application agrees" if self._reads_app else "")
                        + ": lowering licenses"
                    )
                    self._move(tx, row, nxt, note, reason=None)

    def _application_lags(self, tx: StoreTx, row: ReductionRow, view: AppView | None) -> str | None:
        """Why the application does not yet show the reduction, or None when it does."""
        stopped = _stopped_ids(row)
        pending = _pending_deliveries(tx, row)
        if pending:
            return (
                f"waiting for {pending} of {len(stopped)} deactivations to reach the application"
                " (outbox; see `seat-agent status`)"
            )
        if not self._reads_app:
            return None
        if view is None or view.error is not None:
            error = view.error if view is not None else "not read"
            return f"waiting to read the application's users to confirm the count ({error})"
        if view.active_count is not None:  # a count only: less the free users it shows
            active = view.active_count - outbox.count_links(tx, ACTIVE, license_state="free")
        else:
            free = tx.users.free_ids()
            active = view.active_unlinked + len(view.active_ids - free)
        if active > row.target:
            return (
                f"the application still shows {active} active users, target {row.target}"
                " (users unknown to seat-agent count too: they hold vendor licences)"
            )
        return None

    def _wait_or_fail(self, tx: StoreTx, row: ReductionRow, waiting: str) -> None:
        now = self.clock()
        since = _parse(row.plan.get("verify_waiting_since"))
        if since is None:
            since = now
            row.plan["verify_waiting_since"] = now.isoformat()
        hours = self.settings.verify_timeout_hours
        if now - since >= timedelta(hours=hours):
            why = f"verification timed out after {hours:g} hours: {waiting}"
            self._move(tx, row, State.FAILED, why, reason=why)
            self._alert(tx, row, "failed", [why])
            return
        if row.reason != waiting:
            row.reason = waiting
            row.history.append(_entry(now, row.state, waiting))
        row.updated = now
        rows.save_reduction(tx, row, row.state)

    def _enter_manual(self, tx: StoreTx, row: ReductionRow, seats: int) -> None:
        steps = red.manual_steps(self.license.decrease, seats, row.target)
        row.plan["manual_steps"] = steps
        self._move(
            tx,
            row,
            State.AWAITING_MANUAL_LICENSE_CHANGE,
            "waiting for the vendor-side license change",
            reason=" ".join(steps),
        )
        self._alert(
            tx,
            row,
            State.AWAITING_MANUAL_LICENSE_CHANGE.value,
            steps,
            subject=f"Reduce licenses from {seats} to {row.target} at the vendor",
        )

    def _reduce_licenses(self, reduction_id: str) -> None:
        """Seed 000 STEP 3, through the seat engine (never below consumption). A closed window
        keeps the reduction here with the reason; the next advance retries."""
        with self.store.read() as tx:
            row = self._require(tx, reduction_id)
            pool = tx.pool.current()
        if row.state != State.REDUCING_LICENSES:
            return
        if pool.consumed > row.target:
            self._transition(
                reduction_id,
                State.REDUCING_LICENSES,
                State.VERIFYING,
                f"{pool.consumed} users consume again, target {row.target}",
            )
            return
        if self.license.decrease in ("manual", "never"):  # settings changed since verifying
            with self.store.write() as tx:
                row = self._require(tx, reduction_id)
                if row.state == State.REDUCING_LICENSES:
                    self._enter_manual(tx, row, tx.pool.current().seats)
            return
        if pool.seats > row.target:
            try:
                self.seat_admin.set_licenses(
                    row.target, recorded_by_admin=False, reduction=reduction_id
                )
            except lic.DecreaseRefused as err:
                with self.store.write() as tx:
                    row = self._require(tx, reduction_id)
                    if row.state == State.REDUCING_LICENSES and row.reason != err.reason:
                        row.reason = err.reason
                        row.updated = self.clock()
                        row.history.append(_entry(row.updated, row.state, err.reason))
                        rows.save_reduction(tx, row, row.state)
                return
        self._licenses_done(reduction_id, State.REDUCING_LICENSES)

    def _await_manual(self, reduction_id: str) -> None:
        """Wait for the admin to record the vendor's change (PUT /admin/licenses)."""
        with self.store.read() as tx:
            row = self._require(tx, reduction_id)
            pool = tx.pool.current()
        if pool.seats <= row.target:
            self._licenses_done(reduction_id, State.AWAITING_MANUAL_LICENSE_CHANGE)

    def _licenses_done(self, reduction_id: str, expected: State) -> None:
        with self.store.write() as tx:
            row = self._require(tx, reduction_id)
            if row.state != expected:
                return
            seats = tx.pool.current().seats
            cleanup = self.settings.cleanup and any(
                c["action"] == red.DEACTIVATE and c.get("outcome") == "deactivated"
                for c in row.plan["candidates"]
            )
            if cleanup:
                until = (self.clock() + timedelta(days=self.settings.cleanup_after_days)).date()
                self._move(
                    tx,
                    row,
                    State.CLEANUP,
                    f"licenses now {seats}; deactivated users are deleted from {until}",
                    reason=f"deleting deactivated users after {self.settings.cleanup_after_days}"
                    " days (cleanup = true; deletion deletes their data)",
                )
            else:
                self._finish(tx, row, f"licenses now {seats}")

    def _cleanup(self, reduction_id: str) -> None:
        """Seed 000 STEP 3 "if necessary, delete the users who are deactivated": only with
        cleanup = true, only after cleanup_after_days, never a user the IdP re-activated."""
        now = self.clock()
        while True:
            with self.store.read() as tx:
                row = self._require(tx, reduction_id)
                if row.state != State.CLEANUP:
                    return
                pending = [
                    (i, c)
                    for i, c in enumerate(row.plan["candidates"])
                    if c["action"] == red.DEACTIVATE
                    and c.get("outcome") == "deactivated"
                    and c.get("cleanup") is None
                ]
                if not pending:
                    break
                index, candidate = pending[0]
                record = tx.users.get(candidate["user_id"])
            if not self.settings.cleanup:
                result = "kept: cleanup = false"
            elif not red.cleanup_due(
                _parse(candidate["done_at"]) or now, self.settings.cleanup_after_days, now
            ):
                return  # the grace period is not over; the next advance looks again
            elif record is None:
                result = "gone"
            elif record.active or record.seat.holds_seat:
                result = "kept: re-activated by the directory"
            else:
                try:
                    self.provisioning.delete_user(record.id, None, cause=ADMIN)
                    result = "deleted"
                except ScimError as err:
                    if err.status != 404:
                        raise
                    result = "gone"
            with self.store.write() as tx:
                row = self._require(tx, reduction_id)
                if row.plan["candidates"][index].get("cleanup") is None:
                    row.plan["candidates"][index]["cleanup"] = result
                    row.updated = self.clock()
                    rows.save_reduction(tx, row, row.state)
        with self.store.write() as tx:
            row = self._require(tx, reduction_id)
            if row.state == State.CLEANUP:
                deleted = sum(1 for c in row.plan["candidates"] if c.get("cleanup") == "deleted")
                self._finish(tx, row, f"cleanup deleted {deleted} deactivated users")

    def _finish(self, tx: StoreTx, row: ReductionRow, note: str) -> None:
        self._move(tx, row, State.DONE, note, reason=None)
        chosen = [
            f"{c['user_name']}: {c['outcome']}"
            for c in row.plan["candidates"]
            if c.get("outcome") in ("deactivated", "deleted")
        ]
        self._alert(
            tx,
            row,
            State.DONE.value,
            [f"Licenses reduced to {tx.pool.current().seats}.", *chosen],
            subject=f"Reduction to {row.target} licenses done",
        )

    # -- state changes ---------------------------------------------------------------------

    def _transition(self, reduction_id: str, expected: State, new: State, note: str) -> None:
        with self.store.write() as tx:
            row = self._require(tx, reduction_id)
            if row.state == expected:
                self._move(tx, row, new, note, reason=None)

    def _move(
        self, tx: StoreTx, row: ReductionRow, new: State, note: str, reason: str | None
    ) -> None:
        """Check the edge, then write (compare and set on the state read)."""
        red.check_transition(row.state, new.value)
        expected = row.state
        now = self.clock()
        row.state = new.value
        row.reason = reason
        row.updated = now
        row.history.append(_entry(now, new.value, note))
        if not rows.save_reduction(tx, row, expected):
            raise red.InvalidTransition(f"reduction {row.id} changed meanwhile; try again")
        held = red.SEAT_HOLDING_STATES
        if expected in held and new.value not in held:
            # The seats it held above its target are free again: the queue gets them now.
            self.provisioning.seats.promote_queue(tx, ADMIN)

    # -- alerts ----------------------------------------------------------------------------

    def _alert(
        self,
        tx: StoreTx,
        row: ReductionRow,
        state: str,
        lines: list[str],
        subject: str | None = None,
        table: AlertTable | None = None,
    ) -> None:
        if self.alerts is None:
            return
        self.alerts.raise_alert(
            tx,
            f"reduction:{row.id}",
            state,
            subject or f"Reduction to {row.target} licenses: {state.replace('_', ' ')}",
            lines,
            table,
        )

    def _alert_created(self, tx: StoreTx, row: ReductionRow) -> None:
        plan = row.plan
        lines = [
            f"Reduce licenses from {plan['seats']} to {row.target}: {plan['needed']} of "
            f"{plan['consumed']} consuming users stop consuming (proposed by {row.proposed_by}).",
            f"When the licenses can be lowered: {plan['window']['detail']}.",
        ]
        if row.state == State.PLANNED:
            lines.append(
                f"Approve: POST /admin/reductions/{row.id}/approve or "
                f"`seat-agent reductions approve {row.id}`; cancel likewise with /cancel."
            )
            state, subject = "awaiting_approval", f"Reduction to {row.target} licenses awaits"
            subject += " approval"
        else:
            state, subject = "proposed", f"Reduction to {row.target} licenses proposed"
            subject += " (auto-approved)"
        self._alert(tx, row, state, lines, subject=subject, table=plan_table(plan))

    # -- proposals -------------------------------------------------------------------------

    def propose_if_due(self, now: datetime | None = None) -> Reduction | None:
        """The reconcile job's hook: propose (proposed_by "reconcile") matching licenses to
        consumption when seats stayed unused (available >= propose_unused_above for
        propose_after_days, from the seat ledger) or when the renewal window opens with
        propose_at_renewal (seed 001's automatic adjustment). Never with another one open."""
        now = now or self.clock()
        with self.store.read() as tx:
            if self._due_trigger(tx, now) is None:
                return None
        view = self._app_view()  # only when a proposal is due, and outside the write lock
        with self.store.write() as tx:
            trigger = self._due_trigger(tx, now)
            if trigger is None:
                return None
            if trigger == "renewal":
                tx.state.put(RENEWAL_PROPOSED_KEY, _iso(self.license.renewal_date) or "")
            return self._propose(tx, tx.pool.current().consumed, trigger, view)

    def _due_trigger(self, tx: StoreTx, now: datetime) -> str | None:
        """``renewal`` or ``unused`` when a proposal is due now, else None."""
        if rows.list_reductions(tx, tuple(s.value for s in red.OPEN_STATES), limit=1):
            return None
        pool = tx.pool.current()
        if pool.consumed >= pool.seats:
            return None
        renewal = self.license.renewal_date
        if (
            self.settings.propose_at_renewal
            and red.renewal_window_open(renewal, self.license.renewal_window_days, now.date())
            and tx.state.get(RENEWAL_PROPOSED_KEY) != _iso(renewal)
        ):
            return "renewal"
        if self._unused_long_enough(tx, pool.seats - pool.consumed, now):
            return "unused"
        return None

    def _propose(
        self, tx: StoreTx, target: int, trigger: str, view: AppView | None
    ) -> Reduction | None:
        try:
            return self._create(tx, target, "reconcile", trigger, view)
        except ReductionConflict as err:
            log.info("no reduction proposed (%s): %s", trigger, err.message)
            return None

    def _unused_long_enough(self, tx: StoreTx, available: int, now: datetime) -> bool:
        """Whether at least ``propose_unused_above`` seats were free for the whole of the last
        ``propose_after_days``, by the seat ledger (every pool change is an entry), and no
        reduction was created in that time (a cancelled proposal is not repeated at once)."""
        threshold = self.settings.propose_unused_above
        if threshold is None or available < threshold:
            return False
        start = now - timedelta(days=self.settings.propose_after_days)
        created = rows.latest_created(tx)
        if created is not None and created > start:
            return False
        before = tx.ledger.free_seats_at(start)
        if before is None or before < threshold:
            return False
        return not tx.ledger.free_seats_dipped_below(threshold, start, now)


def _entry(at: datetime, state: str, note: str) -> dict[str, str]:
    return {"at": at.isoformat(), "state": state, "note": note}


def _stopped_ids(row: ReductionRow) -> list[str]:
    return [
        c["user_id"]
        for c in row.plan["candidates"]
        if c.get("outcome") in ("deactivated", "deleted")
    ]


def _pending_deliveries(tx: StoreTx, row: ReductionRow) -> int:
    """How many users this reduction stopped still have a push or delete in the outbox."""
    return outbox.pending_keys(tx, _stopped_ids(row), (PUSH_USER, DELETE_USER, WEBHOOK))


def _deactivating_since(row: ReductionRow) -> datetime | None:
    """When the first round of deactivations began (the first ``deactivating`` entry)."""
    for entry in row.history:
        if entry.get("state") == State.DEACTIVATING.value:
            return _parse(entry.get("at"))
    return None


def _next_pending(plan: Mapping[str, Any]) -> int | None:
    for i, c in enumerate(plan.get("candidates", [])):
        if c.get("outcome") is None:
            return i
    return None


def _check_target(target: int) -> None:
    if isinstance(target, bool) or not isinstance(target, int) or target < 0:
        raise ValueError("target must be a non-negative integer")


def reductions_for(agent: Any) -> Reductions:
    """The agent's Reductions service, or one built from its parts (CLI, before wiring)."""
    existing = getattr(agent, "reductions", None)
    if existing is not None:
        return existing  # type: ignore[no-any-return]
    return Reductions(
        agent.store,
        agent.provisioning,
        agent.admin,
        agent.settings.reductions,
        agent.settings.license,
        agent.clock,
    )
