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

from sqlalchemy import func, select

from agent.connectors.base import Connector, DeliveryError, effective_user
from agent.services.outbox_notifier import DELETE_USER, EMAIL, PUSH_USER
from agent.storage import outbox
from agent.storage.outbox import OutboxMessage
from agent.storage.store import Store, StoreTx, utc
from agent.storage.tables import outbox as outbox_table

log = logging.getLogger("seat_agent.delivery")

# Run in the write transaction that marks the message delivered, with that transaction's time.
Completion = Callable[[StoreTx, datetime], None]
# Does the external work of one message outside any transaction; may return a Completion.
Handler = Callable[[OutboxMessage], Completion | None]
# Called in the transaction that records the failure making a message reach the alert threshold.
FailingHook = Callable[[StoreTx, OutboxMessage, str], None]

_unhandled_logged: set[str] = set()


@dataclass
class DeliveryReport:
    """One run: delivered, failed permanently (retried at backoff_max), failed temporarily."""

    delivered: int = 0
    failed: int = 0
    retry_later: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "failed": self.failed,
            "retry_later": self.retry_later,
            "errors": self.errors,
        }


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
    A downstream ``Retry-After`` wins (capped at ``maximum``); a permanent error waits
    ``maximum``: it is still retried, because an accepted change is never dropped.
    """
    if permanent:
        return maximum
    if retry_after is not None:
        return min(max(retry_after, 0.0), maximum)
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
) -> DeliveryReport:
    """Deliver up to ``limit`` due messages whose kind has a handler, oldest first and at most
    one in flight per key (``outbox.due``), so one user's changes arrive in order.

    Messages whose kind has no handler stay undelivered (logged once per kind). A failure is
    recorded with ``mark_failed`` and the delay of ``backoff_seconds``; when a message's
    failures reach ``alert_after_attempts``, ``on_failing`` is called in the same transaction
    (not for ``email`` rows: an alert about failing alert mail would only add to the pile).
    """
    report = DeliveryReport()
    kinds = tuple(handlers)
    _log_unhandled(store, kinds)
    if not kinds:
        return report
    tried: set[int] = set()
    while len(tried) < limit:
        with store.read() as tx:
            batch = [
                m
                for m in outbox.due(tx, clock(), limit=limit - len(tried), kinds=kinds)
                if m.seq not in tried
            ]
        if not batch:
            break
        for message in batch:
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
                on_failing,
            )
    return report


def _deliver_one(
    store: Store,
    message: OutboxMessage,
    handler: Handler,
    clock: Callable[[], datetime],
    backoff_base: float,
    backoff_max: float,
    report: DeliveryReport,
    alert_after_attempts: int | None,
    on_failing: FailingHook | None,
) -> None:
    try:
        completion = handler(message)
        with store.write() as tx:
            now = clock()
            if completion is not None:
                completion(tx, now)
            outbox.mark_delivered(tx, message.seq, now)
        report.delivered += 1
        return
    except DeliveryError as err:
        error, retry_after, permanent = str(err), err.retry_after, err.permanent
    except Exception as err:  # a handler bug must not stop the other messages
        log.exception("outbox %s #%s (%s) raised", message.kind, message.seq, message.key)
        error, retry_after, permanent = f"{err.__class__.__name__}: {err}", None, False
    delay = backoff_seconds(
        message.attempts, backoff_base, backoff_max, retry_after=retry_after, permanent=permanent
    )
    text = ("permanent: " if permanent else "") + error
    with store.write() as tx:
        now = clock()
        outbox.mark_failed(tx, message.seq, text, now + timedelta(seconds=delay))
        attempts = message.attempts + 1
        if (
            on_failing is not None
            and alert_after_attempts is not None
            and attempts == alert_after_attempts
            and message.kind != EMAIL
        ):
            on_failing(tx, message, text)
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
        message.attempts + 1,
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
            record = tx.get_user(user_id, with_groups=False)
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
        oldest = tx.conn.execute(
            select(func.min(outbox_table.c.created)).where(outbox_table.c.delivered_at.is_(None))
        ).scalar()
        failing = outbox.failing(tx, alert_after_attempts)
    oldest_at = utc(oldest)
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
