"""SCIM User and Group resources: validate what an IdP sends, render what we return.

Pure functions over plain dicts (RFC 7643 §4 resource schemas, RFC 7644 §3.3 creation,
§3.4.2.5 attribute projection). Read-only and foreign attributes that IdPs send (Okta's
``groups: []`` and placeholder ``password``, ``meta``, Entra's extra group schema) are accepted
and dropped; passwords are never stored.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from agent.scim import names
from agent.scim.errors import ScimError
from agent.scim.names import canonical_keys
from agent.scim.urns import ENTERPRISE as ENTERPRISE
from agent.scim.urns import ERROR_SCHEMA as ERROR_SCHEMA
from agent.scim.urns import GROUP_SCHEMA as GROUP_SCHEMA
from agent.scim.urns import LIST_RESPONSE as LIST_RESPONSE
from agent.scim.urns import SEAT_EXT as SEAT_EXT
from agent.scim.urns import USER_SCHEMA as USER_SCHEMA

SIMPLE_STRINGS = (
    "userName",
    "displayName",
    "nickName",
    "profileUrl",
    "title",
    "userType",
    "preferredLanguage",
    "locale",
    "timezone",
    "externalId",
)
MULTI_VALUED = (
    "emails",
    "phoneNumbers",
    "ims",
    "photos",
    "addresses",
    "entitlements",
    "roles",
    "x509Certificates",
)
NAME_PARTS = (
    "formatted",
    "familyName",
    "givenName",
    "middleName",
    "honorificPrefix",
    "honorificSuffix",
)
ENTERPRISE_STRINGS = ("employeeNumber", "costCenter", "organization", "division", "department")
READ_ONLY_USER = ("id", "meta", "groups", "password", "schemas")

_USER = names.USER.core
_ENTERPRISE = names.USER.extensions[ENTERPRISE]
_GROUP = names.GROUP.core
_MANAGER = _ENTERPRISE.require("manager")
_MEMBERS = _GROUP.require("members")
_NAME = _USER.require("name")
# Top-level User keys: core attributes and the URNs of known extensions (RFC 7643 §3.3).
_USER_KEYS = names.USER.body_keys


def parse_bool(value: Any, attr: str = "active") -> bool:
    """Booleans as JSON booleans or Entra's strings "True"/"False" (Entra SCIM known issues)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ScimError(400, f"Attribute '{attr}' must be a boolean", "invalidValue")


# Longest value kept per attribute, default 255 (the filterable columns of agent.storage.tables
# hold them): a longer one is a 400 on every database instead of a 500 on PostgreSQL.
MAX_CHARS = {
    "locale": 64,
    "timezone": 64,
    "preferredLanguage": 64,
    "profileUrl": 1024,
    "name.formatted": 512,
}
# The same for the sub-attributes of multi-valued attributes kept as user_values rows.
MAX_ITEM_CHARS = {"value": 1024, "formatted": 1024, "type": 64}


def _too_long(attr: str, limit: int) -> ScimError:
    return ScimError(400, f"Attribute '{attr}' is longer than {limit} characters", "invalidValue")


def _string(value: Any, attr: str) -> str | None:
    """A string attribute (RFC 7643 §2.3.1) must be a JSON string: a number or boolean is
    ``400 invalidValue``, not coerced (RFC 7644 §3.12)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ScimError(
            400, f"Attribute '{attr}' must be a string, not {_json_type(value)}", "invalidValue"
        )
    limit = MAX_CHARS.get(attr, 255)
    if len(value) > limit:
        raise _too_long(attr, limit)
    return value


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _multi(value: Any, attr: str) -> list[dict]:
    """A multi-valued attribute (RFC 7643 §2.4); sub-attribute names are matched
    case-insensitively (§2.1) and kept in the schema's spelling."""
    if value is None:
        return []
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise ScimError(400, f"Attribute '{attr}' must be a list of objects", "invalidValue")
    definition = _USER.attribute(attr)
    subs = definition.subs if definition is not None else {}
    out = []
    for item in value:
        if isinstance(item, str):
            item = {"value": item}
        if not isinstance(item, dict):
            raise ScimError(400, f"Attribute '{attr}' must be a list of objects", "invalidValue")
        clean = {k: v for k, v in canonical_keys(item, subs, attr).items() if v is not None}
        for sub, limit in MAX_ITEM_CHARS.items():
            if isinstance(clean.get(sub), str) and len(clean[sub]) > limit:
                raise _too_long(f"{attr}.{sub}", limit)
        if "primary" in clean:
            clean["primary"] = parse_bool(clean["primary"], f"{attr}.primary")
        for sub, sub_value in clean.items():
            # Every sub-attribute but primary is a string, reference or binary (RFC 7643 §4.1.2).
            if sub != "primary" and not isinstance(sub_value, str):
                raise ScimError(
                    400,
                    f"Attribute '{attr}.{sub}' must be a string, not {_json_type(sub_value)}",
                    "invalidValue",
                )
        if clean and clean not in out:
            out.append(clean)
    return out


def _manager(value: Any) -> dict | None:
    """Enterprise ``manager`` arrives as an id string, an object or a one-element list."""
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, str):
        value = {"value": value}
    if value is None or value == {}:
        return None
    if not isinstance(value, dict):
        raise ScimError(400, "Attribute 'manager' must be an object", "invalidValue")
    value = canonical_keys(value, _MANAGER.subs, "manager")
    if not value.get("value"):
        return None
    _string(value["value"], "manager.value")
    _string(value.get("displayName"), "manager.displayName")
    return {k: v for k, v in value.items() if k in ("value", "displayName") and v}


def _check_schemas(body: Mapping[str, Any], core: str) -> None:
    schemas = body.get("schemas")
    if schemas is None:
        return
    if not isinstance(schemas, list) or not all(isinstance(s, str) for s in schemas):
        raise ScimError(400, "'schemas' must be a list of URIs", "invalidSyntax")
    # Schema URNs are case-insensitive like attribute names (RFC 7643 §2.1, §3).
    if core not in schemas and core.lower() not in (s.lower() for s in schemas):
        raise ScimError(400, f"'schemas' must include {core}", "invalidSyntax")


def _body(body: Any) -> dict:
    if not isinstance(body, dict):
        raise ScimError(400, "Request body must be a JSON object", "invalidSyntax")
    return body


def normalize_user(body: Any) -> dict:
    """Validate a User from POST/PUT (RFC 7643 §4.1) and keep only writable, known attributes."""
    body = _body(body)
    _check_schemas(body, USER_SCHEMA)
    out: dict[str, Any] = {}
    for key, value in canonical_keys(body, _USER_KEYS).items():
        if key == ENTERPRISE:
            ext = _enterprise(value)
            if ext:
                out[ENTERPRISE] = ext
            continue
        canonical = _USER.canonical(key)
        if canonical is None or canonical in READ_ONLY_USER:
            continue  # foreign, read-only or extension (e.g. our own seat extension)
        if canonical in SIMPLE_STRINGS:
            s = _string(value, canonical)
            if s is not None:
                out[canonical] = s
        elif canonical in MULTI_VALUED:
            items = _multi(value, canonical)
            if items:
                out[canonical] = items
        elif canonical == "name":
            name = _name(value)
            if name:
                out["name"] = name
        elif canonical == "active":
            out["active"] = parse_bool(value)
    user_name = out.get("userName")
    if not user_name or not user_name.strip():
        raise ScimError(400, "Attribute 'userName' is required", "invalidValue")
    out.setdefault("active", True)
    return out


def _name(value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ScimError(400, "Attribute 'name' must be an object", "invalidValue")
    out = {}
    for k, v in canonical_keys(value, _NAME.subs, "name").items():
        part = k if k in NAME_PARTS else None
        s = _string(v, f"name.{part or k}")
        if part and s is not None:
            out[part] = s
    return out


def _enterprise(value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ScimError(400, f"'{ENTERPRISE}' must be an object", "invalidValue")
    out: dict[str, Any] = {}
    for k, v in canonical_keys(value, _ENTERPRISE.spelling, ENTERPRISE).items():
        canonical = k if k in ENTERPRISE_STRINGS or k == "manager" else None
        if canonical == "manager":
            manager = _manager(v)
            if manager:
                out["manager"] = manager
        elif canonical:
            s = _string(v, canonical)
            if s is not None:
                out[canonical] = s
    return out


def sanitize_user(resource: dict) -> dict:
    """Re-validate a resource produced by PATCH so stored data always has the right types."""
    body = dict(resource)
    body.pop("schemas", None)
    out = normalize_user(body)
    if "active" not in body:
        # RFC 7644 §3.5.2.2: a removed attribute stays unassigned (still treated as active).
        del out["active"]
    return out


def normalize_group(body: Any) -> tuple[dict, list[str] | None]:
    """Validate a Group (RFC 7643 §4.2); return (resource without members, member ids or None).

    Entra also lists ``http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group``
    in ``schemas``; it is accepted and not echoed.
    """
    body = _body(body)
    _check_schemas(body, GROUP_SCHEMA)
    out: dict[str, Any] = {}
    members: list[str] | None = None
    for key, value in canonical_keys(body, _GROUP.spelling).items():
        if key == "displayName":
            out["displayName"] = _string(value, "displayName")
        elif key == "externalId":
            s = _string(value, "externalId")
            if s is not None:
                out["externalId"] = s
        elif key == "members":
            members = member_ids(value)
    if not out.get("displayName") or not str(out["displayName"]).strip():
        raise ScimError(400, "Attribute 'displayName' is required", "invalidValue")
    return out, members


def member_ids(value: Any) -> list[str]:
    """Member references (RFC 7643 §4.2 ``members``) as an ordered, de-duplicated id list."""
    if value is None:
        return []
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise ScimError(400, "Attribute 'members' must be a list", "invalidValue")
    ids: list[str] = []
    for item in value:
        if isinstance(item, dict):
            item = canonical_keys(item, _MEMBERS.subs, "members")
        ref = item.get("value") if isinstance(item, dict) else item
        if not isinstance(ref, str) or not ref:
            raise ScimError(400, "Each member needs a string 'value'", "invalidValue")
        if ref not in ids:
            ids.append(ref)
    return ids


def etag(version: int) -> str:
    """Weak entity tag from the resource version (RFC 7644 §3.14)."""
    return f'W/"{version}"'


def project(
    resource: dict,
    attributes: Iterable[str] | None,
    excluded: Iterable[str] | None,
) -> dict:
    """Apply ``attributes``/``excludedAttributes`` (RFC 7644 §3.4.2.5).

    ``id``, ``schemas`` and ``meta`` are always returned; sub-attributes (``name.givenName``) and
    URN-qualified names are understood.
    """
    if attributes:
        wanted = [_split_attr(a) for a in attributes]
        out: dict[str, Any] = {k: resource[k] for k in ("schemas", "id", "meta") if k in resource}
        for top, sub in wanted:
            key = _find_key(resource, top)
            if key is None:
                continue
            if sub is None:
                out[key] = resource[key]
            elif isinstance(resource[key], dict):
                subkey = _find_key(resource[key], sub)
                if subkey is not None:
                    out.setdefault(key, {})[subkey] = resource[key][subkey]
            elif isinstance(resource[key], list):
                # Several sub-attributes of one multi-valued attribute (``members.value,
                # members.display``) are kept together, value by value.
                items = [item for item in resource[key] if isinstance(item, dict)]
                previous = out.get(key)
                kept = previous if isinstance(previous, list) else [{} for _ in items]
                for item, picked in zip(items, kept, strict=True):
                    subkey = _find_key(item, sub)
                    if subkey is not None:
                        picked[subkey] = item[subkey]
                out[key] = kept
        for key, value in list(out.items()):
            if isinstance(value, list) and key in resource and value is not resource[key]:
                out[key] = [item for item in value if item]
        return out
    if excluded:
        out = copy.copy(resource)
        for top, sub in (_split_attr(a) for a in excluded):
            key = _find_key(out, top)
            if key is None or key in ("id", "schemas", "meta"):
                continue
            if sub is None:
                del out[key]
            elif isinstance(out[key], dict):
                inner = dict(out[key])
                subkey = _find_key(inner, sub)
                if subkey is not None:
                    del inner[subkey]
                out[key] = inner
            elif isinstance(out[key], list):
                # ``members.value``: that sub-attribute of every value, not the attribute.
                out[key] = [_without(item, sub) for item in out[key]]
        return out
    return resource


def _without(item: Any, sub: str) -> Any:
    if not isinstance(item, dict):
        return item
    return {k: v for k, v in item.items() if k.lower() != sub.lower()}


def member_display_requested(attributes: Iterable[str] | None) -> bool:
    """Whether ``attributes`` names ``members.display``: it is declared ``returned: "request"``
    (RFC 7643 §2.4) because it is server-computed and not among RFC 7643 §8.7.1's member
    sub-attributes, so a Group carries it only when asked."""
    return any(a.strip().lower().split(":")[-1] == "members.display" for a in attributes or ())


def _split_attr(attr: str) -> tuple[str, str | None]:
    attr = attr.strip()
    for urn in (ENTERPRISE, SEAT_EXT, USER_SCHEMA, GROUP_SCHEMA):
        if attr.lower().startswith(urn.lower()):
            rest = attr[len(urn) :].lstrip(":")
            if urn in (USER_SCHEMA, GROUP_SCHEMA):
                attr = rest
                break
            return urn, (rest or None)
    top, _, sub = attr.partition(".")
    return top, (sub or None)


def _find_key(d: Mapping[str, Any], name: str) -> str | None:
    lowered = name.lower()
    for k in d:
        if k.lower() == lowered:
            return k
    return None


def parse_attr_list(raw: str | None) -> list[str] | None:
    """Comma-separated attribute list from a query parameter."""
    if not raw:
        return None
    return [a.strip() for a in raw.split(",") if a.strip()]
