"""Render stored records as SCIM resources (RFC 7643 §3.1 meta, §4.1.2 groups)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agent.scim.resources import (
    ENTERPRISE,
    GROUP_SCHEMA,
    LIST_RESPONSE,
    SEAT_EXT,
    USER_SCHEMA,
    etag,
)
from agent.storage.records import GroupRecord, UserRecord


def _ts(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def _meta(kind: str, location: str, created: datetime, modified: datetime, version: int) -> dict:
    return {
        "resourceType": kind,
        "created": _ts(created),
        "lastModified": _ts(modified),
        "location": location,
        "version": etag(version),
    }


def render_user(
    record: UserRecord,
    base_url: str,
    fallback_role: str | None = None,
    seat_extension: bool = False,
) -> dict[str, Any]:
    """The User resource; with ``seat_extension`` (``[scim] seat_extension``), its seat state
    as the read-only seat-agent extension too."""
    resource = record.resource
    schemas = [USER_SCHEMA]
    if ENTERPRISE in resource:
        schemas.append(ENTERPRISE)
    if seat_extension:
        schemas.append(SEAT_EXT)
    out: dict[str, Any] = {"schemas": schemas, "id": record.id}
    out.update(resource)
    manager = (resource.get(ENTERPRISE) or {}).get("manager")
    if manager and manager.get("value"):
        # RFC 7643 §4.3: manager.$ref is the URI of the manager's User, derived from its id.
        ref = {**manager, "$ref": f"{base_url}/Users/{manager['value']}"}
        out[ENTERPRISE] = {**resource[ENTERPRISE], "manager": ref}
    if record.groups:
        out["groups"] = [
            {
                "value": gid,
                "$ref": f"{base_url}/Groups/{gid}",
                "display": name,
                "type": "direct",
            }
            for gid, name in record.groups
        ]
    if seat_extension:
        seat: dict[str, Any] = {
            "licenseState": record.seat.license_state,
            "appStatus": record.seat.app_status,
        }
        if record.queue_position is not None:
            seat["queuePosition"] = record.queue_position
        if record.seat.on_fallback:
            seat["fallbackRole"] = fallback_role
        out[SEAT_EXT] = seat
    out["meta"] = _meta(
        "User",
        f"{base_url}/Users/{record.id}",
        record.created,
        record.last_modified,
        record.version,
    )
    return out


def render_group(
    record: GroupRecord, base_url: str, member_display: bool = False
) -> dict[str, Any]:
    """``member_display``: include ``members.display`` (returned "request", see
    agent.scim.resources.member_display_requested)."""
    out: dict[str, Any] = {"schemas": [GROUP_SCHEMA], "id": record.id}
    out.update(record.resource)
    if record.members is not None:
        out["members"] = [
            {"value": uid, "$ref": f"{base_url}/Users/{uid}", "type": "User"}
            | ({"display": display} if member_display else {})
            for uid, display in record.members
        ]
    out["meta"] = _meta(
        "Group",
        f"{base_url}/Groups/{record.id}",
        record.created,
        record.last_modified,
        record.version,
    )
    return out


def list_response(resources: list[dict], total: int, start_index: int) -> dict[str, Any]:
    """RFC 7644 §3.4.2: ListResponse with 1-based startIndex and integer totalResults."""
    return {
        "schemas": [LIST_RESPONSE],
        "totalResults": total,
        "startIndex": start_index,
        "itemsPerPage": len(resources),
        "Resources": resources,
    }


def cursor_list_response(
    resources: list[dict],
    total: int,
    next_cursor: str | None,
    previous_cursor: str | None,
) -> dict[str, Any]:
    """RFC 9865 §2: a cursor page carries ``nextCursor`` except on the last page and
    ``previousCursor`` when there is a page before it (never on the first); no ``startIndex``,
    which belongs to index paging."""
    body: dict[str, Any] = {"schemas": [LIST_RESPONSE], "totalResults": total}
    body["itemsPerPage"] = len(resources)
    if previous_cursor is not None:
        body["previousCursor"] = previous_cursor
    if next_cursor is not None:
        body["nextCursor"] = next_cursor
    body["Resources"] = resources
    return body
