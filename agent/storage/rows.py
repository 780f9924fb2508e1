"""Between rows and records: a resource's filterable columns and multi-valued rows, the
columns a UserRecord is built from, and the conversions back (plain dataclasses,
agent.storage.records)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql

from agent.scim.resources import MULTI_VALUED
from agent.storage.records import SeatState, UserRecord
from agent.storage.tables import group_members, groups, users


def utc(dt: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything we write is UTC."""
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def dump(resource: dict) -> str:
    return json.dumps(resource, separators=(",", ":"), ensure_ascii=False)


ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def user_columns(resource: dict) -> dict[str, Any]:
    """The filterable columns of a user, extracted from its resource."""
    name = resource.get("name") or {}
    ent = resource.get(ENTERPRISE) or {}
    manager = ent.get("manager") or {}
    return {
        "user_name": resource["userName"],
        "user_name_ci": resource["userName"].lower(),
        "external_id": resource.get("externalId"),
        "display_name": resource.get("displayName"),
        "nick_name": resource.get("nickName"),
        "title": resource.get("title"),
        "user_type": resource.get("userType"),
        "locale": resource.get("locale"),
        "timezone": resource.get("timezone"),
        "preferred_language": resource.get("preferredLanguage"),
        "profile_url": resource.get("profileUrl"),
        "given_name": name.get("givenName"),
        "family_name": name.get("familyName"),
        "formatted_name": name.get("formatted"),
        "active": bool(resource.get("active", True)),
        "employee_number": ent.get("employeeNumber"),
        "department": ent.get("department"),
        "organization": ent.get("organization"),
        "division": ent.get("division"),
        "cost_center": ent.get("costCenter"),
        "manager_id": manager.get("value"),
    }


def user_value_rows(user_id: str, resource: dict) -> list[dict[str, Any]]:
    rows = []
    for attr in MULTI_VALUED:
        for item in resource.get(attr) or []:
            value = item.get("value")
            if attr == "addresses" and value is None:
                value = item.get("formatted")
            rows.append(
                {
                    "user_id": user_id,
                    "attr": attr,
                    "type": item.get("type"),
                    "value_ci": str(value).lower() if value is not None else None,
                    "is_primary": bool(item.get("primary", False)),
                }
            )
    return rows


def seat_columns(seat: SeatState) -> dict[str, Any]:
    return {
        "app_status": seat.app_status,
        "license_state": seat.license_state,
        "holds_seat": seat.holds_seat,
        "on_fallback": seat.on_fallback,
        "queued_at": seat.queued_at,
        "last_active_at": seat.last_active_at,
        "deactivated_at": seat.deactivated_at,
    }


def user_records(rows: Sequence[Any]) -> list[UserRecord]:
    """The records of result rows that carry the ``RECORD_COLUMNS`` (in any order, with any
    other columns), each with its groups when the rows carry ``groups_json``.

    The positions of the columns are found once per result and each row is unpacked as the
    tuple it is: reading a SQLAlchemy Row's columns by attribute costs about 1.5 us each
    (SQLAlchemy 2.1), 2 ms of a page of 100 users' 6 (docs/performance.md).
    """
    if not rows:
        return []
    fields = rows[0]._fields
    columns = itemgetter(*(fields.index(name) for name in _RECORD_NAMES))
    groups_at = fields.index("groups_json") if "groups_json" in fields else None
    out: list[UserRecord] = []
    for row in rows:
        (
            user_id,
            resource,
            created,
            modified,
            version,
            app_status,
            license_state,
            holds_seat,
            on_fallback,
            queued_at,
            last_active_at,
            deactivated_at,
        ) = columns(row)
        record = UserRecord(
            user_id,
            json.loads(resource),
            utc(created),  # type: ignore[arg-type]
            utc(modified),  # type: ignore[arg-type]
            version,
            SeatState(
                app_status,
                license_state,
                bool(holds_seat),
                bool(on_fallback),
                utc(queued_at),
                utc(last_active_at),
                utc(deactivated_at),
            ),
        )
        if groups_at is not None:
            record.groups = _groups(row[groups_at])
        out.append(record)
    return out


def user_from_row(row: Any) -> UserRecord:
    """``user_records`` of one row."""
    return user_records([row])[0]


def _groups(raw: Any) -> list[tuple[str, str]]:
    """A user's (id, displayName) pairs from its row's ``groups_json``."""
    if isinstance(raw, str):  # SQLite: JSON text, unordered, each with its lowered name
        if raw == "[]":
            return []
        return [(gid, name) for gid, name, _ in sorted(json.loads(raw), key=_third)]
    return [(gid, name) for gid, name in raw] if raw else []


def _third(item: Sequence[Any]) -> Any:
    return item[2]


SEAT_FIELDS = (
    "app_status",
    "license_state",
    "holds_seat",
    "on_fallback",
    "queued_at",
    "last_active_at",
    "deactivated_at",
)

# What a UserRecord is built from: the resource, its meta and the seat state. The filterable
# copies of attributes (user_name_ci, given_name, ...) stay in the database, so a page of 100
# users fetches and converts a third of the columns.
RECORD_COLUMNS = (
    users.c.id,
    users.c.resource,
    users.c.created,
    users.c.last_modified,
    users.c.version,
    *(users.c[f] for f in SEAT_FIELDS),
)
# Their names, in the order ``user_records`` unpacks them.
_RECORD_NAMES = tuple(c.name for c in RECORD_COLUMNS)
# Each row carries its groups, so a lookup or a page is one statement, not one more for groups.
# PostgreSQL: [[id, displayName], ...] in displayName order, NULL for none.
_GROUPS_JSON = (
    select(
        func.json_agg(
            postgresql.aggregate_order_by(
                func.json_build_array(groups.c.id, groups.c.display_name), groups.c.display_name_ci
            )
        )
    )
    .select_from(group_members.join(groups, groups.c.id == group_members.c.group_id))
    .where(group_members.c.user_id == users.c.id)
    .correlate(users)
    .scalar_subquery()
    .label("groups_json")
)
# SQLite (no ORDER BY inside an aggregate before 3.44): JSON text [[id, displayName,
# lowered displayName], ...] in no particular order, "[]" for none; sorted in Python.
_SQLITE_GROUPS_JSON = (
    select(
        func.json_group_array(
            func.json_array(groups.c.id, groups.c.display_name, groups.c.display_name_ci)
        )
    )
    .select_from(group_members.join(groups, groups.c.id == group_members.c.group_id))
    .where(group_members.c.user_id == users.c.id)
    .correlate(users)
    .scalar_subquery()
    .label("groups_json")
)
# The record columns and the groups, by "is PostgreSQL".
WITH_GROUPS = {
    True: (*RECORD_COLUMNS, _GROUPS_JSON),
    False: (*RECORD_COLUMNS, _SQLITE_GROUPS_JSON),
}
