"""An application without SCIM, told by signed webhooks (Standard Webhooks 1.0), with requests.

Signing follows the spec's "Signature scheme" with the ``standardwebhooks`` library: HMAC-SHA256
over ``{webhook-id}.{webhook-timestamp}.{body}``, sent as ``webhook-signature: v1,<base64>``
with ``webhook-id`` and ``webhook-timestamp``. The timestamp is that of the attempt (spec
"Webhook metadata"): every send signs again with the host's clock, since the receiver checks
it against its own within a tolerance (5 minutes in the libraries), while the id and the body
stay those of the event.

Outcomes (spec "Delivery success and failure"): 2xx is accepted; 429 and 503 are temporary and
their ``Retry-After`` honoured (RFC 7231 §7.1.3); 408 and other 5xx are temporary; redirects
are not followed (the spec: update the URL instead) and, with 410 and every other 4xx, are
permanent: retried slowly by the delivery worker and alerted, never dropped.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from math import floor
from typing import Any

import requests
from standardwebhooks import Webhook

from agent.connectors.base import DeliveryError, EffectiveUser, RemoteUser
from agent.connectors.http import retry_after_seconds, send

JSON = "application/json"
COUNT_KEYS = ("active", "count")  # count_url answers {"active": N} (or {"count": N})
EVENT_TYPES = (  # docs/webhooks.md documents each payload
    "user.created",
    "user.updated",
    "user.activated",
    "user.deactivated",
    "user.deleted",
    "seat.granted",
    "seat.released",
    "seat.queued",
    "seat.fallback",
    "licenses.changed",
)


def event_body(kind: str, at: datetime, data: dict[str, Any]) -> str:
    """The exact bytes of an event: ``{"type", "timestamp", "data"}`` (spec "Payload
    structure"), minified JSON (spec "Signature scheme": what is signed is what is sent)."""
    timestamp = at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return json.dumps(
        {"type": kind, "timestamp": timestamp, "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def _utcnow() -> datetime:
    return datetime.now(UTC)


class WebhookConnector:
    """POSTs signed events to ``url``; reads the application's active users at ``count_url``.

    ``clock`` is the agent's (Retry-After dates); ``signing_clock`` dates each attempt and is
    the host's real time: a receiver rejects a timestamp outside its tolerance.
    """

    def __init__(
        self,
        url: str,
        secret: str,
        timeout: float,
        *,
        token: str | None = None,
        count_url: str | None = None,
        session: requests.Session | None = None,
        clock: Callable[[], datetime] = _utcnow,
        signing_clock: Callable[[], datetime] = _utcnow,
    ):
        self.url = url
        self.count_url = count_url
        self.timeout = timeout
        self.clock = clock
        self.signing_clock = signing_clock
        self._webhook = Webhook(secret)
        self._own_session = session is None
        self.session = session or requests.Session()
        self.headers = {"Accept": JSON}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        if self._own_session:
            self.session.close()

    # -- signing and HTTP ------------------------------------------------------------------

    def signed_headers(self, webhook_id: str, body: str) -> dict[str, str]:
        """The three Standard Webhooks headers for this attempt (spec "Webhook headers")."""
        at = self.signing_clock().astimezone(UTC)
        return {
            **self.headers,
            "webhook-id": webhook_id,
            "webhook-timestamp": str(floor(at.timestamp())),
            "webhook-signature": self._webhook.sign(webhook_id, at, body),
        }

    def _request(self, method: str, url: str, webhook_id: str, body: str) -> requests.Response:
        """One signed request; DeliveryError unless 2xx (the module docstring's outcomes)."""
        headers = self.signed_headers(webhook_id, body)
        if body:
            headers["Content-Type"] = JSON
        where = f"{method} {url}"
        response = send(
            self.session,
            method,
            url,
            where,
            data=body.encode() if body else None,
            headers=headers,
            timeout=self.timeout,
            allow_redirects=False,
        )
        status = response.status_code
        if 200 <= status < 300:
            return response
        detail = f"{where}: HTTP {status}: {response.text[:200]}"
        if status in (429, 503):
            raise DeliveryError(
                detail,
                retry_after=retry_after_seconds(response.headers.get("Retry-After"), self.clock()),
            )
        if status >= 500 or status == 408:
            raise DeliveryError(detail)
        if 300 <= status < 400:
            where_to = response.headers.get("Location", "(no Location)")
            detail = f"{where}: HTTP {status} redirect to {where_to}: set [downstream] url to it"
        raise DeliveryError(detail, permanent=True)

    # -- webhooks --------------------------------------------------------------------------

    def send(self, webhook_id: str, body: str) -> None:
        """POST one event; the same id and body on every attempt, signed anew each time."""
        self._request("POST", self.url, webhook_id, body)

    def active_count(self) -> int:
        """The application's active users, from ``count_url``: a GET signed like a webhook
        over an empty body (``webhook-id`` ``count_...``), answered ``{"active": N}``."""
        if self.count_url is None:
            raise DeliveryError("[downstream] count_url is not set")
        response = self._request("GET", self.count_url, _count_id(), "")
        where = f"GET {self.count_url}"
        try:
            body = response.json()
        except ValueError as err:
            raise DeliveryError(f'{where}: answer is not JSON (expected {{"active": N}})') from err
        for key in COUNT_KEYS:
            value = body.get(key) if isinstance(body, dict) else None
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value
        raise DeliveryError(f'{where}: expected {{"active": N}} with N >= 0, got {body!r:.200}')

    # -- downstream check ------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """For ``seat-agent downstream check``: signing, the endpoint's reachability (a HEAD,
        which no receiver treats as an event) and, with ``count_url``, the active count.
        Never raises for an unreachable application."""
        facts: dict[str, Any] = {
            "type": "webhook",
            "url": self.url,
            "reachable": False,
            "error": None,
            "signing": "Standard Webhooks v1 (HMAC-SHA256 of webhook-id.webhook-timestamp.body)",
            "auth": "signature" + (" and bearer token" if "Authorization" in self.headers else ""),
            "events": list(EVENT_TYPES),
            "count_url": self.count_url,
            "active": None,
        }
        try:
            answer = self.session.head(self.url, timeout=self.timeout, allow_redirects=False)
            facts["reachable"] = True
            facts["status"] = answer.status_code
        except requests.RequestException as err:
            facts["error"] = f"HEAD {self.url}: cannot connect: {err}"
            return facts
        if self.count_url is not None:
            try:
                facts["active"] = self.active_count()
            except DeliveryError as err:
                facts["error"] = str(err)
        return facts

    def dry_run(self, state: EffectiveUser) -> dict[str, Any]:
        """The event a change of ``state`` would send (as ``user.updated``; the outbox picks
        created / activated / deactivated from what was announced before). Nothing is sent;
        a webhook application refuses no field."""
        body = json.loads(self._state_body("user.updated", state))
        return {"requests": [{"method": "POST", "url": self.url, "body": body}], "problems": []}

    # -- Connector (direct pushes; the outbox sends frozen events instead) -----------------

    def _state_body(self, kind: str, state: EffectiveUser) -> str:
        data = {
            "id": state.user_id,
            "userName": state.user_name,
            "active": state.active,
            "appStatus": state.app_status,
            "role": state.role,
            "displayName": state.display_name,
            "emails": state.emails,
        }
        return event_body(kind, self.clock(), data)

    def push_user(self, state: EffectiveUser, remote_id: str | None) -> str:
        """Send the state as ``user.created`` (never pushed) or ``user.updated``. Each push
        is an event of its own carrying the whole state, so a repeat is harmless."""
        kind = "user.created" if remote_id is None else "user.updated"
        body = self._state_body(kind, state)
        self.send(_content_id(body), body)
        return state.user_id

    def delete_user(self, user_id: str, remote_id: str | None) -> None:
        """Send ``user.deleted`` (a receiver that never had the user ignores it)."""
        body = event_body("user.deleted", self.clock(), {"id": user_id})
        self.send(_content_id(body), body)

    def list_users(self) -> Iterator[RemoteUser]:
        """A webhook application cannot be listed: reconcile compares counts (count_url)."""
        raise DeliveryError(
            "a webhook application cannot list its users; reconcile compares the count at"
            " [downstream] count_url instead"
        )


def _count_id() -> str:
    return f"count_{uuid.uuid4().hex}"


def _content_id(body: str) -> str:
    """The id of a direct push: its body's digest (the same bytes, the same id)."""
    return "msg_" + hashlib.sha256(body.encode()).hexdigest()[:32]
