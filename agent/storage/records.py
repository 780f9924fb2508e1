"""Plain dataclasses the store returns: never ORM rows or cursors."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Generic, TypeVar

from agent.domain.license import DirectoryState

T = TypeVar("T")


@dataclass
class SeatState:
    """A user's place in the seat engine."""

    app_status: str = "Active"
    license_state: str = "free"  # licensed | queued | free | inactive
    holds_seat: bool = False
    on_fallback: bool = False
    queued_at: datetime | None = None
    last_active_at: datetime | None = None
    deactivated_at: datetime | None = None


@dataclass
class UserRecord:
    id: str
    resource: dict
    created: datetime
    last_modified: datetime
    version: int
    seat: SeatState = field(default_factory=SeatState)
    groups: list[tuple[str, str]] = field(default_factory=list)  # (group id, displayName)
    queue_position: int | None = None

    @property
    def user_name(self) -> str:
        return str(self.resource["userName"])

    @property
    def active(self) -> bool:
        return bool(self.resource.get("active", True))


@dataclass
class GroupRecord:
    id: str
    resource: dict
    created: datetime
    last_modified: datetime
    version: int
    members: list[tuple[str, str]] | None = None  # (user id, display) when loaded


@dataclass
class Page:
    total: int
    items: list


@dataclass(frozen=True)
class PoolRow:
    seats: int
    consumed: int


@dataclass(frozen=True)
class LedgerEntry:
    seq: int
    at: datetime
    kind: str
    user_id: str | None
    user_name: str | None
    cause: str
    detail: str | None
    seats_after: int
    consumed_after: int
    cost: Decimal | None
    request: str | None = None  # X-Request-Id of the call that caused it, when there was one


@dataclass(frozen=True)
class SeqBatch(Generic[T]):
    """One batch of a walk in ``seq`` order (keyset paging, so memory stays flat as users
    grow): its items and the ``seq`` to continue after. No items: the walk is done."""

    items: list[T]
    last_seq: int


@dataclass(frozen=True)
class SeatRow:
    """What reconcile needs to judge one user, read without decoding its resource."""

    id: str
    user_name: str
    state: DirectoryState
    app_status: str
    license_state: str
    holds_seat: bool
    on_fallback: bool
