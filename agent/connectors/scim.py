"""A SCIM 2.0 downstream application (RFC 7644), spoken with requests, in the terms the
application declares about itself (agent.connectors.scim_app).

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
from typing import Any
from urllib.parse import quote

import requests

from agent.connectors.base import DeliveryError, EffectiveGroup, EffectiveUser, RemoteUser
from agent.connectors.http import retry_after_seconds, send
from agent.connectors.scim_app import (
    AUTO,
    COMMON,
    SEAT_EXT,
    USER_SCHEMA,
    AppAttribute,
    AppProfile,
    FieldMap,
    MappingError,
    Target,
    field_map,
    profile_from,
)

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
SCIM_JSON = "application/scim+json"

log = logging.getLogger("seat_agent.connectors.scim")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def scim_string(value: str) -> str:
    """A filter comparison value: a JSON string literal (RFC 7644 §3.4.2.2)."""
    return json.dumps(value, ensure_ascii=False)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _active(value: Any) -> bool:
    if isinstance(value, str):  # Entra-style "True"/"False"
        return value.strip().lower() == "true"
    return bool(value) if value is not None else True


def remote_user(resource: dict[str, Any], fields: FieldMap | None = None) -> RemoteUser:
    """A downstream SCIM User (RFC 7643 §4.1) as a RemoteUser, the role and app status read
    from where ``fields`` puts them (``fields`` None: ``roles`` and the seat-agent extension).
    The last login is read from the seat-agent extension (``lastLogin``) or a top-level
    ``lastLogin``; None otherwise."""
    ext = resource.get(SEAT_EXT) or {}
    last_login = _parse_time(ext.get("lastLogin")) or _parse_time(resource.get("lastLogin"))
    if fields is None:
        role = Target(None, AppAttribute("roles", "complex", True, sub_attributes=("value",)))
        status: str | None = ext.get("appStatus")
        role_value: str | None = role.decode(resource)
    else:
        role_value = fields.role.decode(resource) if fields.role else None
        status = fields.status.decode(resource) if fields.status else None
    return RemoteUser(
        remote_id=str(resource["id"]),
        external_id=resource.get("externalId"),
        user_name=str(resource.get("userName", "")),
        active=_active(resource.get("active")),
        app_status=status,
        role=role_value,
        last_login=last_login,
    )


def user_resource(state: EffectiveUser, fields: FieldMap) -> dict[str, Any]:
    """The User we POST or PUT (RFC 7644 §3.3, §3.5.1): only attributes and schemas the app
    declares (RFC 7644 §3.3 lets a service provider refuse others)."""
    body: dict[str, Any] = {
        "schemas": [USER_SCHEMA],
        "externalId": state.user_id,
        "userName": state.user_name,
        "active": state.active,
    }
    if fields.display_name and state.display_name:
        body["displayName"] = state.display_name
    if fields.emails and state.emails:
        body["emails"] = state.emails
    for target, value in ((fields.role, state.role), (fields.status, state.app_status)):
        if target is None:
            continue
        encoded = target.encode(value)
        if target.schema is None:
            body[target.attribute.name] = encoded
            continue
        if target.schema not in body["schemas"]:
            body["schemas"].append(target.schema)
        if encoded is not None:
            body.setdefault(target.schema, {})[target.attribute.name] = encoded
    return body


def patch_body(state: EffectiveUser, fields: FieldMap) -> dict[str, Any]:
    """The same change as a PatchOp (RFC 7644 §3.5.2): ``replace`` of each attribute we own,
    ``remove`` of one that has no value now, so attributes the app holds that seat-agent does
    not manage are left as they are (a PUT would clear them)."""
    values: list[tuple[str, Any]] = [
        ("userName", state.user_name),
        ("active", state.active),
        ("externalId", state.user_id),
    ]
    if fields.display_name:
        values.append(("displayName", state.display_name))
    if fields.emails:
        values.append(("emails", state.emails or None))
    for target, value in ((fields.role, state.role), (fields.status, state.app_status)):
        if target is not None:
            values.append((target.path, target.encode(value) if value is not None else None))
    operations = [
        {"op": "replace", "path": path, "value": value}
        if value is not None
        else {"op": "remove", "path": path}
        for path, value in values
    ]
    return {"schemas": [PATCH_OP], "Operations": operations}


class ScimConnector:
    """Pushes users to a SCIM 2.0 service provider at ``base_url`` (ending in ``/scim/v2``).

    Before its first write it reads what the app declares (``/ServiceProviderConfig``,
    ``/ResourceTypes``, ``/Schemas``; RFC 7644 §4) and from then on sends only that: PATCH
    when ``patch.supported`` (else PUT), look-ups by ``externalId`` when filtering is
    supported (else by ``userName``, the filter every IdP relies on), the role and the app
    status where ``[downstream] role_attribute`` / ``status_attribute`` put them. The profile
    is read again by ``list_users`` (every reconcile) and by ``refresh``. A failing read is a
    temporary DeliveryError (retried, reported); a mapping the app cannot take is a
    MappingError (a permanent DeliveryError on the delivery path).

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
        role_attribute: str = AUTO,
        status_attribute: str = AUTO,
        profile: AppProfile | None = None,
        push_groups: bool = False,
    ):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.clock = clock
        self.page_size = page_size
        self.role_attribute = role_attribute
        self.status_attribute = status_attribute
        self.push_groups = push_groups
        self._own_session = session is None
        self.session = session or requests.Session()
        self.headers = {"Accept": SCIM_JSON}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self._profile = profile
        self._fields: FieldMap | None = None
        self._learned_at: datetime | None = None
        self._learn_error: str | None = None

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
        response = send(
            self.session,
            method,
            self.base_url + path,
            where,
            params=params,
            data=data,
            headers=headers,
            timeout=self.timeout,
        )
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
            raise DeliveryError(detail, status=status)
        raise DeliveryError(detail, permanent=True, status=status)

    @staticmethod
    def _json(response: requests.Response, where: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError as err:
            raise DeliveryError(f"{where}: response is not JSON") from err
        if not isinstance(body, dict):
            raise DeliveryError(f"{where}: response is not a JSON object")
        return body

    # -- what the app declares -------------------------------------------------------------

    def _discovery(self, path: str) -> dict[str, Any] | None:
        """One discovery document; None when the app does not publish it (404, 501)."""
        response = self._request("GET", path, accept=(404, 501))
        if response.status_code in (404, 501):
            return None
        return self._json(response, f"GET {path}")

    def refresh(self) -> AppProfile:
        """Read the app's discovery documents again and resolve the field mapping.

        Raises DeliveryError when the app cannot be read (temporary: retried) and
        MappingError when ``[downstream]`` maps onto an attribute the app does not declare."""
        try:
            config = self._discovery("/ServiceProviderConfig")
            if config is None:
                raise DeliveryError(
                    "GET /ServiceProviderConfig: HTTP 404: the application publishes no"
                    " ServiceProviderConfig (RFC 7644 §4); check [downstream] url"
                    " (it must end at the SCIM base, e.g. .../scim/v2)",
                    permanent=True,
                )
            profile = profile_from(
                config, self._discovery("/ResourceTypes"), self._discovery("/Schemas")
            )
            self._profile, self._fields = profile, None
            fields = field_map(profile, self.role_attribute, self.status_attribute)
            if self.push_groups and profile.groups_endpoint is None:
                raise MappingError(
                    "[downstream] push_groups = true: the application declares no Group"
                    " resource type in /ResourceTypes; set push_groups = false"
                )
        except (DeliveryError, MappingError) as err:
            self._learn_error = str(err)
            raise
        self._fields = fields
        self._learned_at, self._learn_error = self.clock(), None
        return profile

    def fields(self) -> FieldMap:
        """The field mapping, reading the app first if it has not been read yet."""
        if self._fields is None:
            if self._profile is None:
                self.refresh()
            else:
                self._fields = field_map(self._profile, self.role_attribute, self.status_attribute)
        assert self._fields is not None
        return self._fields

    @property
    def profile(self) -> AppProfile:
        self.fields()
        assert self._profile is not None
        return self._profile

    def _checked_fields(self) -> FieldMap:
        """``fields()`` for the delivery path: a mapping error is a permanent DeliveryError
        (retried slowly and alerted, so the change is kept until the config is fixed)."""
        try:
            return self.fields()
        except MappingError as err:
            raise DeliveryError(str(err), permanent=True) from err

    def _lookup_attribute(self) -> str:
        return "externalId" if self.profile.filter else "userName"

    def _find(self, attr: str, value: str) -> dict[str, Any] | None:
        """The first user whose ``attr`` equals ``value`` (RFC 7644 §3.4.2.2 filter)."""
        endpoint = self.profile.users_endpoint
        response = self._request(
            "GET", endpoint, params={"filter": f"{attr} eq {scim_string(value)}", "count": 2}
        )
        found = self._json(response, f"GET {endpoint}").get("Resources") or []
        if len(found) > 1:
            log.warning(
                "downstream has %d users with %s %r; using the first", len(found), attr, value
            )
        return found[0] if found else None

    def _find_ours(self, state_user_id: str, user_name: str) -> dict[str, Any] | None:
        """Our user downstream: by ``externalId`` where the app filters, else by ``userName``
        (then only when it carries our externalId or none)."""
        if self.profile.filter:
            return self._find("externalId", state_user_id)
        found = self._find("userName", user_name)
        if found is not None and found.get("externalId") not in (None, state_user_id):
            return None
        return found

    def _path(self, remote_id: str) -> str:
        return f"{self.profile.users_endpoint}/{quote(remote_id, safe='')}"

    @property
    def reports_roles(self) -> bool:
        """False when the role is not sent to the app (so reconcile does not compare it)."""
        try:
            return self.fields().role is not None
        except (DeliveryError, MappingError):
            return True

    # -- Connector -------------------------------------------------------------------------

    def push_user(self, state: EffectiveUser, remote_id: str | None) -> str:
        """Create or update the user (RFC 7644 §3.3 POST; §3.5.2 PATCH, else §3.5.1 PUT);
        return its id."""
        fields = self._checked_fields()
        try:
            return self._push(state, remote_id, fields)
        except DeliveryError as err:
            if err.status == 400:
                # The app refused what it declared (or its declarations changed): read them
                # again before the retry instead of sending the same body for ever.
                self._profile, self._fields = None, None
            raise

    def _push(self, state: EffectiveUser, remote_id: str | None, fields: FieldMap) -> str:
        if remote_id is not None:
            updated = self._update(remote_id, state, fields)
            if updated is not None:
                return updated
            log.info(
                "downstream user %s for %s is gone; looking it up again", remote_id, state.user_id
            )
        existing = self._find_ours(state.user_id, state.user_name)
        if existing is not None:
            updated = self._update(str(existing["id"]), state, fields)
            if updated is not None:
                return updated
        endpoint = self.profile.users_endpoint
        body = user_resource(state, fields)
        response = self._request("POST", endpoint, body=body, accept=(409,))
        if response.status_code != 409:
            return str(self._json(response, f"POST {endpoint}")["id"])
        return self._adopt(state, fields)

    def _update(self, remote_id: str, state: EffectiveUser, fields: FieldMap) -> str | None:
        """PATCH (or PUT) the user; None when it no longer exists downstream (404)."""
        path = self._path(remote_id)
        if self.profile.patch:
            response = self._request("PATCH", path, body=patch_body(state, fields), accept=(404,))
        else:
            response = self._request("PUT", path, body=user_resource(state, fields), accept=(404,))
        if response.status_code == 404:
            return None
        if response.status_code == 204 or not response.content:
            return remote_id
        return str(self._json(response, f"{response.request.method} {path}").get("id") or remote_id)

    def _adopt(self, state: EffectiveUser, fields: FieldMap) -> str:
        """POST said 409 (RFC 7644 §3.3: uniqueness): the user exists. Take it over when it is
        ours (same externalId) or unclaimed (same userName, no externalId)."""
        existing = self._find_ours(state.user_id, state.user_name) or self._find(
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
        updated = self._update(str(existing["id"]), state, fields)
        if updated is None:
            raise DeliveryError(f"downstream user {existing['id']} vanished during 409 recovery")
        return updated

    def delete_user(self, user_id: str, remote_id: str | None) -> None:
        """RFC 7644 §3.6 DELETE; 404 means already gone, which is success."""
        self._checked_fields()
        if remote_id is None:
            if not self.profile.filter:
                return  # never pushed (no link) and not findable by externalId: nothing ours
            existing = self._find("externalId", user_id)
            if existing is None:
                return
            remote_id = str(existing["id"])
        self._request("DELETE", self._path(remote_id), accept=(404,))

    def list_users(self) -> Iterator[RemoteUser]:
        """All users, ``page_size`` at a time (RFC 7644 §3.4.2.4 pagination, never more than
        the app's ``filter.maxResults``). Reads the app's profile again first (reconcile)."""
        try:
            self.refresh()
        except MappingError as err:
            raise DeliveryError(str(err), permanent=True) from err
        fields = self.fields()
        endpoint = self.profile.users_endpoint
        size = min(self.page_size, self.profile.max_results or self.page_size)
        start = 1
        while True:
            response = self._request("GET", endpoint, params={"startIndex": start, "count": size})
            page = self._json(response, f"GET {endpoint}")
            resources = page.get("Resources") or []
            for resource in resources:
                yield remote_user(resource, fields)
            start += len(resources)
            total = page.get("totalResults")
            if not resources or (isinstance(total, int) and start > total):
                return

    # -- groups (with [downstream] push_groups) ---------------------------------------------

    def _groups_endpoint(self) -> str:
        self._checked_fields()
        endpoint = self.profile.groups_endpoint
        if endpoint is None:
            raise DeliveryError(
                "the application declares no Group resource type; set [downstream]"
                " push_groups = false",
                permanent=True,
            )
        return endpoint

    def _find_group(self, group: EffectiveGroup, by_name: bool = False) -> dict[str, Any] | None:
        """Our group downstream: by ``externalId`` where the app filters, else (or with
        ``by_name``) by ``displayName`` (RFC 7643 §4.2), only when unclaimed or ours."""
        endpoint = self._groups_endpoint()
        attr, value = (
            ("externalId", group.group_id)
            if self.profile.filter and not by_name
            else ("displayName", group.display_name)
        )
        response = self._request(
            "GET",
            endpoint,
            params={
                "filter": f"{attr} eq {scim_string(value)}",
                "count": 2,
                "excludedAttributes": "members",
            },
        )
        for found in self._json(response, f"GET {endpoint}").get("Resources") or []:
            if found.get("externalId") in (None, group.group_id):
                return dict(found)
        return None

    def push_group(self, group: EffectiveGroup, remote_id: str | None) -> str:
        """Create the group or set its name and exactly these members (RFC 7644 §3.3; §3.5.2
        ``replace`` of ``members``, else §3.5.1 PUT); return its downstream id."""
        endpoint = self._groups_endpoint()
        members = [{"value": m} for m in group.member_remote_ids]
        if remote_id is None:
            found = self._find_group(group)
            remote_id = str(found["id"]) if found is not None else None
        if remote_id is not None:
            updated = self._update_group(endpoint, remote_id, group, members)
            if updated is not None:
                return updated
        response = self._request(
            "POST", endpoint, body=self._group_resource(group, members), accept=(409,)
        )
        if response.status_code != 409:
            return str(self._json(response, f"POST {endpoint}")["id"])
        found = self._find_group(group, by_name=True)  # RFC 7644 §3.3: adopt an unclaimed one
        if found is not None:
            updated = self._update_group(endpoint, str(found["id"]), group, members)
            if updated is not None:
                return updated
        raise DeliveryError(
            f"POST {endpoint}: HTTP 409: the application has a group named"
            f" {group.display_name!r} that seat-agent did not create; rename one of them",
            permanent=True,
            status=409,
        )

    def _update_group(
        self,
        endpoint: str,
        remote_id: str,
        group: EffectiveGroup,
        members: list[dict[str, str]],
    ) -> str | None:
        """Set the group's name and members; None when it is gone downstream (404)."""
        path = f"{endpoint}/{quote(remote_id, safe='')}"
        if self.profile.patch:
            body: dict[str, Any] = {
                "schemas": [PATCH_OP],
                "Operations": [
                    {"op": "replace", "path": "displayName", "value": group.display_name},
                    {"op": "replace", "path": "externalId", "value": group.group_id},
                    {"op": "replace", "path": "members", "value": members}
                    if members
                    else {"op": "remove", "path": "members"},
                ],
            }
            response = self._request("PATCH", path, body=body, accept=(404,))
        else:
            response = self._request(
                "PUT", path, body=self._group_resource(group, members), accept=(404,)
            )
        return None if response.status_code == 404 else remote_id

    @staticmethod
    def _group_resource(group: EffectiveGroup, members: list[dict[str, str]]) -> dict[str, Any]:
        return {
            "schemas": [GROUP_SCHEMA],
            "externalId": group.group_id,
            "displayName": group.display_name,
            "members": members,
        }

    def delete_group(self, group_id: str, remote_id: str | None) -> None:
        """RFC 7644 §3.6 DELETE of the group; 404 means already gone."""
        endpoint = self._groups_endpoint()
        if remote_id is None:
            if not self.profile.filter:
                return
            found = self._find_group(EffectiveGroup(group_id, ""))
            if found is None:
                return
            remote_id = str(found["id"])
        self._request("DELETE", f"{endpoint}/{quote(remote_id, safe='')}", accept=(404,))

    # -- for `seat-agent downstream check` ---------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """What the agent learned about the app and the mapping it will use; never raises."""
        out: dict[str, Any] = {"type": "scim", "url": self.base_url}
        try:
            self.refresh()
        except DeliveryError as err:
            if err.status in (401, 403):
                return {
                    **out,
                    "reachable": True,
                    "error": f"the application refused the token ({err}): check [downstream]"
                    " token or the environment variable token_env names",
                }
            return {**out, "reachable": err.status is not None, "error": str(err)}
        except MappingError as err:
            app = self._profile.describe() if self._profile else None
            return {**out, "reachable": True, "error": str(err), "app": app}
        profile, fields = self.profile, self.fields()
        return {
            **out,
            "reachable": True,
            "error": None,
            "app": profile.describe(),
            "update": "PATCH" if profile.patch else "PUT",
            "lookup": self._lookup_attribute(),
            "mapping": fields.describe(),
            "seatExtension": profile.extension(SEAT_EXT) is not None,
            "groups": "pushed" if self.push_groups else "not pushed",
            "learnedAt": self._learned_at.isoformat() if self._learned_at else None,
        }

    def dry_run(self, state: EffectiveUser) -> dict[str, Any]:
        """The write a push of ``state`` would send, looked up but not sent, and the problems
        the app would refuse it for (attributes or schemas it does not declare)."""
        try:
            fields = self.fields()
            existing = self._find_ours(state.user_id, state.user_name)
        except (DeliveryError, MappingError) as err:
            return {"requests": [], "problems": [str(err)]}
        endpoint = self.profile.users_endpoint
        if existing is None:
            request = {
                "method": "POST",
                "url": self.base_url + endpoint,
                "body": user_resource(state, fields),
            }
        else:
            path = self._path(str(existing["id"]))
            request = {
                "method": "PATCH" if self.profile.patch else "PUT",
                "url": self.base_url + path,
                "body": patch_body(state, fields)
                if self.profile.patch
                else user_resource(state, fields),
            }
        return {
            "requests": [request],
            "problems": undeclared(user_resource(state, fields), self.profile),
        }


def undeclared(body: dict[str, Any], profile: AppProfile) -> list[str]:
    """The attributes and schemas of ``body`` the app does not declare (RFC 7644 §3.3)."""
    problems = []
    for key, value in body.items():
        if key.lower() in COMMON:
            continue
        if key.lower().startswith("urn:"):
            found = profile.extension(key)
            if found is None:
                problems.append(f"schema {key} is not declared by the application")
                continue
            for name in value if isinstance(value, dict) else {}:
                if name.lower() not in found[1]:
                    problems.append(f"attribute {key}:{name} is not declared by the application")
        elif not profile.declares(key):
            problems.append(f"attribute {key} is not declared by the application")
    return problems


def _error_detail(response: requests.Response) -> str:
    """The SCIM error ``detail`` (RFC 7644 §3.12), else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and body.get("detail"):
        return str(body["detail"])[:500]
    return response.text[:200]
