"""SCIM discovery documents (RFC 7643 §5, §6, §7, §8.7.1) for agent.scim.discovery."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from scim2_models import (
    Context,
    ResourceType,
    Schema,
    ScimProvider,
    ServiceProviderConfig,
)

from agent.scim import discovery as d
from agent.scim.render import render_group, render_user
from agent.storage.records import GroupRecord, SeatState, UserRecord

BASE = "http://host/scim/v2"
RESPONSE = Context.RESOURCE_QUERY_RESPONSE

# RFC 7643 §7: characteristics every attribute definition carries here (the §2.2 defaults are
# spelled out), plus the ones that only apply to some types.
COMMON_KEYS = {
    "name",
    "type",
    "multiValued",
    "description",
    "required",
    "caseExact",
    "mutability",
    "returned",
    "uniqueness",
}
OPTIONAL_KEYS = {"canonicalValues"}
TYPES = {"string", "boolean", "decimal", "integer", "dateTime", "binary", "reference", "complex"}
MUTABILITY = {"readOnly", "readWrite", "immutable", "writeOnly"}
RETURNED = {"always", "never", "default", "request"}
UNIQUENESS = {"none", "server", "global"}


def _walk(attrs: list[dict], prefix: str = "") -> Iterator[tuple[str, dict]]:
    for attr in attrs:
        path = f"{prefix}{attr['name']}"
        yield path, attr
        yield from _walk(attr.get("subAttributes", []), path + ".")


def _attribute(schema_id: str, path: str) -> dict:
    schema = d.schema_by_id(BASE, schema_id, seat_extension=True)
    assert schema is not None
    found = dict(_walk(schema["attributes"]))
    return found[path]


def _all_attributes() -> list[tuple[str, str, dict]]:
    return [
        (schema["id"], path, attr)
        for schema in d.schemas(BASE, seat_extension=True)
        for path, attr in _walk(schema["attributes"])
    ]


@pytest.mark.parametrize(
    ("schema_id", "path", "attr"),
    _all_attributes(),
    ids=[f"{s.rsplit(':', 2)[-2]}:{p}" for s, p, _ in _all_attributes()],
)
def test_every_attribute_has_rfc7643_s7_characteristics(schema_id: str, path: str, attr: dict):
    expected = set(COMMON_KEYS)
    if attr["type"] == "complex":
        expected.add("subAttributes")
        assert attr["subAttributes"], f"{path}: complex without sub-attributes"
    if attr["type"] == "reference":
        expected.add("referenceTypes")
        assert attr["referenceTypes"]
    assert expected <= set(attr) <= expected | OPTIONAL_KEYS, path
    assert attr["type"] in TYPES
    assert isinstance(attr["multiValued"], bool)
    assert isinstance(attr["required"], bool)
    assert isinstance(attr["caseExact"], bool)
    assert attr["mutability"] in MUTABILITY
    assert attr["returned"] in RETURNED
    assert attr["uniqueness"] in UNIQUENESS
    assert attr["description"].strip()
    # RFC 7643 §2.3.8: no complex sub-attribute inside a complex attribute.
    if "." in path:
        assert attr["type"] != "complex"


def test_schemas_list_and_meta():
    docs = d.schemas(BASE, seat_extension=True)
    assert [s["id"] for s in docs] == [d.USER_SCHEMA, d.GROUP_SCHEMA, d.ENTERPRISE, d.SEAT_EXT]
    for doc in docs:
        assert doc["schemas"] == ["urn:ietf:params:scim:schemas:core:2.0:Schema"]
        assert doc["meta"] == {"resourceType": "Schema", "location": f"{BASE}/Schemas/{doc['id']}"}
        names = [a["name"].lower() for a in doc["attributes"]]
        assert len(names) == len(set(names)), doc["id"]
        # RFC 7643 §3.1 common attributes are not part of the §8.7.1 schema definitions.
        assert not {"id", "externalid", "meta", "schemas"} & set(names)
    seat = d.schema_by_id(BASE, d.SEAT_EXT, seat_extension=True)
    assert seat is not None
    assert seat["name"] == "SeatAgentUser"
    assert seat["description"] == "Seat state computed by seat-agent; read-only"


def test_schema_by_id():
    assert (
        d.schema_by_id(BASE, d.GROUP_SCHEMA, seat_extension=True)
        == d.schemas(BASE, seat_extension=True)[1]
    )
    assert d.schema_by_id(BASE, d.ENTERPRISE.upper(), seat_extension=True) is not None
    assert d.schema_by_id(BASE, "urn:example:unknown", seat_extension=True) is None
    assert d.schema_by_id(BASE, "", seat_extension=True) is None


def test_documents_are_fresh_copies():
    first = d.schemas(BASE, seat_extension=True)
    first[0]["attributes"][0]["required"] = False
    assert _attribute(d.USER_SCHEMA, "userName")["required"] is True


def test_user_name_required_and_unique():
    attr = _attribute(d.USER_SCHEMA, "userName")
    assert attr["required"] is True
    assert attr["caseExact"] is False
    assert attr["uniqueness"] == "server"


def test_password_write_only_never_returned():
    attr = _attribute(d.USER_SCHEMA, "password")
    assert (attr["mutability"], attr["returned"]) == ("writeOnly", "never")


def test_user_groups_read_only():
    groups = _attribute(d.USER_SCHEMA, "groups")
    assert groups["multiValued"] is True
    assert groups["mutability"] == "readOnly"
    assert [s["name"] for s in groups["subAttributes"]] == ["value", "$ref", "display", "type"]
    assert all(s["mutability"] == "readOnly" for s in groups["subAttributes"])


def test_rfc_8_7_1_user_attributes_present():
    user = d.schema_by_id(BASE, d.USER_SCHEMA, seat_extension=True)
    assert user is not None
    assert [a["name"] for a in user["attributes"]] == [
        "userName",
        "name",
        "displayName",
        "nickName",
        "profileUrl",
        "title",
        "userType",
        "preferredLanguage",
        "locale",
        "timezone",
        "active",
        "password",
        "emails",
        "phoneNumbers",
        "ims",
        "photos",
        "addresses",
        "groups",
        "entitlements",
        "roles",
        "x509Certificates",
    ]
    assert _attribute(d.USER_SCHEMA, "emails.type")["canonicalValues"] == ["work", "home", "other"]
    assert _attribute(d.USER_SCHEMA, "x509Certificates.value")["type"] == "binary"
    assert _attribute(d.USER_SCHEMA, "profileUrl")["referenceTypes"] == ["external"]


def test_group_schema():
    display = _attribute(d.GROUP_SCHEMA, "displayName")
    assert (display["required"], display["uniqueness"]) == (True, "server")
    members = _attribute(d.GROUP_SCHEMA, "members")
    assert members["multiValued"] is True
    assert [s["name"] for s in members["subAttributes"]] == ["value", "$ref", "display", "type"]
    assert _attribute(d.GROUP_SCHEMA, "members.value")["mutability"] == "immutable"
    member_display = _attribute(d.GROUP_SCHEMA, "members.display")
    assert (member_display["mutability"], member_display["returned"]) == ("readOnly", "request")
    assert _attribute(d.GROUP_SCHEMA, "members.type")["canonicalValues"] == ["User"]
    assert _attribute(d.GROUP_SCHEMA, "members.$ref")["referenceTypes"] == ["User"]


def test_enterprise_manager():
    manager = _attribute(d.ENTERPRISE, "manager")
    assert manager["type"] == "complex"
    assert manager["multiValued"] is False
    assert [s["name"] for s in manager["subAttributes"]] == ["value", "$ref", "displayName"]
    assert _attribute(d.ENTERPRISE, "manager.value")["type"] == "string"
    # Stored as the IdP sends it (POST, PUT and PATCH alike), so not readOnly.
    assert _attribute(d.ENTERPRISE, "manager.displayName")["mutability"] == "readWrite"


def test_seat_extension_read_only():
    seat = d.schema_by_id(BASE, d.SEAT_EXT, seat_extension=True)
    assert seat is not None
    types = {a["name"]: a["type"] for a in seat["attributes"]}
    assert types == {
        "licenseState": "string",
        "appStatus": "string",
        "queuePosition": "integer",
        "fallbackRole": "string",
    }
    for attr in seat["attributes"]:
        assert (attr["mutability"], attr["required"]) == ("readOnly", False)
        assert attr["returned"] == "default"
    state = _attribute(d.SEAT_EXT, "licenseState")
    assert state["canonicalValues"] == ["licensed", "queued", "free", "inactive"]


def test_resource_types_reference_published_schemas():
    published = {s["id"] for s in d.schemas(BASE, seat_extension=True)}
    rts = d.resource_types(BASE, seat_extension=True)
    assert [(rt["name"], rt["endpoint"], rt["schema"]) for rt in rts] == [
        ("User", "/Users", d.USER_SCHEMA),
        ("Group", "/Groups", d.GROUP_SCHEMA),
    ]
    assert rts[0]["schemaExtensions"] == [
        {"schema": d.ENTERPRISE, "required": False},
        {"schema": d.SEAT_EXT, "required": False},
    ]
    assert rts[1]["schemaExtensions"] == []
    for rt in rts:
        assert rt["schemas"] == ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"]
        assert rt["meta"] == {
            "resourceType": "ResourceType",
            "location": f"{BASE}/ResourceTypes/{rt['id']}",
        }
        assert rt["schema"] in published
        assert {ext["schema"] for ext in rt["schemaExtensions"]} <= published


def test_resource_type_by_id():
    assert (
        d.resource_type_by_id(BASE, "User", seat_extension=True)
        == d.resource_types(BASE, seat_extension=True)[0]
    )
    assert (
        d.resource_type_by_id(BASE, "group", seat_extension=True)
        == d.resource_types(BASE, seat_extension=True)[1]
    )
    assert d.resource_type_by_id(BASE, "Device", seat_extension=True) is None


def test_service_provider_config_flags():
    spc = d.service_provider_config(BASE, max_results=200, max_payload=1_048_576)
    assert spc["schemas"] == ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"]
    assert spc["patch"] == {"supported": True}
    assert spc["bulk"] == {"supported": False, "maxOperations": 0, "maxPayloadSize": 1_048_576}
    assert spc["filter"] == {"supported": True, "maxResults": 200}
    assert spc["changePassword"] == {"supported": False}
    assert spc["sort"] == {"supported": True}
    assert spc["etag"] == {"supported": True}
    assert spc["authenticationSchemes"] == [
        {
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "Authentication with a bearer token in the Authorization header",
            "primary": True,
        }
    ]
    assert spc["meta"] == {
        "resourceType": "ServiceProviderConfig",
        "location": f"{BASE}/ServiceProviderConfig",
    }
    assert "documentationUri" not in spc
    with_doc = d.service_provider_config(BASE, 1, 2, documentation_uri="https://example.com/doc")
    assert with_doc["documentationUri"] == "https://example.com/doc"


# --- scim2-models, as used by the scim2-tester conformance tool --------------------------------


@pytest.mark.parametrize("doc", d.schemas(BASE, seat_extension=True), ids=lambda doc: doc["name"])
def test_schemas_validate_with_scim2_models(doc: dict):
    schema = Schema.model_validate(doc, scim_ctx=RESPONSE)
    assert schema.id == doc["id"]
    assert len(schema.attributes or []) == len(doc["attributes"])
    # Nothing we publish is dropped or altered by the parser.
    assert schema.model_dump(scim_ctx=RESPONSE) == doc


@pytest.mark.parametrize(
    "doc", d.resource_types(BASE, seat_extension=True), ids=lambda doc: doc["name"]
)
def test_resource_types_validate_with_scim2_models(doc: dict):
    rt = ResourceType.model_validate(doc, scim_ctx=RESPONSE)
    assert rt.endpoint == doc["endpoint"]
    assert rt.schema_ == doc["schema"]


def test_service_provider_config_validates_with_scim2_models():
    doc = d.service_provider_config(BASE, 100, 1000, documentation_uri="https://example.com")
    spc = ServiceProviderConfig.model_validate(doc, scim_ctx=RESPONSE)
    assert spc.patch is not None and spc.patch.supported is True
    assert spc.bulk is not None and spc.bulk.supported is False
    assert spc.filter is not None and spc.filter.max_results == 100
    ServiceProviderConfig.model_validate(
        d.service_provider_config(BASE, 100, 1000), scim_ctx=RESPONSE
    )


def _provider() -> ScimProvider:
    """What scim2-tester composes from the three discovery endpoints (check_server)."""
    return ScimProvider.from_discovery(
        [Schema.model_validate(s, scim_ctx=RESPONSE) for s in d.schemas(BASE, seat_extension=True)],
        [
            ResourceType.model_validate(r, scim_ctx=RESPONSE)
            for r in d.resource_types(BASE, seat_extension=True)
        ],
        ServiceProviderConfig.model_validate(
            d.service_provider_config(BASE, 100, 1000), scim_ctx=RESPONSE
        ),
    )


def _now() -> datetime:
    return datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "seat",
    [
        SeatState(app_status="Active", license_state="licensed", holds_seat=True),
        SeatState(app_status="Queued", license_state="queued"),
        SeatState(app_status="Active", license_state="free", on_fallback=True),
    ],
    ids=["licensed", "queued", "fallback"],
)
def test_rendered_user_matches_published_schemas(seat: SeatState):
    resource: dict[str, Any] = {
        "userName": "bjensen@example.com",
        "name": {"givenName": "Barbara", "familyName": "Jensen"},
        "displayName": "Barbara Jensen",
        "active": True,
        "externalId": "00u1",
        "emails": [{"value": "bjensen@example.com", "type": "work", "primary": True}],
        "phoneNumbers": [{"value": "tel:+33-1-23-45-67-89", "type": "mobile"}],
        "addresses": [{"locality": "Paris", "type": "work", "primary": True}],
        "roles": [{"value": "Assistant", "primary": True}],
        d.ENTERPRISE: {"department": "R&D", "manager": {"value": "u-2", "displayName": "Boss"}},
    }
    record = UserRecord(
        id="u-1",
        resource=resource,
        created=_now(),
        last_modified=_now(),
        version=3,
        seat=seat,
        groups=[("g-1", "Engineering")],
        queue_position=4 if seat.license_state == "queued" else None,
    )
    payload = render_user(record, BASE, "Assistant", seat_extension=True)
    model = _provider().model_for("User")
    assert model is not None
    user = model.model_validate(payload, scim_ctx=RESPONSE)
    # Every attribute the server renders is declared, with the type it is rendered with.
    assert user.model_dump(scim_ctx=RESPONSE) == payload
    if seat.on_fallback:
        assert payload[d.SEAT_EXT]["fallbackRole"] == "Assistant"


def test_rendered_group_matches_published_schema():
    record = GroupRecord(
        id="g-1",
        resource={"displayName": "Engineering", "externalId": "grp-1"},
        created=_now(),
        last_modified=_now(),
        version=1,
        members=[("u-1", "Barbara Jensen")],
    )
    payload = render_group(record, BASE)
    assert "display" not in payload["members"][0]
    model = _provider().model_for("Group")
    assert model is not None
    group = model.model_validate(payload, scim_ctx=RESPONSE)
    assert group.model_dump(scim_ctx=RESPONSE) == payload
