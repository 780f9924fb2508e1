"""SCIM 2.0 discovery documents (RFC 7644 §4) that describe this server truthfully.

* ``/ServiceProviderConfig``: RFC 7643 §5.
* ``/ResourceTypes``: RFC 7643 §6.
* ``/Schemas``: RFC 7643 §7, with the attribute definitions of RFC 7643 §8.7.1 (User, Group,
  EnterpriseUser) plus the read-only seat-agent User extension.

The §8.7.1 definitions are copied as published, except where this server behaves differently;
each such difference is marked ``# server:`` where it is declared. As in §8.7.1, the common
attributes (``id``, ``externalId``, ``meta``; RFC 7643 §3.1) are not listed in any schema.

Every function builds fresh dicts, so callers may mutate what they get back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.scim.cursor import CURSOR_TIMEOUT_SECONDS
from agent.scim.urns import ENTERPRISE, GROUP_SCHEMA, SEAT_EXT, USER_SCHEMA

__all__ = [
    "ENTERPRISE",
    "GROUP_SCHEMA",
    "RESOURCE_TYPE_SCHEMA",
    "attribute_definitions",
    "SCHEMA_SCHEMA",
    "SEAT_EXT",
    "SPC_SCHEMA",
    "USER_SCHEMA",
    "resource_type_by_id",
    "resource_types",
    "schema_by_id",
    "schemas",
    "service_provider_config",
]

SCHEMA_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Schema"
RESOURCE_TYPE_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
SPC_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"

# The seat extension's licenseState values (agent.storage.records.SeatState.license_state).
LICENSE_STATES = ["licensed", "queued", "free", "inactive"]

Attr = dict[str, Any]
RO = "readOnly"
_DISPLAY = "A human-readable name, primarily used for display purposes."


# --- attribute builders -------------------------------------------------------------------------


def _attr(name: str, type: str = "string", description: str = "", **kw: Any) -> Attr:
    """One attribute definition with every RFC 7643 §7 characteristic spelled out.

    Omitted characteristics take the defaults of RFC 7643 §2.2: ``multiValued`` false,
    ``required`` false, ``caseExact`` false, ``mutability`` "readWrite", ``returned``
    "default", ``uniqueness`` "none". Keyword names are the JSON names (``multiValued``,
    ``canonicalValues``, ``referenceTypes``, ``subAttributes``...).
    """
    attr: Attr = {
        "name": name,
        "type": type,
        "multiValued": False,
        "description": description,
        "required": False,
        "caseExact": False,
        "mutability": "readWrite",
        "returned": "default",
        "uniqueness": "none",
    }
    attr.update(kw)
    if type == "complex":
        attr.setdefault("subAttributes", [])
    if type == "reference":
        attr.setdefault("referenceTypes", ["uri"])
    return attr


def _complex(name: str, description: str, subs: list[Attr], **kw: Any) -> Attr:
    """A complex attribute (RFC 7643 §2.3.8) and its ``subAttributes``."""
    return _attr(name, "complex", description, subAttributes=subs, **kw)


def _display() -> Attr:
    """The ``display`` sub-attribute of the multi-valued User attributes (RFC 7643 §8.7.1).

    §8.7.1 says "READ-ONLY" in the text yet declares "readWrite"; copied as published (this
    server stores what the client sends).
    """
    return _attr(
        "display",
        description="A human-readable name, primarily used for display purposes.  READ-ONLY.",
    )


def _type(description: str, canonical: list[str] | None = None, **kw: Any) -> Attr:
    """The ``type`` sub-attribute (RFC 7643 §2.4), with its ``canonicalValues`` if any."""
    if canonical is not None:
        kw["canonicalValues"] = canonical
    return _attr("type", description=description, **kw)


def _primary(example: str = "") -> Attr:
    return _attr(
        "primary",
        "boolean",
        "A Boolean value indicating the 'primary' or preferred attribute value for this "
        f"attribute{example}.  The primary attribute value 'true' MUST appear no more than once.",
    )


def _multi(name: str, description: str, subs: list[Attr], **kw: Any) -> Attr:
    """A multi-valued complex attribute (RFC 7643 §2.4)."""
    return _complex(name, description, subs, multiValued=True, **kw)


def _schema(base_url: str, schema_id: str, name: str, description: str, attrs: list[Attr]) -> dict:
    """A Schema resource (RFC 7643 §7) with its ``meta`` (RFC 7643 §3.1)."""
    return {
        "schemas": [SCHEMA_SCHEMA],
        "id": schema_id,
        "name": name,
        "description": description,
        "attributes": attrs,
        "meta": {"resourceType": "Schema", "location": f"{base_url}/Schemas/{schema_id}"},
    }


# --- RFC 7643 §8.7.1 User -------------------------------------------------------------------------

_NAME_EXAMPLE = "given the full name 'Ms. Barbara J Jensen, III')."


def _user_attributes() -> list[Attr]:
    """``urn:ietf:params:scim:schemas:core:2.0:User`` (RFC 7643 §4.1, §8.7.1)."""
    return [
        _attr(
            "userName",
            description="Unique identifier for the User, typically used by the user to directly "
            "authenticate to the service provider.  Each User MUST include a non-empty userName "
            "value.  This identifier MUST be unique across the service provider's entire set of "
            "Users.  REQUIRED.",
            # server: stored with a unique, case-insensitive index (RFC 7643 §4.1.1).
            required=True,
            caseExact=False,
            uniqueness="server",
        ),
        _complex(
            "name",
            "The components of the user's real name.  Providers MAY return just the full name as "
            "a single string in the formatted sub-attribute, or they MAY return just the "
            "individual component attributes using the other sub-attributes, or they MAY return "
            "both.  If both variants are returned, they SHOULD be describing the same name, with "
            "the formatted name indicating how the component attributes should be combined.",
            [
                _attr(
                    "formatted",
                    description="The full name, including all middle names, titles, and suffixes "
                    "as appropriate, formatted for display (e.g., 'Ms. Barbara J Jensen, III').",
                ),
                _attr(
                    "familyName",
                    description="The family name of the User, or last name in most Western "
                    f"languages (e.g., 'Jensen' {_NAME_EXAMPLE}",
                ),
                _attr(
                    "givenName",
                    description="The given name of the User, or first name in most Western "
                    f"languages (e.g., 'Barbara' {_NAME_EXAMPLE}",
                ),
                _attr(
                    "middleName",
                    description=f"The middle name(s) of the User (e.g., 'Jane' {_NAME_EXAMPLE}",
                ),
                _attr(
                    "honorificPrefix",
                    description="The honorific prefix(es) of the User, or title in most Western "
                    f"languages (e.g., 'Ms.' {_NAME_EXAMPLE}",
                ),
                _attr(
                    "honorificSuffix",
                    description="The honorific suffix(es) of the User, or suffix in most Western "
                    f"languages (e.g., 'III' {_NAME_EXAMPLE}",
                ),
            ],
        ),
        _attr(
            "displayName",
            description="The name of the User, suitable for display to end-users.  The name "
            "SHOULD be the full name of the User being described, if known.",
        ),
        _attr(
            "nickName",
            description="The casual way to address the user in real life, e.g., 'Bob' or 'Bobby' "
            "instead of 'Robert'.  This attribute SHOULD NOT be used to represent a User's "
            "username (e.g., 'bjensen' or 'mpepperidge').",
        ),
        _attr(
            "profileUrl",
            "reference",
            "A fully qualified URL pointing to a page representing the User's online profile.",
            referenceTypes=["external"],
        ),
        _attr("title", description='The user\'s title, such as "Vice President."'),
        _attr(
            "userType",
            description="Used to identify the relationship between the organization and the "
            "user.  Typical values used might be 'Contractor', 'Employee', 'Intern', 'Temp', "
            "'External', and 'Unknown', but any value may be used.",
        ),
        _attr(
            "preferredLanguage",
            description="Indicates the User's preferred written or spoken language.  Generally "
            "used for selecting a localized user interface; e.g., 'en_US' specifies the language "
            "English and country US.",
        ),
        _attr(
            "locale",
            description="Used to indicate the User's default location for purposes of "
            "localizing items such as currency, date time format, or numerical representations.",
        ),
        _attr(
            "timezone",
            description="The User's time zone in the 'Olson' time zone database format, e.g., "
            "'America/Los_Angeles'.",
        ),
        _attr(
            "active",
            "boolean",
            "A Boolean value indicating the User's administrative status.",
        ),
        _attr(
            "password",
            description="The User's cleartext password.  This attribute is intended to be used "
            "as a means to specify an initial password when creating a new User or to reset an "
            "existing User's password.",
            # server: accepted and dropped, never stored, never returned.
            mutability="writeOnly",
            returned="never",
        ),
        _multi(
            "emails",
            "Email addresses for the user.  The value SHOULD be canonicalized by the service "
            "provider, e.g., 'bjensen@example.com' instead of 'bjensen@EXAMPLE.COM'.  Canonical "
            "type values of 'work', 'home', and 'other'.",
            [
                _attr(
                    "value",
                    description="Email addresses for the user.  The value SHOULD be canonicalized "
                    "by the service provider, e.g., 'bjensen@example.com' instead of "
                    "'bjensen@EXAMPLE.COM'.  Canonical type values of 'work', 'home', and 'other'.",
                ),
                _display(),
                _type(
                    "A label indicating the attribute's function, e.g., 'work' or 'home'.",
                    ["work", "home", "other"],
                ),
                _primary(", e.g., the preferred mailing address or primary email address"),
            ],
        ),
        _multi(
            "phoneNumbers",
            "Phone numbers for the User.  The value SHOULD be canonicalized by the service "
            "provider according to the format specified in RFC 3966, e.g., "
            "'tel:+1-201-555-0123'.  Canonical type values of 'work', 'home', 'mobile', 'fax', "
            "'pager', and 'other'.",
            [
                _attr("value", description="Phone number of the User."),
                _display(),
                _type(
                    "A label indicating the attribute's function, e.g., 'work', 'home', 'mobile'.",
                    ["work", "home", "mobile", "fax", "pager", "other"],
                ),
                _primary(", e.g., the preferred phone number or primary phone number"),
            ],
        ),
        _multi(
            "ims",
            "Instant messaging addresses for the User.",
            [
                _attr("value", description="Instant messaging address for the User."),
                _display(),
                _type(
                    "A label indicating the attribute's function, e.g., 'aim', 'gtalk', 'xmpp'.",
                    ["aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"],
                ),
                _primary(", e.g., the preferred messenger or primary messenger"),
            ],
        ),
        _multi(
            "photos",
            "URLs of photos of the User.",
            [
                _attr(
                    "value",
                    "reference",
                    "URL of a photo of the User.",
                    referenceTypes=["external"],
                ),
                _display(),
                _type(
                    "A label indicating the attribute's function, i.e., 'photo' or 'thumbnail'.",
                    ["photo", "thumbnail"],
                ),
                _primary(", e.g., the preferred photo or thumbnail"),
            ],
        ),
        _multi(
            "addresses",
            "A physical mailing address for this User.  Canonical type values of 'work', "
            "'home', and 'other'.  This attribute is a complex type with the following "
            "sub-attributes.",
            [
                _attr(
                    "formatted",
                    description="The full mailing address, formatted for display or use with a "
                    "mailing label.  This attribute MAY contain newlines.",
                ),
                _attr(
                    "streetAddress",
                    description="The full street address component, which may include house "
                    "number, street name, P.O. box, and multi-line extended street address "
                    "information.  This attribute MAY contain newlines.",
                ),
                _attr("locality", description="The city or locality component."),
                _attr("region", description="The state or region component."),
                _attr("postalCode", description="The zip code or postal code component."),
                _attr("country", description="The country name component."),
                _type(
                    "A label indicating the attribute's function, e.g., 'work' or 'home'.",
                    ["work", "home", "other"],
                ),
                # server: §4.1.2 gives addresses a "primary" that §8.7.1 leaves out; IdPs send it
                # and this server stores and returns it.
                _primary(", e.g., the preferred mailing address"),
            ],
        ),
        # server: computed from group membership; PUT/POST values are ignored (RFC 7643 §4.1.2).
        _multi(
            "groups",
            "A list of groups to which the user belongs, either through direct membership, "
            "through nested groups, or dynamically calculated.",
            [
                _attr("value", description="The identifier of the User's group.", mutability=RO),
                _attr(
                    "$ref",
                    "reference",
                    "The URI of the corresponding 'Group' resource to which the user belongs.",
                    referenceTypes=["Group"],  # server: always a Group; §8.7.1 also has "User".
                    mutability=RO,
                ),
                _attr("display", description=_DISPLAY, mutability=RO),
                _type(
                    "A label indicating the attribute's function, e.g., 'direct' or 'indirect'.",
                    ["direct", "indirect"],
                    mutability=RO,
                ),
            ],
            mutability=RO,
        ),
        _multi(
            "entitlements",
            "A list of entitlements for the User that represent a thing the User has.",
            [
                _attr("value", description="The value of an entitlement."),
                _display(),
                _type("A label indicating the attribute's function."),
                _primary(),
            ],
        ),
        _multi(
            "roles",
            "A list of roles for the User that collectively represent who the User is, e.g., "
            "'Student', 'Faculty'.",
            [
                _attr("value", description="The value of a role."),
                _display(),
                _type("A label indicating the attribute's function."),
                _primary(),
            ],
        ),
        _multi(
            "x509Certificates",
            "A list of certificates issued to the User.",
            [
                _attr("value", "binary", "The value of an X.509 certificate."),
                _display(),
                _type("A label indicating the attribute's function."),
                _primary(),
            ],
        ),
    ]


# --- RFC 7643 §8.7.1 Group ------------------------------------------------------------------------


def _group_attributes() -> list[Attr]:
    """``urn:ietf:params:scim:schemas:core:2.0:Group`` (RFC 7643 §4.2, §8.7.1)."""
    return [
        _attr(
            "displayName",
            description="A human-readable name for the Group.  REQUIRED.",
            # server: refused when missing; unique case-insensitively.
            required=True,
            uniqueness="server",
        ),
        _multi(
            "members",
            "A list of members of the Group.",
            [
                _attr(
                    "value",
                    description="Identifier of the member of this Group.",
                    mutability="immutable",
                ),
                _attr(
                    "$ref",
                    "reference",
                    "The URI corresponding to a SCIM resource that is a member of this Group.",
                    # server: only Users can be members (§8.7.1 also allows "Group").
                    referenceTypes=["User"],
                    mutability="immutable",
                ),
                # server: not in §8.7.1; computed from the member's displayName or userName
                # and returned only when requested (attributes=members.display).
                _attr("display", description=_DISPLAY, mutability=RO, returned="request"),
                _type(
                    "A label indicating the type of resource, e.g., 'User' or 'Group'.",
                    ["User"],  # server: §8.7.1 lists "User" and "Group".
                    mutability="immutable",
                ),
            ],
        ),
    ]


# --- RFC 7643 §8.7.1 EnterpriseUser ---------------------------------------------------------------


def _enterprise_attributes() -> list[Attr]:
    """``urn:ietf:params:scim:schemas:extension:enterprise:2.0:User`` (RFC 7643 §4.3, §8.7.1)."""
    return [
        _attr(
            "employeeNumber",
            description="Numeric or alphanumeric identifier assigned to a person, typically "
            "based on order of hire or association with an organization.",
        ),
        _attr("costCenter", description="Identifies the name of a cost center."),
        _attr("organization", description="Identifies the name of an organization."),
        _attr("division", description="Identifies the name of a division."),
        _attr("department", description="Identifies the name of a department."),
        _complex(
            "manager",
            "The User's manager.  A complex type that optionally allows service providers to "
            "represent organizational hierarchy by referencing the 'id' attribute of another "
            "User.",
            [
                _attr(
                    "value",
                    description="The id of the SCIM resource representing the User's manager.  "
                    "REQUIRED.",
                ),
                _attr(
                    "$ref",
                    "reference",
                    "The URI of the SCIM resource representing the User's manager.  REQUIRED.",
                    referenceTypes=["User"],
                ),
                # server: §8.7.1 says READ-ONLY; seat-agent does not compute it, it keeps the
                # displayName an IdP sends (Okta maps its "manager" attribute here).
                _attr(
                    "displayName",
                    description="The displayName of the User's manager, as the client sent it.",
                ),
            ],
        ),
    ]


# --- seat-agent User extension --------------------------------------------------------------------


def _seat_attributes() -> list[Attr]:
    """``urn:ietf:params:scim:schemas:extension:seatagent:2.0:User``: seat state, read-only.

    Mirrors what ``agent.scim.render.render_user`` emits. A schema extension per RFC 7643 §3.3;
    every attribute is "readOnly" (§7), so values a client sends are ignored.
    """
    return [
        _attr(
            "licenseState",
            description="Where the User stands in the seat engine: 'licensed' (holds a seat), "
            "'queued' (waiting for one), 'free' (needs none, or was given the fallback role) or "
            "'inactive'.",
            canonicalValues=list(LICENSE_STATES),
            mutability=RO,
        ),
        _attr(
            "appStatus",
            description="The status pushed to the seat-licensed application, as named by the "
            "license policy (e.g., 'Active', 'Queued', 'Inactive').",
            mutability=RO,
        ),
        _attr(
            "queuePosition",
            "integer",
            "1-based position in the seat queue; present only while licenseState is 'queued'.",
            mutability=RO,
        ),
        _attr(
            "fallbackRole",
            description="The free role the User was given instead of a seat (license policy "
            "on_full = 'fallback'); present only while the User is on it.",
            mutability=RO,
        ),
    ]


_SCHEMAS: tuple[tuple[str, str, str, Callable[[], list[Attr]]], ...] = (
    (USER_SCHEMA, "User", "User Account", _user_attributes),
    (GROUP_SCHEMA, "Group", "Group", _group_attributes),
    (ENTERPRISE, "EnterpriseUser", "Enterprise User", _enterprise_attributes),
    (SEAT_EXT, "SeatAgentUser", "Seat state computed by seat-agent; read-only", _seat_attributes),
)


def attribute_definitions(schema_id: str) -> list[Attr]:
    """The attribute definitions of one schema (RFC 7643 §7 ``attributes``), exactly as
    ``/Schemas`` publishes them; agent.scim.names builds its name maps from them."""
    for sid, _name, _description, build in _SCHEMAS:
        if sid == schema_id:
            return build()
    raise KeyError(schema_id)


def _served(seat_extension: bool) -> tuple[tuple[str, str, str, Callable[[], list[Attr]]], ...]:
    return _SCHEMAS if seat_extension else tuple(s for s in _SCHEMAS if s[0] != SEAT_EXT)


def schemas(base_url: str, seat_extension: bool = False) -> list[dict]:
    """The ``/Schemas`` resources (RFC 7644 §4, RFC 7643 §7): User, Group, EnterpriseUser and,
    when ``[scim] seat_extension`` is on, the seat-agent extension.
    """
    return [
        _schema(base_url, sid, name, description, build())
        for sid, name, description, build in _served(seat_extension)
    ]


def schema_by_id(base_url: str, schema_id: str, seat_extension: bool = False) -> dict | None:
    """``/Schemas/<id>`` (RFC 7644 §4), ids compared case-insensitively; None if unknown."""
    for sid, name, description, build in _served(seat_extension):
        if sid.lower() == schema_id.lower():
            return _schema(base_url, sid, name, description, build())
    return None


# --- RFC 7643 §6 ResourceTypes --------------------------------------------------------------------


def _resource_type(
    base_url: str,
    name: str,
    endpoint: str,
    description: str,
    schema: str,
    extensions: list[tuple[str, bool]],
) -> dict:
    return {
        "schemas": [RESOURCE_TYPE_SCHEMA],
        "id": name,
        "name": name,
        "endpoint": endpoint,
        "description": description,
        "schema": schema,
        "schemaExtensions": [{"schema": s, "required": req} for s, req in extensions],
        "meta": {"resourceType": "ResourceType", "location": f"{base_url}/ResourceTypes/{name}"},
    }


def resource_types(base_url: str, seat_extension: bool = False) -> list[dict]:
    """The ``/ResourceTypes`` resources (RFC 7643 §6): User (with the enterprise extension and,
    when ``[scim] seat_extension`` is on, the seat-agent one; both optional) and Group.
    """
    user_extensions = [(ENTERPRISE, False)] + ([(SEAT_EXT, False)] if seat_extension else [])
    return [
        _resource_type(
            base_url,
            "User",
            "/Users",
            "User Account",
            USER_SCHEMA,
            user_extensions,
        ),
        _resource_type(base_url, "Group", "/Groups", "Group", GROUP_SCHEMA, []),
    ]


def resource_type_by_id(base_url: str, name: str, seat_extension: bool = False) -> dict | None:
    """``/ResourceTypes/<name>`` (RFC 7643 §6), matched case-insensitively. None if unknown."""
    for rt in resource_types(base_url, seat_extension):
        if rt["id"].lower() == name.lower():
            return rt
    return None


# --- RFC 7643 §5 ServiceProviderConfig ------------------------------------------------------------


def service_provider_config(
    base_url: str,
    max_results: int,
    max_payload: int,
    documentation_uri: str | None = None,
    *,
    default_page_size: int = 100,
    cursor_timeout: int = CURSOR_TIMEOUT_SECONDS,
) -> dict:
    """The ``/ServiceProviderConfig`` resource (RFC 7643 §5).

    PATCH (RFC 7644 §3.5.2), filtering (§3.4.2.2, at most ``max_results`` resources per
    response), sorting (§3.4.2.3) and ETags (§3.14) are supported; bulk (§3.7) and password
    change are not. ``max_payload`` is the request size limit in bytes.

    ``pagination`` (RFC 9865 §4): index (``startIndex``, RFC 7644 §3.4.2.4) and cursor paging
    are both supported; index stays the default, as RFC 9865 §2.4 advises a server that had
    only index paging before (Okta and Entra page by index). ``maxPageSize`` is
    ``max_results``; ``cursorTimeout`` the seconds a cursor stays valid (agent.scim.cursor).
    """
    doc: dict[str, Any] = {"schemas": [SPC_SCHEMA]}
    if documentation_uri:
        doc["documentationUri"] = documentation_uri
    doc.update(
        {
            "patch": {"supported": True},
            "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": max_payload},
            "filter": {"supported": True, "maxResults": max_results},
            "changePassword": {"supported": False},
            "sort": {"supported": True},
            "etag": {"supported": True},
            "pagination": {
                "cursor": True,
                "index": True,
                "defaultPaginationMethod": "index",
                "defaultPageSize": default_page_size,
                "maxPageSize": max_results,
                "cursorTimeout": cursor_timeout,
            },
            "authenticationSchemes": [
                {
                    "type": "oauthbearertoken",
                    "name": "OAuth Bearer Token",
                    "description": "Authentication with a bearer token in the Authorization header",
                    "primary": True,
                }
            ],
            "meta": {
                "resourceType": "ServiceProviderConfig",
                "location": f"{base_url}/ServiceProviderConfig",
            },
        }
    )
    return doc
