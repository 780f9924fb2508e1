"""The downstream port: what seat-agent needs from a seat-licensed application.

The delivery worker (agent.services.delivery) calls a ``Connector`` outside any database
transaction. Every method must be safe to repeat: a message is marked delivered only after its
call succeeded, so a crash between the remote write and the mark means the same call is made
again, and the connector (not the worker) makes that harmless.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from agent.storage.records import UserRecord


class DeliveryError(Exception):
    """A downstream call failed.

    ``retry_after`` is the delay the downstream asked for (RFC 7231 §7.1.3 ``Retry-After``),
    in seconds; ``permanent`` says that repeating the same call will not help (a 4xx other
    than 404/409). The worker retries permanent errors too, only slowly: an accepted change is
    never dropped.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        permanent: bool = False,
        status: int | None = None,
    ):
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent
        self.status = status  # the HTTP status the downstream answered, when it answered


@dataclass(frozen=True)
class RemoteUser:
    """A user as the downstream application holds it (for reconciliation)."""

    remote_id: str
    external_id: str | None  # our user id, when the user was provisioned by seat-agent
    user_name: str
    active: bool
    app_status: str | None
    role: str | None
    last_login: datetime | None


@dataclass(frozen=True)
class EffectiveUser:
    """What the downstream application should hold for one user right now.

    ``active`` is the access the seat engine grants, not the IdP's flag: a queued user (no
    seat yet) and a deactivated one are both pushed inactive.
    """

    user_id: str
    user_name: str
    active: bool
    app_status: str
    role: str | None
    display_name: str | None
    emails: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class EffectiveGroup:
    """A group as the downstream application should hold it: its members by their downstream
    ids (users not in the application are left out)."""

    group_id: str
    display_name: str
    member_remote_ids: list[str] = field(default_factory=list)


def effective_user(record: UserRecord, fallback_role: str | None) -> EffectiveUser:
    """The downstream view of ``record``.

    Active only when it holds a seat (``licensed``) or needs none and is active in the IdP
    (``free``); ``queued`` and ``inactive`` users are inactive downstream. The role is the
    configured fallback role while the user is on it (``[license] on_full = "fallback"``),
    otherwise the primary SCIM role, else the first one (RFC 7643 §4.1.2 ``roles``).
    """
    seat = record.seat
    resource = record.resource
    active = seat.license_state == "licensed" or (seat.license_state == "free" and record.active)
    if seat.on_fallback:
        role = fallback_role
    else:
        role = _first_role(resource.get("roles") or [])
    name = resource.get("name") or {}
    display = resource.get("displayName") or name.get("formatted")
    emails = [
        {k: e[k] for k in ("value", "type", "primary") if k in e}
        for e in resource.get("emails") or []
        if isinstance(e, dict) and e.get("value")
    ]
    return EffectiveUser(
        user_id=record.id,
        user_name=record.user_name,
        active=active,
        app_status=seat.app_status,
        role=role,
        display_name=display,
        emails=emails,
    )


def _first_role(roles: list[Any]) -> str | None:
    values = [r for r in roles if isinstance(r, dict) and r.get("value") is not None]
    for r in values:
        if r.get("primary") is True:
            return str(r["value"])
    return str(values[0]["value"]) if values else None


class Connector(Protocol):
    """A downstream application. Every call is idempotent (see the module docstring)."""

    def push_user(self, state: EffectiveUser, remote_id: str | None) -> str:
        """Create or update the user; return its downstream id. ``remote_id`` is the id
        recorded at the last successful push, or None; a resend never creates a duplicate."""
        ...

    def delete_user(self, user_id: str, remote_id: str | None) -> None:
        """Remove the user; a user already gone downstream is success."""
        ...

    def list_users(self) -> Iterator[RemoteUser]:
        """Every downstream user, page by page (for reconciliation)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the agent knows about the app, JSON-able, for `seat-agent downstream check`:
        at least ``type``, ``url``, ``reachable`` and ``error``, and whatever the connector
        learned or will use (paging, auth scheme, mapping). Never raises for an unreachable
        app: it reports it."""
        ...

    def dry_run(self, state: EffectiveUser) -> dict[str, Any]:
        """The write(s) a push of ``state`` would send, without sending any write:
        ``{"requests": [{"method", "url", "body"}], "problems": [str, ...]}``; ``problems``
        names each field the app would refuse (empty when it would accept)."""
        ...
