"""What the seat engine and provisioning announce, and the port that receives it.

The receiver writes into the same transaction (the outbox), so an announced change is never
lost and never sent for a change that rolled back.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from agent.storage.store import StoreTx


@dataclass(frozen=True)
class SeatEvent:
    """A change in who holds a seat, with the seat arithmetic after it."""

    kind: str  # granted | released | queued | promoted | expanded | fallback | refused | licenses
    seats: int
    consumed: int
    user_id: str | None = None
    user_name: str | None = None
    detail: str = ""
    cost: Decimal | None = None


class Notifier(Protocol):
    def user_changed(self, tx: StoreTx, user_id: str) -> None: ...

    def user_deleted(self, tx: StoreTx, user_id: str) -> None: ...

    def seat_event(self, tx: StoreTx, event: SeatEvent) -> None: ...

    def group_changed(self, tx: StoreTx, group_id: str) -> None: ...

    def group_deleted(self, tx: StoreTx, group_id: str) -> None: ...


class NullNotifier:
    """No downstream and no alerts."""

    def user_changed(self, tx: StoreTx, user_id: str) -> None:
        return None

    def user_deleted(self, tx: StoreTx, user_id: str) -> None:
        return None

    def seat_event(self, tx: StoreTx, event: SeatEvent) -> None:
        return None

    def group_changed(self, tx: StoreTx, group_id: str) -> None:
        return None

    def group_deleted(self, tx: StoreTx, group_id: str) -> None:
        return None
