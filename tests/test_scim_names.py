"""Attribute names are case-insensitive at every depth (RFC 7643 §2.1), stored and returned in
the schema's spelling; collection and resource URLs answer with or without a trailing slash.
Bodies in the shapes of Microsoft's SCIM reference test collection (capitalised sub-attributes)."""

from __future__ import annotations

import pytest
from test_scim_protocol import (
    ENTERPRISE,
    GROUP,
    PATCH,
    USER,
    assert_scim_error,
    count_rows,
    create,
)

from agent.storage.tables import user_values, users


def _post(api, body: dict) -> dict:
    r = api.scim("POST", "/Users", body)
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def _stored(api, user_id: str) -> dict:
    with api.agent.store.read() as tx:
        record = tx.users.get(user_id)
    assert record is not None
    return record.resource


def _ids(api, path: str) -> list[str]:
    r = api.scim("GET", path)
    assert r.status_code == 200, r.get_json()
    return [u["id"] for u in r.get_json()["Resources"]]


def test_capitalised_sub_attributes_are_stored_in_the_schema_spelling_and_filterable(api):
    user = _post(
        api,
        {
            "schemas": [USER],
            "userName": "caps@example.com",
            "emails": [{"Value": "A@x.com", "Type": "work", "Primary": True}],
            "phoneNumbers": [{"VALUE": "+1 555", "type": "mobile", "PRIMARY": "True"}],
            "addresses": [{"StreetAddress": "1 Main St", "Country": "US", "Type": "work"}],
            "Name": {"GivenName": "Ada", "FAMILYNAME": "Lovelace"},
        },
    )
    assert user["emails"] == [{"value": "A@x.com", "type": "work", "primary": True}]
    assert user["phoneNumbers"] == [{"value": "+1 555", "type": "mobile", "primary": True}]
    assert user["addresses"] == [{"streetAddress": "1 Main St", "country": "US", "type": "work"}]
    assert user["name"] == {"givenName": "Ada", "familyName": "Lovelace"}
    assert _stored(api, user["id"])["emails"] == user["emails"]
    for text in (
        'emails.value eq "a@x.com"',
        'emails[type eq "work" and primary eq true]',
        'phoneNumbers[type eq "mobile" and primary eq true]',
        'name.givenName eq "ada"',
    ):
        assert _ids(api, f"/Users?filter={text}") == [user["id"]], text


def test_primary_in_any_case_is_a_boolean_not_a_string_error(api):
    user = _post(
        api,
        {
            "userName": "prim@example.com",
            "emails": [{"value": "a@x.com", "Primary": True}],
        },
    )
    assert user["emails"] == [{"value": "a@x.com", "primary": True}]
    body = assert_scim_error(
        api.scim(
            "POST",
            "/Users",
            {"userName": "bad@example.com", "emails": [{"value": "a@x.com", "Primary": "maybe"}]},
        ),
        400,
        "invalidValue",
    )
    assert "emails.primary" in body["detail"]


def test_enterprise_manager_in_any_case_is_kept(api):
    manager = create(api, "boss@example.com")
    user = _post(
        api,
        {
            "schemas": [USER, ENTERPRISE.lower()],
            "userName": "report@example.com",
            ENTERPRISE.upper().replace("URN:", "urn:"): {
                "Department": "R&D",
                "Manager": {"Value": manager["id"], "DisplayName": "Boss"},
            },
        },
    )
    ext = user[ENTERPRISE]
    assert ext["department"] == "R&D"
    assert ext["manager"]["value"] == manager["id"]
    assert ext["manager"]["displayName"] == "Boss"
    assert ENTERPRISE in user["schemas"]
    found = _ids(api, f'/Users?filter={ENTERPRISE}:manager.value eq "{manager["id"]}"')
    assert found == [user["id"]]


def test_schema_urns_are_case_insensitive_in_schemas(api):
    r = api.scim("POST", "/Users", {"schemas": [USER.lower()], "userName": "urn@example.com"})
    assert r.status_code == 201, r.get_json()
    g = api.scim("POST", "/Groups", {"schemas": [GROUP.upper()], "displayName": "Urn group"})
    assert g.status_code == 201, g.get_json()


def test_patch_add_with_capitalised_sub_attributes(api):
    user = create(api, "patch@example.com", phoneNumbers=[{"value": "1", "primary": True}])
    r = api.scim(
        "PATCH",
        f"/Users/{user['id']}",
        {
            "schemas": [PATCH],
            "Operations": [
                {
                    "op": "add",
                    "path": "phoneNumbers",
                    "value": [{"Value": "2", "Type": "work", "Primary": True}],
                }
            ],
        },
    )
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["phoneNumbers"] == [
        {"value": "1", "primary": False},
        {"value": "2", "type": "work", "primary": True},
    ]
    assert _ids(api, '/Users?filter=phoneNumbers[value eq "2" and primary eq true]') == [user["id"]]


def test_patch_value_filter_add_merges_a_capitalised_value_into_the_existing_element(api):
    user = create(api, "merge@example.com", emails=[{"value": "old@x.com", "type": "work"}])
    r = api.scim(
        "PATCH",
        f"/Users/{user['id']}",
        {
            "schemas": [PATCH],
            "Operations": [
                {"op": "add", "path": 'EMAILS[TYPE eq "work"]', "value": {"Value": "new@x.com"}},
                {"op": "Replace", "path": "Name", "value": {"GivenName": "N", "givenname": "M"}},
            ],
        },
    )
    # Two spellings of one sub-attribute in one object are ambiguous: refused, nothing changed.
    body = assert_scim_error(r, 400, "invalidSyntax")
    assert "name.givenName" in body["detail"] or "givenName" in body["detail"]
    assert _stored(api, user["id"])["emails"] == [{"value": "old@x.com", "type": "work"}]
    r = api.scim(
        "PATCH",
        f"/Users/{user['id']}",
        {
            "schemas": [PATCH],
            "Operations": [
                {"op": "add", "path": 'EMAILS[TYPE eq "work"]', "value": {"Value": "new@x.com"}}
            ],
        },
    )
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["emails"] == [{"value": "new@x.com", "type": "work"}]


def test_a_name_given_twice_in_different_case_is_400_and_creates_nothing(api):
    for body in (
        {"userName": "a@example.com", "USERNAME": "b@example.com"},
        {"userName": "a@example.com", "emails": [{"value": "a@x.com", "Value": "b@x.com"}]},
        {"userName": "a@example.com", ENTERPRISE: {"department": "a", "Department": "b"}},
    ):
        assert_scim_error(api.scim("POST", "/Users", body), 400, "invalidSyntax")
    assert count_rows(api, users) == 0
    assert count_rows(api, user_values) == 0


def test_group_members_value_in_any_case(api):
    user = create(api, "member@example.com")
    g = api.scim(
        "POST",
        "/Groups",
        {"schemas": [GROUP], "DisplayName": "Caps", "Members": [{"Value": user["id"]}]},
    )
    assert g.status_code == 201, g.get_json()
    assert [m["value"] for m in g.get_json()["members"]] == [user["id"]]


def test_attributes_excluded_attributes_and_sort_by_in_any_case(api):
    a = create(api, "b@example.com", emails=[{"Value": "z@x.com", "Type": "work"}], title="T")
    b = create(api, "a@example.com", emails=[{"VALUE": "y@x.com"}])
    r = api.scim("GET", "/Users?attributes=EMAILS.VALUE,USERNAME&sortBy=USERNAME")
    assert r.status_code == 200, r.get_json()
    resources = r.get_json()["Resources"]
    assert [u["id"] for u in resources] == [b["id"], a["id"]]
    assert resources[1]["emails"] == [{"value": "z@x.com"}]
    assert "title" not in resources[1]
    r = api.scim("GET", f"/Users/{a['id']}?excludedAttributes=Emails.Type,TITLE")
    assert r.get_json()["emails"] == [{"value": "z@x.com"}]
    assert "title" not in r.get_json()


@pytest.mark.parametrize(
    "path",
    [
        "/Users/",
        '/Users/?filter=userName eq "slash@example.com"',
        "/Groups/",
        "/Schemas/",
        "/ResourceTypes/",
        "/ServiceProviderConfig/",
    ],
)
def test_collection_urls_answer_with_a_trailing_slash(api, path):
    create(api, "slash@example.com")
    r = api.scim("GET", path)
    assert r.status_code == 200, r.get_data(as_text=True)
    if path.startswith("/Users"):
        assert r.get_json()["totalResults"] == 1


def test_resource_urls_answer_with_a_trailing_slash(api):
    user = create(api, "res@example.com")
    assert api.scim("GET", f"/Users/{user['id']}/").get_json()["id"] == user["id"]
    r = api.scim(
        "PATCH",
        f"/Users/{user['id']}/",
        {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "title", "value": "X"}]},
    )
    assert r.get_json()["title"] == "X"
    r = api.scim("POST", "/Users/", {"schemas": [USER], "userName": "post@example.com"})
    assert r.status_code == 201
    assert api.scim("DELETE", f"/Users/{user['id']}/").status_code == 204
    assert_scim_error(api.scim("GET", f"/Users/{user['id']}/"), 404)


def test_the_name_maps_come_from_the_published_schemas():
    """One resolver: every attribute and sub-attribute /Schemas publishes is found by any
    spelling, and nothing else is."""
    from agent.scim import discovery, names

    for urn, resource in ((USER, names.USER), (GROUP, names.GROUP), (ENTERPRISE, names.USER)):
        schema = resource.schema(urn.upper())
        assert schema is not None and schema.urn == urn
        for definition in discovery.attribute_definitions(urn):
            attribute = schema.attribute(definition["name"].swapcase())
            assert attribute is not None and attribute.name == definition["name"]
            for sub in definition.get("subAttributes", []):
                assert attribute.sub(sub["name"].upper()) == sub["name"]
            assert attribute.sub("noSuchSub") is None
    assert names.USER.core.attribute("noSuchAttribute") is None


def test_the_filter_catalogue_spells_every_attribute_as_the_schemas_do():
    """The filterable attributes (agent.scim.filter) name the attributes of the published
    schemas, in their spelling, so a filter, a sortBy and a stored body agree. One deliberate
    extra: ``addresses.value`` filters on an address's ``formatted`` (the schema gives
    addresses no ``value``; agent.storage.rows.user_value_rows)."""
    from agent.scim import filter as scim_filter
    from agent.scim import names

    for resource_type in ("User", "Group"):
        resource = names.for_resource(resource_type)
        for attr in scim_filter.attrs_for(resource_type).values():
            if attr.path == "addresses.value":
                continue
            urn, _, path = attr.path.rpartition(":")
            schema = resource.schema(urn or None)
            assert schema is not None, attr.path
            top, _, sub = path.partition(".")
            attribute = schema.attribute(top)
            assert attribute is not None and attribute.name == top, attr.path
            if sub:
                assert attribute.sub(sub) == sub, attr.path


def test_schema_urns_in_any_case_in_filters_patch_paths_and_attribute_lists(api):
    shouting = ENTERPRISE.upper()
    user = create(api, "urns@example.com", **{ENTERPRISE: {"department": "Ops"}})
    assert _ids(api, f'/Users?filter={shouting}:DEPARTMENT eq "ops"') == [user["id"]]
    r = api.scim(
        "PATCH",
        f"/Users/{user['id']}",
        {
            "schemas": [PATCH.upper()],
            "Operations": [{"op": "replace", "path": f"{shouting}:Department", "value": "R&D"}],
        },
    )
    assert r.status_code == 200, r.get_json()
    assert r.get_json()[ENTERPRISE] == {"department": "R&D"}
    r = api.scim("GET", f"/Users/{user['id']}?attributes={shouting}:DEPARTMENT")
    assert r.get_json()[ENTERPRISE] == {"department": "R&D"}
    assert "userName" not in r.get_json()
    r = api.scim("GET", f"/Users?sortBy={shouting}:department&filter=userName pr")
    assert r.status_code == 200, r.get_json()
