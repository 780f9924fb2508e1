"""A SCIM 2.0 downstream application (RFC 7644), spoken with requests.

Idempotency: every user we create carries ``externalId`` = our user id (RFC 7643 §3.1), so a
push that does not know the downstream id first looks the user up by ``externalId``; a push
resent after a crash therefore updates the user the first send created instead of creating a
second one. A delete of a user already gone (404) is success.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import requests

from agent.connectors.base import DeliveryError, EffectiveUser, RemoteUser

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
SEAT_EXT = "urn:ietf:params:scim:schemas:extension:seatagent:2.0:User"
SCIM_JSON = "application/scim+json"

log = logging.getLogger("seat_agent.connectors.scim")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def scim_string(value: str) -> str:
    """A filter comparison value: a JSON string literal (RFC 7644 §3.4.2.2)."""
    return json.dumps(value, ensure_ascii=False)


def retry_after_seconds(header: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds from ``now``: delay-seconds or an HTTP-date (RFC 7231 §7.1.3).
    None when absent or unreadable."""
    if header is None:
        return None
    header = header.strip()
    if header.isdigit():
        return float(header)
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _first_role(resource: dict[str, Any]) -> str | None:
    roles = [r for r in resource.get("roles") or [] if isinstance(r, dict) and "value" in r]
    for r in roles:
        if r.get("primary") is True:
            return str(r["value"])
    return str(roles[0]["value"]) if roles else None


def _active(value: Any) -> bool:
    if isinstance(value, str):  # Entra-style "True"/"False"
        return value.strip().lower() == "true"
    return bool(value) if value is not None else True


def remote_user(resource: dict[str, Any]) -> RemoteUser:
    """A downstream SCIM User (RFC 7643 §4.1) as a RemoteUser. The last login is read from
    the seat-agent extension (``lastLogin``) or a top-level ``lastLogin``; None otherwise."""
    ext = resource.get(SEAT_EXT) or {}
    last_login = _parse_time(ext.get("lastLogin")) or _parse_time(resource.get("lastLogin"))
    return RemoteUser(
        remote_id=str(resource["id"]),
        external_id=resource.get("externalId"),
        user_name=str(resource.get("userName", "")),
        active=_active(resource.get("active")),
        app_status=ext.get("appStatus"),
        role=_first_role(resource),
        last_login=last_login,
    )


def user_resource(state: EffectiveUser) -> dict[str, Any]:
    """The User we PUT or POST (RFC 7644 §3.3, §3.5.1). The app status rides in the
    seat-agent extension; a server that does not know it ignores it (RFC 7643 §3.3)."""
    body: dict[str, Any] = {
        "schemas": [USER_SCHEMA, SEAT_EXT],
        "externalId": state.user_id,
        "userName": state.user_name,
        "active": state.active,
        SEAT_EXT: {"appStatus": state.app_status},
    }
    if state.display_name:
        body["displayName"] = state.display_name
    if state.emails:
        body["emails"] = state.emails
    body["roles"] = [{"value": state.role}] if state.role else []
    return body


class ScimConnector:
    """Pushes users to a SCIM 2.0 service provider at ``base_url`` (ending in ``/scim/v2``).

    HTTP outcomes (RFC 7644 §3.12): timeouts and connection errors, 5xx, 408 and 429 are
    temporary (``Retry-After`` honoured on 429 and 503); other 4xx are permanent, except 404
    (user gone) and 409 (uniqueness: adopt the existing user) which are handled here.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None,
        timeout: float,
        session: requests.Session | None = None,
        *,
        clock: Callable[[], datetime] = _utcnow,
        page_size: int = 100,
    ):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.clock = clock
        self.page_size = page_size
        self._own_session = session is None
        self.session = session or requests.Session()
        self.headers = {"Accept": SCIM_JSON}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        if self._own_session:
            self.session.close()

    def __enter__(self) -> ScimConnector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- HTTP ------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        accept: tuple[int, ...] = (),
    ) -> requests.Response:
        """One request; raise DeliveryError unless 2xx or a status in ``accept``."""
        headers = dict(self.headers)
        data = None
        if body is not None:
            headers["Content-Type"] = SCIM_JSON
            data = json.dumps(body)
        where = f"{method} {path}"
        try:
            response = self.session.request(
                method,
                self.base_url + path,
                params=params,
                data=data,
                headers=headers,
                timeout=self.timeout,
            )
        except requests.Timeout as err:
            raise DeliveryError(f"{where}: timed out ({err.__class__.__name__})") from err
        except requests.ConnectionError as err:
            raise DeliveryError(f"{where}: cannot connect: {err}") from err
        except requests.RequestException as err:
            raise DeliveryError(f"{where}: {err}") from err
        status = response.status_code
        if 200 <= status < 300 or status in accept:
            return response
        detail = f"{where}: HTTP {status}: {_error_detail(response)}"
        if status in (429, 503):
            raise DeliveryError(
                detail,
                retry_after=retry_after_seconds(response.headers.get("Retry-After"), self.clock()),
            )
        if status >= 500 or status == 408:
            raise DeliveryError(detail)
        raise DeliveryError(detail, permanent=True)

    @staticmethod
    def _json(response: requests.Response, where: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError as err:
            raise DeliveryError(f"{where}: response is not JSON") from err
        if not isinstance(body, dict):
            raise DeliveryError(f"{where}: response is not a JSON object")
        return body

    def _find(self, attr: str, value: str) -> dict[str, Any] | None:
        """The first user whose ``attr`` equals ``value`` (RFC 7644 §3.4.2.2 filter)."""
        response = self._request(
            "GET", "/Users", params={"filter": f"{attr} eq {scim_string(value)}", "count": 2}
        )
        found = self._json(response, "GET /Users").get("Resources") or []
        if len(found) > 1:
            log.warning(
                "downstream has %d users with %s %r; using the first", len(found), attr, value
            )
        return found[0] if found else None

    # -- Connector -------------------------------------------------------------------------

    def push_user(self, state: EffectiveUser, remote_id: str | None) -> str:
        """Create or replace the user (RFC 7644 §3.3 POST, §3.5.1 PUT); return its id."""
        body = user_resource(state)
        if remote_id is not None:
            replaced = self._put(remote_id, body)
            if replaced is not None:
                return replaced
            log.info(
                "downstream user %s for %s is gone; looking it up again", remote_id, state.user_id
            )
        existing = self._find("externalId", state.user_id)
        if existing is not None:
            replaced = self._put(str(existing["id"]), body)
            if replaced is not None:
                return replaced
        response = self._request("POST", "/Users", body=body, accept=(409,))
        if response.status_code != 409:
            return str(self._json(response, "POST /Users")["id"])
        return self._adopt(state, body)

    def _put(self, remote_id: str, body: dict[str, Any]) -> str | None:
        """PUT the user; None when it no longer exists downstream (404)."""
        path = f"/Users/{quote(remote_id, safe='')}"
        response = self._request("PUT", path, body=body, accept=(404,))
        if response.status_code == 404:
            return None
        return str(self._json(response, f"PUT {path}").get("id") or remote_id)

    def _adopt(self, state: EffectiveUser, body: dict[str, Any]) -> str:
        """POST said 409 (RFC 7644 §3.3: uniqueness): the user exists. Take it over when it is
        ours (same externalId) or unclaimed (same userName, no externalId)."""
        existing = self._find("externalId", state.user_id) or self._find(
            "userName", state.user_name
        )
        if existing is None:
            raise DeliveryError(f"POST /Users: HTTP 409 for {state.user_name!r}, but no user found")
        claimed = existing.get("externalId")
        if claimed and claimed != state.user_id:
            raise DeliveryError(
                f"userName {state.user_name!r} is held downstream by externalId {claimed!r}",
                permanent=True,
            )
        replaced = self._put(str(existing["id"]), body)
        if replaced is None:
            raise DeliveryError(f"downstream user {existing['id']} vanished during 409 recovery")
        return replaced

    def delete_user(self, user_id: str, remote_id: str | None) -> None:
        """RFC 7644 §3.6 DELETE; 404 means already gone, which is success."""
        if remote_id is None:
            existing = self._find("externalId", user_id)
            if existing is None:
                return
            remote_id = str(existing["id"])
        self._request("DELETE", f"/Users/{quote(remote_id, safe='')}", accept=(404,))

    def list_users(self) -> Iterator[RemoteUser]:
        """All users, ``page_size`` at a time (RFC 7644 §3.4.2.4 pagination)."""
        start = 1
        while True:
            response = self._request(
                "GET", "/Users", params={"startIndex": start, "count": self.page_size}
            )
            page = self._json(response, "GET /Users")
            resources = page.get("Resources") or []
            for resource in resources:
                yield remote_user(resource)
            start += len(resources)
            total = page.get("totalResults")
            if not resources or (isinstance(total, int) and start > total):
                return


def _error_detail(response: requests.Response) -> str:
    """The SCIM error ``detail`` (RFC 7644 §3.12), else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and body.get("detail"):
        return str(body["detail"])[:500]
    return response.text[:200]
