"""The Notifier that writes into the outbox, in the caller's transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from agent.services.events import Notifier, SeatEvent
from agent.storage import outbox
from agent.storage.store import StoreTx

PUSH_USER = "push_user"
DELETE_USER = "delete_user"
PUSH_GROUP = "push_group"
DELETE_GROUP = "delete_group"
EMAIL = "email"


class SeatAlerts(Protocol):
    def on_seat_event(self, tx: StoreTx, event: SeatEvent) -> None: ...


class OutboxNotifier:
    """Downstream pushes (when a downstream is configured) and seat alerts (when enabled).

    ``events`` replaces the pushes for an application that takes webhooks
    (agent.services.webhook_events.WebhookEvents: every change becomes a frozen event)."""

    def __init__(
        self,
        push: bool,
        alerts: SeatAlerts | None,
        clock: Callable[[], datetime],
        events: Notifier | None = None,
        push_groups: bool = False,
    ):
        self.push = push and events is None
        self.push_groups = self.push and push_groups
        self.alerts = alerts
        self.clock = clock
        self.events = events

    def user_changed(self, tx: StoreTx, user_id: str) -> None:
        if self.push:
            outbox.enqueue(tx, PUSH_USER, user_id, {"user_id": user_id}, self.clock())
        elif self.events is not None:
            self.events.user_changed(tx, user_id)

    def user_deleted(self, tx: StoreTx, user_id: str) -> None:
        if self.push:
            outbox.enqueue(tx, DELETE_USER, user_id, {"user_id": user_id}, self.clock())
        elif self.events is not None:
            self.events.user_deleted(tx, user_id)

    def group_changed(self, tx: StoreTx, group_id: str) -> None:
        if self.push_groups:
            outbox.enqueue(tx, PUSH_GROUP, group_id, {"group_id": group_id}, self.clock())

    def group_deleted(self, tx: StoreTx, group_id: str) -> None:
        if self.push_groups:
            outbox.enqueue(tx, DELETE_GROUP, group_id, {"group_id": group_id}, self.clock())

    def seat_event(self, tx: StoreTx, event: SeatEvent) -> None:
        if self.events is not None:
            self.events.seat_event(tx, event)
        if self.alerts is not None:
            self.alerts.on_seat_event(tx, event)
