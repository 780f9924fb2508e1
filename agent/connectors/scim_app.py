"""What a downstream SCIM application declares about itself, and where seat-agent's fields go.

A SCIM service provider describes itself at ``/ServiceProviderConfig`` (RFC 7644 §4, RFC 7643
§5), ``/ResourceTypes`` (RFC 7643 §6) and ``/Schemas`` (RFC 7643 §7). RFC 7644 §3.3 lets it
refuse attributes and schemas it does not declare (strict servers such as scim2-server answer
400 ``invalidSyntax``), so the connector reads these first and sends only what the app
declares. Pure functions over the JSON documents: no HTTP here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
SEAT_EXT = "urn:ietf:params:scim:schemas:extension:seatagent:2.0:User"

AUTO = "auto"
# What the agent itself writes or finds users by: never a target for the role or the status.
OWN = frozenset({"username", "externalid", "displayname", "emails", "active", "id", "meta"})
# Attributes every resource has (RFC 7643 §3.1): never declared in a schema's attributes.
COMMON = frozenset({"id", "externalid", "meta", "schemas"})


class MappingError(ValueError):
    """``[downstream]`` maps a field onto an attribute the application does not declare (or
    cannot be written). The message names the setting, its value and what the app offers."""


@dataclass(frozen=True)
class AppAttribute:
    """One attribute of a published schema (RFC 7643 §7)."""

    name: str  # as the app spells it
    type: str = "string"
    multi_valued: bool = False
    mutability: str = "readWrite"
    sub_attributes: tuple[str, ...] = ()
    returned: str = "default"
    value_type: str = "string"  # the type of its "value" sub-attribute, for a complex one

    @property
    def writable(self) -> bool:
        return self.mutability in ("readWrite", "writeOnly")

    @property
    def has_value(self) -> bool:
        return any(s.lower() == "value" for s in self.sub_attributes)


Attributes = dict[str, AppAttribute]  # keyed by lower-case name (RFC 7643 §2.1)


def _rfc7643_user() -> Attributes:
    """RFC 7643 §4.1's User attributes: assumed when an app publishes no ``/Schemas``."""
    multi = ("value", "display", "type", "primary")
    attrs = [
        AppAttribute("userName"),
        AppAttribute("name", "complex", sub_attributes=("formatted", "familyName", "givenName")),
        AppAttribute("displayName"),
        AppAttribute("nickName"),
        AppAttribute("title"),
        AppAttribute("userType"),
        AppAttribute("active", "boolean"),
        AppAttribute("emails", "complex", True, sub_attributes=multi),
        AppAttribute("roles", "complex", True, sub_attributes=multi),
        AppAttribute("entitlements", "complex", True, sub_attributes=multi),
    ]
    return {a.name.lower(): a for a in attrs}


@dataclass(frozen=True)
class Target:
    """Where one of seat-agent's values goes in the app's User: a core attribute
    (``schema`` None) or an extension attribute (``schema`` its URN)."""

    schema: str | None
    attribute: AppAttribute

    @property
    def path(self) -> str:
        """The PATCH path (RFC 7644 §3.5.2: an extension attribute is ``URN:name``)."""
        name = self.attribute.name
        return f"{self.schema}:{name}" if self.schema else name

    def encode(self, value: str | None) -> Any:
        """The JSON value that holds ``value`` in this attribute (None: no value)."""
        attr = self.attribute
        if value is None:
            return [] if attr.multi_valued else None
        if attr.multi_valued:
            return [{"value": value}] if attr.type == "complex" else [value]
        return value

    def decode(self, resource: dict[str, Any]) -> str | None:
        """The value this attribute holds in a User the app returned: the primary (else first)
        ``value`` of a multi-valued attribute, or the string itself."""
        holder: Any = resource
        if self.schema:
            holder = _get_ci(resource, self.schema) or {}
        raw = _get_ci(holder, self.attribute.name) if isinstance(holder, dict) else None
        if isinstance(raw, list):
            values = [
                v
                for v in raw
                if (isinstance(v, dict) and _get_ci(v, "value") is not None) or isinstance(v, str)
            ]
            for v in values:
                if isinstance(v, dict) and _get_ci(v, "primary") is True:
                    return str(_get_ci(v, "value"))
            if not values:
                return None
            first = values[0]
            return str(_get_ci(first, "value")) if isinstance(first, dict) else str(first)
        return str(raw) if raw is not None and not isinstance(raw, dict) else None


def _get_ci(holder: dict[str, Any], name: str) -> Any:
    """``holder[name]`` with the name matched case-insensitively (RFC 7643 §2.1)."""
    if name in holder:
        return holder[name]
    lower = name.lower()
    for key, value in holder.items():
        if key.lower() == lower:
            return value
    return None


@dataclass(frozen=True)
class AppProfile:
    """What the app declared: its features and its User resource type's schemas."""

    patch: bool = False
    filter: bool = False
    max_results: int | None = None
    users_endpoint: str = "/Users"
    groups_endpoint: str | None = None
    user_attributes: Attributes = field(default_factory=_rfc7643_user)
    # Extension URN (as the app spells it) -> its attributes; only those the User resource
    # type lists in schemaExtensions.
    extensions: dict[str, Attributes] = field(default_factory=dict)
    schemas_published: bool = False
    auth_schemes: tuple[str, ...] = ()

    def declares(self, name: str) -> bool:
        return name.lower() in self.user_attributes

    def extension(self, urn: str) -> tuple[str, Attributes] | None:
        for spelled, attrs in self.extensions.items():
            if spelled.lower() == urn.lower():
                return spelled, attrs
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "patch": self.patch,
            "filter": self.filter,
            "maxResults": self.max_results,
            "usersEndpoint": self.users_endpoint,
            "groupsEndpoint": self.groups_endpoint,
            "schemasPublished": self.schemas_published,
            "userAttributes": sorted(a.name for a in self.user_attributes.values()),
            "extensions": {
                urn: sorted(a.name for a in attrs.values())
                for urn, attrs in self.extensions.items()
            },
            "authenticationSchemes": list(self.auth_schemes),
        }


def _attributes(schema: dict[str, Any]) -> Attributes:
    out: Attributes = {}
    for a in schema.get("attributes") or []:
        if not isinstance(a, dict) or not isinstance(a.get("name"), str):
            continue
        sub_list = [
            s
            for s in a.get("subAttributes") or []
            if isinstance(s, dict) and isinstance(s.get("name"), str)
        ]
        subs = tuple(s["name"] for s in sub_list)
        value_type = next(
            (str(s.get("type") or "string") for s in sub_list if s["name"].lower() == "value"),
            "string",
        )
        out[a["name"].lower()] = AppAttribute(
            name=a["name"],
            type=str(a.get("type") or "string"),
            multi_valued=a.get("multiValued") is True,
            mutability=str(a.get("mutability") or "readWrite"),
            sub_attributes=subs,
            returned=str(a.get("returned") or "default"),
            value_type=value_type,
        )
    return out


def _resources(document: dict[str, Any] | list[Any] | None) -> list[dict[str, Any]]:
    """The items of a ListResponse (RFC 7644 §3.4.2), or of a bare JSON list (some apps)."""
    if isinstance(document, list):
        items = document
    elif isinstance(document, dict):
        items = document.get("Resources") or []
    else:
        items = []
    return [i for i in items if isinstance(i, dict)]


def profile_from(
    config: dict[str, Any],
    resource_types: dict[str, Any] | list[Any] | None,
    schemas: dict[str, Any] | list[Any] | None,
) -> AppProfile:
    """The profile of an app from its three discovery documents. ``resource_types`` or
    ``schemas`` None: the app does not publish them; RFC 7643 §4.1's User is assumed and no
    extension."""
    patch = bool((config.get("patch") or {}).get("supported"))
    filt = config.get("filter") or {}
    max_results = filt.get("maxResults")
    auth = tuple(
        str(s.get("type"))
        for s in config.get("authenticationSchemes") or []
        if isinstance(s, dict) and s.get("type")
    )
    users_endpoint, groups_endpoint = "/Users", None
    extension_urns: list[str] = []
    types = _resources(resource_types)
    for rt in types:
        schema = str(rt.get("schema") or "")
        endpoint = rt.get("endpoint")
        if schema.lower() == USER_SCHEMA.lower() or rt.get("name") == "User":
            if isinstance(endpoint, str) and endpoint:
                users_endpoint = "/" + endpoint.lstrip("/")
            extension_urns = [
                str(e["schema"])
                for e in rt.get("schemaExtensions") or []
                if isinstance(e, dict) and e.get("schema")
            ]
        elif rt.get("name") == "Group" or schema.lower().endswith(":core:2.0:group"):
            if isinstance(endpoint, str) and endpoint:
                groups_endpoint = "/" + endpoint.lstrip("/")
    if resource_types is None:
        groups_endpoint = "/Groups"  # RFC 7644 §3.2's default endpoints
    published = {str(s.get("id", "")).lower(): s for s in _resources(schemas)}
    user_schema = published.get(USER_SCHEMA.lower())
    user_attributes = _attributes(user_schema) if user_schema else _rfc7643_user()
    extensions = {
        urn: _attributes(published[urn.lower()])
        for urn in extension_urns
        if urn.lower() in published
    }
    return AppProfile(
        patch=patch,
        filter=bool(filt.get("supported")),
        max_results=max_results if isinstance(max_results, int) and max_results > 0 else None,
        users_endpoint=users_endpoint,
        groups_endpoint=groups_endpoint,
        user_attributes=user_attributes,
        extensions=extensions,
        schemas_published=user_schema is not None,
        auth_schemes=auth,
    )


def _offered(profile: AppProfile) -> str:
    """A short list of what the app declares, for error messages."""
    names = [a.name for a in profile.user_attributes.values() if a.writable]
    for urn, attrs in profile.extensions.items():
        names += [f"{urn}:{a.name}" for a in attrs.values() if a.writable]
    shown = ", ".join(names[:30])
    return shown + (", ..." if len(names) > 30 else "")


def resolve_target(profile: AppProfile, key: str, spec: str) -> Target | None:
    """The attribute named by the setting ``key`` = ``spec`` (e.g. ``roles``,
    ``entitlements``, ``title``, ``urn:...:enterprise:2.0:User:costCenter``), checked against
    what the app declares; '' means "not sent". Raises MappingError naming both."""
    spec = spec.strip()
    if not spec:
        return None
    where = f"[downstream] {key} = {spec!r}"
    schema: str | None = None
    name = spec
    if spec.lower().startswith("urn:"):
        urn, _, name = spec.rpartition(":")
        if urn.lower() != USER_SCHEMA.lower():
            found = profile.extension(urn)
            if found is None:
                declared = ", ".join(profile.extensions) or "none"
                raise MappingError(
                    f"{where}: the application does not declare the schema {urn} for Users"
                    f" (its User extensions: {declared})"
                )
            schema, attrs = found
        else:
            attrs = profile.user_attributes
    else:
        attrs = profile.user_attributes
    attribute = attrs.get(name.lower())
    if attribute is None:
        raise MappingError(
            f"{where}: the application's User has no attribute {name!r}"
            f" (it declares: {_offered(profile)})"
        )
    if schema is None and attribute.name.lower() in OWN:
        raise MappingError(
            f"{where}: seat-agent already writes {attribute.name!r} itself (or finds users by"
            " it); choose another attribute, e.g. roles, entitlements, title or an extension"
            " attribute"
        )
    if not attribute.writable:
        raise MappingError(
            f"{where}: the application declares {attribute.name!r} {attribute.mutability}:"
            " seat-agent cannot write it"
        )
    if attribute.mutability == "writeOnly" or attribute.returned == "never":
        raise MappingError(
            f"{where}: the application never returns {attribute.name!r}, so reconcile could"
            " not read it back; choose an attribute it returns"
        )
    if attribute.value_type not in ("string", "reference"):
        raise MappingError(
            f"{where}: {attribute.name!r} holds {attribute.value_type} values, not text;"
            " choose a string attribute or roles/entitlements"
        )
    if attribute.type == "complex" and not (attribute.multi_valued and attribute.has_value):
        raise MappingError(
            f"{where}: {attribute.name!r} is a complex attribute without a 'value';"
            " choose a string attribute or a multi-valued one such as roles or entitlements"
        )
    if attribute.type not in ("string", "complex", "reference"):
        raise MappingError(
            f"{where}: {attribute.name!r} holds {attribute.type} values, not text;"
            " choose a string attribute or roles/entitlements"
        )
    return Target(schema, attribute)


@dataclass(frozen=True)
class FieldMap:
    """Where the role and the application status go, and which optional core attributes the
    app takes (those it does not declare are left out, never sent)."""

    role: Target | None
    status: Target | None
    display_name: bool
    emails: bool

    def describe(self) -> dict[str, Any]:
        return {
            "role": self.role.path if self.role else None,
            "status": self.status.path if self.status else None,
            "displayName": self.display_name,
            "emails": self.emails,
        }


def field_map(profile: AppProfile, role_attribute: str, status_attribute: str) -> FieldMap:
    """Resolve ``[downstream] role_attribute`` and ``status_attribute`` against the app.

    ``auto``: the role goes to ``roles`` and the status to the seat-agent extension's
    ``appStatus``, each only when the app declares it writable (else it is not sent). The app
    must declare ``userName`` and ``active``: without ``active`` a user cannot be deactivated
    there."""
    for required in ("userName", "active"):
        attr = profile.user_attributes.get(required.lower())
        if attr is None or not attr.writable:
            raise MappingError(
                f"[downstream] url: the application's User declares no writable {required!r};"
                " seat-agent needs userName and active to provision and deactivate users"
            )
    if role_attribute.strip().lower() == AUTO:
        roles = profile.user_attributes.get("roles")
        role = Target(None, roles) if roles is not None and roles.writable else None
    else:
        role = resolve_target(profile, "role_attribute", role_attribute)
    if status_attribute.strip().lower() == AUTO:
        status = None
        found = profile.extension(SEAT_EXT)
        if found is not None:
            app_status = found[1].get("appstatus")
            if app_status is not None and app_status.writable:
                status = Target(found[0], app_status)
    else:
        status = resolve_target(profile, "status_attribute", status_attribute)
    if role is not None and status is not None and role.path.lower() == status.path.lower():
        raise MappingError(
            f"[downstream] role_attribute and status_attribute both name {role.path!r};"
            " give each its own attribute"
        )
    return FieldMap(
        role=role,
        status=status,
        display_name=profile.declares("displayName"),
        emails=profile.declares("emails"),
    )
