"""Webhook events for an application without SCIM (``[downstream] type = "webhook"``).

Each change becomes an event, frozen when it is written: the outbox row holds its Standard
Webhooks ``webhook-id`` and the exact body, so a redelivery (after a failure, a crash, an
outage) sends the same id and the same bytes, and the receiver drops what it already has
(spec "Webhook metadata": the id "remains the same no matter how many times a webhook that has
failed is retried"). This differs on purpose from the SCIM push (agent.services.delivery
``PushHandlers``), which sends the state as it is at delivery time: a webhook receiver sees
every change, in order per user (one in flight per outbox key).

An event describes what its transaction changed, not the steps inside it: the notifier only
gathers user ids and seat events during the transaction, and writes the events at its end
(``StoreTx.at_commit``), after any deferred seat writes, from the users as committed. What was
last announced for each user is kept in its downstream link (``active:<digest>`` or
``inactive:<digest>``), written with the event: it decides created / activated / deactivated /
updated, drops a change the application cannot see, and tells reconcile how many users the
application should show active.

Payloads follow the spec's recommendation ("Payload structure"): ``{"type", "timestamp",
"data"}``; docs/webhooks.md documents each type.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from agent.connectors.base import effective_user
from agent.connectors.webhook import event_body
from agent.services.events import SeatEvent
from agent.storage import outbox
from agent.storage.outbox import OutboxMessage
from agent.storage.records import UserRecord
from agent.storage.store import StoreTx

WEBHOOK = "webhook"  # outbox kind: one frozen event per row
LICENSES_KEY = "licenses"  # outbox key of licenses.changed (ordered among themselves)
ACTIVE = "active:"  # link prefix of a user last announced active
INACTIVE = "inactive:"
_AT_COMMIT = "webhook-events"

USER_CREATED = "user.created"
USER_UPDATED = "user.updated"
USER_ACTIVATED = "user.activated"
USER_DEACTIVATED = "user.deactivated"
USER_DELETED = "user.deleted"
LICENSES_CHANGED = "licenses.changed"
# SeatEvent kinds (agent.services.events) -> event types; "refused" changed nothing: not sent.
SEAT_TYPES = {
    "granted": "seat.granted",
    "promoted": "seat.granted",
    "released": "seat.released",
    "queued": "seat.queued",
    "fallback": "seat.fallback",
    "expanded": LICENSES_CHANGED,
    "licenses": LICENSES_CHANGED,
}


def new_webhook_id() -> str:
    """A ``webhook-id`` like the spec's examples (``msg_...``); no ``.`` in it (spec
    "Signature scheme": the id is part of the signed content, delimited by full stops)."""
    return f"msg_{uuid.uuid4().hex}"


def user_data(record: UserRecord, fallback_role: str | None) -> dict[str, Any]:
    """The user as the application should hold it (``effective_user``: active only with a
    seat or when it needs none), plus its license state."""
    state = effective_user(record, fallback_role)
    return {
        "id": state.user_id,
        "userName": state.user_name,
        "active": state.active,
        "appStatus": state.app_status,
        "licenseState": record.seat.license_state,
        "role": state.role,
        "displayName": state.display_name,
        "emails": state.emails,
    }


def announced_marker(data: dict[str, Any]) -> str:
    """What the link remembers of an announced user: active or not, and a digest of the
    data (a later change the application cannot see gives the same digest: no event)."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:40]
    return (ACTIVE if data["active"] else INACTIVE) + digest


def user_event_type(previous: str | None, data: dict[str, Any]) -> str | None:
    """The event for a user last announced as ``previous`` (a marker, None when never
    announced) who is now ``data``; None when the application would see no difference. A
    link that is not a marker (left by a SCIM downstream) counts as known, state unknown."""
    if previous is None:
        return USER_CREATED
    if previous == announced_marker(data):
        return None
    was_active = previous.startswith(ACTIVE)
    if not (was_active or previous.startswith(INACTIVE)):
        return USER_UPDATED
    if data["active"] != was_active:
        return USER_ACTIVATED if data["active"] else USER_DEACTIVATED
    return USER_UPDATED


def seat_data(event: SeatEvent) -> dict[str, Any]:
    """The seat arithmetic after the change, and who it concerns."""
    data: dict[str, Any] = {}
    if SEAT_TYPES[event.kind] != LICENSES_CHANGED:
        data.update(userId=event.user_id, userName=event.user_name)
    data.update(
        seats=event.seats,
        consumed=event.consumed,
        available=max(event.seats - event.consumed, 0),
    )
    if event.kind in ("granted", "promoted"):
        data["fromQueue"] = event.kind == "promoted"
    elif event.kind == "fallback":
        data["role"] = event.detail
    elif SEAT_TYPES[event.kind] == LICENSES_CHANGED:
        data["change"] = event.detail  # "50 -> 40"
        data["automatic"] = event.kind == "expanded"  # [license] on_full = "expand"
        data["cost"] = str(event.cost) if event.cost is not None else None
    return data


@dataclass
class _Changes:
    """What one write transaction announced, written as events when it ends."""

    events: WebhookEvents
    users: dict[str, bool] = field(default_factory=dict)  # user id -> deleted, first-seen order
    seats: list[SeatEvent] = field(default_factory=list)

    def flush(self, tx: StoreTx) -> None:
        self.events.write(tx, self.users, self.seats)


class WebhookEvents:
    """The downstream side of the Notifier (agent.services.outbox_notifier) for a webhook
    application: gathers a transaction's changes and writes them as frozen events."""

    def __init__(
        self,
        fallback_role: str | None,
        clock: Callable[[], datetime],
        new_id: Callable[[], str] = new_webhook_id,
    ):
        self.fallback_role = fallback_role
        self.clock = clock
        self.new_id = new_id

    def _changes(self, tx: StoreTx) -> _Changes:
        return tx.at_commit(_AT_COMMIT, lambda: _Changes(self))

    def user_changed(self, tx: StoreTx, user_id: str) -> None:
        self._changes(tx).users.setdefault(user_id, False)

    def group_changed(self, tx: StoreTx, group_id: str) -> None:
        """Groups are not announced to a webhook application (seats are per user)."""
        return None

    def group_deleted(self, tx: StoreTx, group_id: str) -> None:
        return None

    def user_deleted(self, tx: StoreTx, user_id: str) -> None:
        self._changes(tx).users[user_id] = True

    def seat_event(self, tx: StoreTx, event: SeatEvent) -> None:
        if event.kind in SEAT_TYPES:
            self._changes(tx).seats.append(event)

    def write(self, tx: StoreTx, users: dict[str, bool], seats: list[SeatEvent]) -> None:
        """The events of one transaction: user events first (a user is created before its
        seat is granted, deactivated before its seat is released), then seat events."""
        now = self.clock()
        ids = list(users)
        records = {r.id: r for r in tx.users.get_many([i for i in ids if not users[i]])}
        known = outbox.remote_ids(tx, ids)
        for user_id in ids:
            if users[user_id]:
                self._enqueue(tx, USER_DELETED, user_id, {"id": user_id}, now)
                if user_id in known:
                    outbox.unlink(tx, user_id)
                continue
            record = records.get(user_id)
            if record is None:  # deleted later in the same transaction
                continue
            data = user_data(record, self.fallback_role)
            kind = user_event_type(known.get(user_id), data)
            if kind is None:
                continue
            self._enqueue(tx, kind, user_id, data, now)
            outbox.set_link(tx, user_id, announced_marker(data), now, exists=user_id in known)
        for event in seats:
            kind = SEAT_TYPES[event.kind]
            key = LICENSES_KEY if kind == LICENSES_CHANGED else event.user_id or LICENSES_KEY
            self._enqueue(tx, kind, key, seat_data(event), now)

    def _enqueue(
        self, tx: StoreTx, kind: str, key: str, data: dict[str, Any], now: datetime
    ) -> None:
        payload = {"id": self.new_id(), "type": kind, "body": event_body(kind, now, data)}
        outbox.enqueue(tx, WEBHOOK, key, payload, now)


class WebhookSender(Protocol):
    """The connector side (agent.connectors.webhook.WebhookConnector)."""

    def send(self, webhook_id: str, body: str) -> None: ...


class WebhookHandlers:
    """The delivery handler of ``webhook`` outbox rows: send the frozen event, signed anew
    (a fresh ``webhook-timestamp``) with its stored id and body. Retries, backoff, Retry-After,
    the circuit breaker and the failing alert are the delivery worker's, as for SCIM."""

    def __init__(self, sender: WebhookSender):
        self.sender = sender

    def handlers(self) -> dict[str, Callable[[OutboxMessage], None]]:
        return {WEBHOOK: self.deliver}

    def deliver(self, message: OutboxMessage) -> None:
        self.sender.send(str(message.payload["id"]), str(message.payload["body"]))
