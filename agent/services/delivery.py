"""Outbox delivery: send what the outbox holds, at least once, in order per key.

A plain function (``deliver_due``) the scheduler's outbox job calls. Rows are written by
OutboxNotifier in the same transaction as the change they announce; here each due row is
handed to the handler of its kind with NO database transaction open (no lock is held while a
slow downstream answers), then a short write transaction marks it delivered together with the
handler's own bookkeeping (the downstream link of a pushed user).

Crash safety: a row is marked delivered only after its handler succeeded. A crash between the
remote call and the mark leaves the row due, and it is sent again; the connector makes that
resend harmless (push looks the user up by externalId, delete of a missing user succeeds).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from agent.connectors.base import Connector, DeliveryError, effective_user
from agent.services.outbox_notifier import DELETE_USER, EMAIL, PUSH_USER
from agent.storage import outbox
from agent.storage.outbox import Outage, OutboxMessage
from agent.storage.store import Store, StoreTx

log = logging.getLogger("seat_agent.delivery")

# Run in the write transaction that marks the message delivered, with that transaction's time.
Completion = Callable[[StoreTx, datetime], None]
# Does the external work of one message outside any transaction; may return a Completion.
Handler = Callable[[OutboxMessage], Completion | None]
# Called, in a write transaction, at the end of a run in which a downstream message reached
# the alert threshold (an outage), and at the end of a run that delivered again with nothing
# failing any more (the outage is over: the next one alerts again).
FailingHook = Callable[[StoreTx, "Outage"], None]
RecoveredHook = Callable[[StoreTx], None]

RETRY_AFTER_MAX = 3600.0  # a downstream's Retry-After is honoured up to one hour
BREAKER_AFTER = 3  # temporary failures in a row of one kind before a run stops trying it

_unhandled_logged: set[str] = set()


@dataclass
class DeliveryReport:
    """One run: delivered, failed permanently (retried at backoff_max), failed temporarily."""

    delivered: int = 0
    failed: int = 0
    retry_later: int = 0
    errors: list[str] = field(default_factory=list)
    # Kinds whose circuit breaker opened in this run: their remaining messages wait for the
    # next run instead of each waiting out a timeout against a dead downstream.
    broken: list[str] = field(default_factory=list)
    stopped: bool = False  # keep_going said stop (the scheduler lost its lease)

    def as_dict(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "failed": self.failed,
            "retry_later": self.retry_later,
            "errors": self.errors,
            "broken": self.broken,
            "stopped": self.stopped,
        }


@dataclass
class _Run:
    """Per-run bookkeeping: consecutive temporary failures per kind, outage signals."""

    streak: dict[str, int] = field(default_factory=dict)
    reached_threshold: bool = False
    delivered_downstream: bool = False


def backoff_seconds(
    attempts: int,
    base: float,
    maximum: float,
    *,
    retry_after: float | None = None,
    permanent: bool = False,
) -> float:
    """Delay before the next attempt of a message that has failed ``attempts`` times before.

    ``min(base * 2**attempts, maximum)``, no jitter (one worker runs: the scheduler lease).
    A downstream ``Retry-After`` (RFC 7231 §7.1.3) wins, even beyond ``maximum``, capped at
    ``RETRY_AFTER_MAX`` (one hour; or ``maximum`` when that is longer) so a bogus header
    cannot park a change for days; a permanent error waits ``maximum``: it is still retried,
    because an accepted change is never dropped.
    """
    if permanent:
        return maximum
    if retry_after is not None:
        return min(max(retry_after, 0.0), max(RETRY_AFTER_MAX, maximum))
    return float(min(base * 2 ** min(attempts, 62), maximum))


def deliver_due(
    store: Store,
    handlers: Mapping[str, Handler],
    clock: Callable[[], datetime],
    backoff_base: float,
    backoff_max: float,
    limit: int = 100,
    *,
    alert_after_attempts: int | None = None,
    on_failing: FailingHook | None = None,
    on_recovered: RecoveredHook | None = None,
    keep_going: Callable[[], bool] | None = None,
    breaker_after: int = BREAKER_AFTER,
) -> DeliveryReport:
    """Deliver up to ``limit`` due messages whose kind has a handler, oldest first and at most
    one in flight per key (``outbox.due``), so one user's changes arrive in order.

    Messages whose kind has no handler stay undelivered (logged once per kind). A failure is
    recorded with ``mark_failed`` and the delay of ``backoff_seconds``. After
    ``breaker_after`` temporary failures in a row of one kind the run stops trying that kind
    (a circuit breaker: a dead downstream costs a few timeouts per run, not ``limit``).
    ``keep_going`` is asked before each message; False ends the run (a scheduler that lost its
    lease stops between messages).

    Alerts, once per outage (not per message, not for ``email`` rows: an alert about failing
    alert mail would only add to the pile): when a downstream message reaches
    ``alert_after_attempts`` failures, ``on_failing`` gets the outage summary at the end of the
    run; when a run delivers downstream messages again and none is failing any more,
    ``on_recovered`` re-arms the alert.
    """
    report = DeliveryReport()
    kinds = tuple(handlers)
    _log_unhandled(store, kinds)
    if not kinds:
        return report
    run = _Run()
    tried: set[int] = set()
    while len(tried) < limit:
        open_kinds = tuple(k for k in kinds if k not in report.broken)
        if not open_kinds:
            break
        with store.read() as tx:
            batch = [
                m
                for m in outbox.due(tx, clock(), limit=limit - len(tried), kinds=open_kinds)
                if m.seq not in tried
            ]
        if not batch:
            break
        for message in batch:
            if message.kind in report.broken:
                continue
            if keep_going is not None and not keep_going():
                report.stopped = True
                break
            tried.add(message.seq)
            _deliver_one(
                store,
                message,
                handlers[message.kind],
                clock,
                backoff_base,
                backoff_max,
                report,
                alert_after_attempts,
                run,
            )
            if run.streak.get(message.kind, 0) >= breaker_after:
                report.broken.append(message.kind)
                log.warning(
                    "outbox %s: %d failures in a row; not trying more this run",
                    message.kind,
                    breaker_after,
                )
        if report.stopped:
            break
    if alert_after_attempts is not None:
        _outage_hooks(store, clock, alert_after_attempts, run, on_failing, on_recovered)
    return report


def _outage_hooks(
    store: Store,
    clock: Callable[[], datetime],
    threshold: int,
    run: _Run,
    on_failing: FailingHook | None,
    on_recovered: RecoveredHook | None,
) -> None:
    if run.reached_threshold and on_failing is not None:
        with store.write() as tx:
            outage = outage_summary(tx, threshold)
            if outage is not None:
                on_failing(tx, outage)
    elif run.delivered_downstream and on_recovered is not None:
        with store.write() as tx:
            if outage_summary(tx, threshold) is None:
                on_recovered(tx)


def outage_summary(tx: StoreTx, threshold: int) -> Outage | None:
    """Undelivered downstream (non-email) messages that failed ``threshold`` times or more:
    how many, how many downstream messages wait in all, and the oldest failing one."""
    return outbox.outage(tx, threshold, except_kind=EMAIL)


def _deliver_one(
    store: Store,
    message: OutboxMessage,
    handler: Handler,
    clock: Callable[[], datetime],
    backoff_base: float,
    backoff_max: float,
    report: DeliveryReport,
    alert_after_attempts: int | None,
    run: _Run,
) -> None:
    try:
        completion = handler(message)
        with store.write() as tx:
            now = clock()
            if completion is not None:
                completion(tx, now)
            outbox.mark_delivered(tx, message.seq, now)
        report.delivered += 1
        run.streak[message.kind] = 0
        if message.kind != EMAIL:
            run.delivered_downstream = True
        return
    except DeliveryError as err:
        error, retry_after, permanent = str(err), err.retry_after, err.permanent
        transient = not permanent
    except OSError as err:  # e.g. the SMTP server is down
        error, retry_after, permanent = f"{err.__class__.__name__}: {err}", None, False
        transient = True
    except Exception as err:  # a handler bug must not stop the other messages
        log.exception("outbox %s #%s (%s) raised", message.kind, message.seq, message.key)
        error, retry_after, permanent = f"{err.__class__.__name__}: {err}", None, False
        transient = False
    run.streak[message.kind] = run.streak.get(message.kind, 0) + 1 if transient else 0
    delay = backoff_seconds(
        message.attempts, backoff_base, backoff_max, retry_after=retry_after, permanent=permanent
    )
    text = ("permanent: " if permanent else "") + error
    with store.write() as tx:
        now = clock()
        outbox.mark_failed(tx, message.seq, text, now + timedelta(seconds=delay))
    attempts = message.attempts + 1
    if (
        alert_after_attempts is not None
        and attempts >= alert_after_attempts
        and message.kind != EMAIL
    ):
        run.reached_threshold = True
    if permanent:
        report.failed += 1
    else:
        report.retry_later += 1
    report.errors.append(f"{message.kind} {message.key}: {text}")
    log.warning(
        "outbox %s #%s (%s) failed, attempt %d, next in %.0fs: %s",
        message.kind,
        message.seq,
        message.key,
        attempts,
        delay,
        text,
    )


def _log_unhandled(store: Store, kinds: tuple[str, ...]) -> None:
    with store.read() as tx:
        waiting = outbox.depth(tx)
    for kind in sorted(set(waiting) - set(kinds) - _unhandled_logged):
        _unhandled_logged.add(kind)
        log.warning("outbox has %d %r messages and no handler for them", waiting[kind], kind)


class PushHandlers:
    """Handlers for ``push_user`` and ``delete_user`` rows, over a downstream Connector.

    A push sends the user's state as it is at delivery time (not as it was when the row was
    written), so a resend or a late delivery never sends something stale; a user deleted in
    the meantime is deleted downstream.
    """

    def __init__(self, connector: Connector, store: Store, fallback_role: str | None):
        self.connector = connector
        self.store = store
        self.fallback_role = fallback_role

    def handlers(self) -> dict[str, Handler]:
        return {PUSH_USER: self.push_user, DELETE_USER: self.delete_user}

    @staticmethod
    def _user_id(message: OutboxMessage) -> str:
        return str(message.payload.get("user_id") or message.key)

    def push_user(self, message: OutboxMessage) -> Completion:
        user_id = self._user_id(message)
        with self.store.read() as tx:
            record = tx.users.get(user_id, with_groups=False)
            remote = outbox.remote_id(tx, user_id)
        if record is None:
            self.connector.delete_user(user_id, remote)
            return _unlink(user_id)
        pushed = self.connector.push_user(effective_user(record, self.fallback_role), remote)
        return _link(user_id, pushed)

    def delete_user(self, message: OutboxMessage) -> Completion:
        user_id = self._user_id(message)
        with self.store.read() as tx:
            remote = outbox.remote_id(tx, user_id)
        self.connector.delete_user(user_id, remote)
        return _unlink(user_id)


def _link(user_id: str, remote: str) -> Completion:
    def complete(tx: StoreTx, now: datetime) -> None:
        outbox.link(tx, user_id, remote, now)

    return complete


def _unlink(user_id: str) -> Completion:
    def complete(tx: StoreTx, now: datetime) -> None:
        outbox.unlink(tx, user_id)

    return complete


def delivery_status(store: Store, alert_after_attempts: int) -> dict[str, Any]:
    """Outbox health for ``seat-agent status``: undelivered rows by kind, the oldest one's age,
    and the messages that failed at least ``alert_after_attempts`` times with their errors."""
    with store.read() as tx:
        depth = outbox.depth(tx)
        oldest_at = outbox.oldest_pending_created(tx)
        failing = outbox.failing(tx, alert_after_attempts)
    return {
        "depth": depth,
        "pending": sum(depth.values()),
        "oldest_pending": oldest_at.isoformat() if oldest_at else None,
        "failing": [
            {
                "seq": m.seq,
                "kind": m.kind,
                "key": m.key,
                "attempts": m.attempts,
                "last_error": m.last_error,
                "created": m.created.isoformat(),
                "next_attempt": m.available_at.isoformat(),
            }
            for m in failing
        ],
    }
