"""SCIM PATCH (RFC 7644 §3.5.2) over plain dicts, with the bodies Okta and Entra ID send.

Request bodies marked Okta come from Okta's "SCIM 2.0 protocol reference"; those marked Entra
from Microsoft's "Tutorial: Develop and plan provisioning for a SCIM endpoint" and "Known
issues and resolutions with SCIM 2.0 protocol compliance".
"""

from __future__ import annotations

import copy

import pytest

from agent.scim.errors import ScimError
from agent.scim.patch import (
    ENTERPRISE,
    PATCH_OP,
    MemberDelta,
    apply_group_patch,
    apply_user_patch,
    parse_patch_request,
)

MANAGER_ID = "26118915-6090-4610-87e4-49d8ca9f808d"
CORE_USER_URN = "urn:ietf:params:scim:schemas:core:2.0:User"


def body(*operations: dict) -> dict:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


def patch_user(resource: dict, *operations: dict) -> dict:
    return apply_user_patch(resource, parse_patch_request(body(*operations)))


def patch_group(resource: dict, *operations: dict) -> tuple[dict, MemberDelta]:
    return apply_group_patch(resource, parse_patch_request(body(*operations)))


def scim_error(scim_type: str):
    """Assert a ScimError 400 with the given scimType (RFC 7644 §3.12, Table 9)."""

    class _Check:
        def __enter__(self):
            self._raises = pytest.raises(ScimError)
            self.info = self._raises.__enter__()
            return self.info

        def __exit__(self, *exc):
            suppressed = self._raises.__exit__(*exc)
            assert self.info.value.status == 400
            assert self.info.value.scim_type == scim_type, self.info.value.detail
            return suppressed

    return _Check()


@pytest.fixture
def user() -> dict:
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
        "id": "u-1",
        "userName": "babs@example.com",
        "displayName": "Babs Jensen",
        "name": {"givenName": "Barbara", "familyName": "Jensen"},
        "active": True,
        "emails": [
            {"value": "babs@example.com", "type": "work", "primary": True},
            {"value": "babs@home.example", "type": "home"},
        ],
        "phoneNumbers": [{"value": "555-0100", "type": "work"}],
        "addresses": [{"type": "work", "streetAddress": "1 Main St", "locality": "Springfield"}],
        "roles": [{"value": "admin"}, {"value": "reader"}],
        ENTERPRISE: {"department": "Sales", "employeeNumber": "42"},
        "meta": {"resourceType": "User"},
    }


@pytest.fixture
def group() -> dict:
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "id": "g-1",
        "displayName": "Engineering",
        "externalId": "ext-g-1",
    }


# --- envelope ------------------------------------------------------------------------------


def test_parse_normalises_op_case_and_fills_path_and_value():
    ops = parse_patch_request(
        body(
            {"op": "Replace", "path": "displayName", "value": "x"},
            {"op": "ADD", "value": {"nickName": "Babs"}},
            {"op": "Remove", "path": "title"},
        )
    )
    assert ops == [
        {"op": "replace", "path": "displayName", "value": "x"},
        {"op": "add", "path": None, "value": {"nickName": "Babs"}},
        {"op": "remove", "path": "title", "value": None},
    ]


@pytest.mark.parametrize(
    "request_body",
    [
        None,
        [],
        {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "Operations": []},
        {"schemas": [], "Operations": [{"op": "add", "path": "title", "value": "x"}]},
        {"schemas": PATCH_OP, "Operations": [{"op": "add", "path": "title", "value": "x"}]},
        {"schemas": [PATCH_OP], "Operations": {"op": "add"}},
        {"schemas": [PATCH_OP], "Operations": []},
        {"schemas": [PATCH_OP]},
        body({"op": "move", "path": "title", "value": "x"}),
        body({"path": "title", "value": "x"}),
        body("not an object"),
        body({"op": "add", "path": "title"}),
        body({"op": "replace", "path": "title"}),
        body({"op": "replace", "path": 7, "value": "x"}),
    ],
)
def test_parse_rejects_malformed_envelopes(request_body):
    with scim_error("invalidSyntax"):
        parse_patch_request(request_body)


def test_parse_takes_a_body_without_schemas_as_a_patch_op():
    """authentik's group rename omits ``schemas`` (tests/test_idp_authentik.py)."""
    ops = parse_patch_request({"Operations": [{"op": "add", "path": "title", "value": "x"}]})
    assert [(op["op"], op["path"], op["value"]) for op in ops] == [("add", "title", "x")]


def test_parse_remove_without_path_is_no_target():
    with scim_error("noTarget"):
        parse_patch_request(body({"op": "remove"}))


def test_parse_accepts_explicit_null_value():
    assert parse_patch_request(body({"op": "replace", "path": "title", "value": None})) == [
        {"op": "replace", "path": "title", "value": None}
    ]


# --- RFC path forms ------------------------------------------------------------------------


def test_input_resource_is_not_modified(user):
    before = copy.deepcopy(user)
    patch_user(user, {"op": "replace", "path": 'emails[type eq "work"].value', "value": "n@x"})
    assert user == before


@pytest.mark.parametrize("op", ["add", "replace"])
def test_simple_attribute_path(user, op):
    assert patch_user(user, {"op": op, "path": "displayName", "value": "B. J."})["displayName"] == (
        "B. J."
    )


def test_remove_simple_attribute(user):
    assert "displayName" not in patch_user(user, {"op": "remove", "path": "displayName"})


def test_remove_absent_attribute_is_a_no_op(user):
    assert patch_user(user, {"op": "remove", "path": "title"}) == user
    assert patch_user(user, {"op": "remove", "path": "name.middleName"}) == user
    assert patch_user(user, {"op": "remove", "path": 'emails[type eq "other"]'}) == user


def test_sub_attribute_path(user):
    patched = patch_user(user, {"op": "replace", "path": "name.givenName", "value": "Babs"})
    assert patched["name"] == {"givenName": "Babs", "familyName": "Jensen"}


def test_add_sub_attribute_creates_parent():
    patched = patch_user({"userName": "x"}, {"op": "add", "path": "name.familyName", "value": "J"})
    assert patched == {"userName": "x", "name": {"familyName": "J"}}


def test_remove_sub_attribute_and_drop_empty_parent(user):
    patched = patch_user(user, {"op": "remove", "path": "name.givenName"})
    assert patched["name"] == {"familyName": "Jensen"}
    patched = patch_user(patched, {"op": "remove", "path": "name.familyName"})
    assert "name" not in patched


def test_full_urn_path_to_enterprise_attribute(user):
    patched = patch_user(
        user,
        {
            "op": "replace",
            "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
            "value": "Engineering",
        },
    )
    assert patched[ENTERPRISE] == {"department": "Engineering", "employeeNumber": "42"}


def test_full_urn_path_creates_extension_and_declares_schema():
    resource = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "x"}
    patched = patch_user(
        resource, {"op": "add", "path": f"{ENTERPRISE}:costCenter", "value": "CC-1"}
    )
    assert patched[ENTERPRISE] == {"costCenter": "CC-1"}
    assert patched["schemas"] == ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE]


def test_removing_last_enterprise_attribute_drops_extension(user):
    patched = patch_user(
        user,
        {"op": "remove", "path": f"{ENTERPRISE}:department"},
        {"op": "remove", "path": f"{ENTERPRISE}:employeeNumber"},
    )
    assert ENTERPRISE not in patched
    assert patched["schemas"] == ["urn:ietf:params:scim:schemas:core:2.0:User"]


def test_core_urn_prefix_is_top_level(user):
    patched = patch_user(
        user,
        {"op": "replace", "path": "urn:ietf:params:scim:schemas:core:2.0:User:title", "value": "T"},
    )
    assert patched["title"] == "T"


def test_value_filter_sub_attribute_replace_entra(user):
    # Entra tutorial, "Update User [Multi-valued properties]".
    patched = patch_user(
        user,
        {
            "op": "Replace",
            "path": 'emails[type eq "work"].value',
            "value": "updatedEmail@microsoft.com",
        },
        {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"},
    )
    assert patched["emails"] == [
        {"value": "updatedEmail@microsoft.com", "type": "work", "primary": True},
        {"value": "babs@home.example", "type": "home"},
    ]
    assert patched["name"]["familyName"] == "updatedFamilyName"


@pytest.mark.parametrize("op", ["add", "replace"])
def test_value_filter_without_match_creates_element(op):
    patched = patch_user(
        {"userName": "x"}, {"op": op, "path": 'emails[type eq "work"].value', "value": "w@x"}
    )
    assert patched["emails"] == [{"type": "work", "value": "w@x"}]


def test_value_filter_phone_and_address(user):
    patched = patch_user(
        user,
        {"op": "replace", "path": 'phoneNumbers[type eq "mobile"].value', "value": "555-0199"},
        {"op": "replace", "path": 'addresses[type eq "work"].streetAddress', "value": "2 Elm"},
    )
    assert patched["phoneNumbers"] == [
        {"value": "555-0100", "type": "work"},
        {"type": "mobile", "value": "555-0199"},
    ]
    assert patched["addresses"] == [
        {"type": "work", "streetAddress": "2 Elm", "locality": "Springfield"}
    ]


def test_value_filter_remove_elements(user):
    patched = patch_user(user, {"op": "remove", "path": 'emails[type eq "work"]'})
    assert patched["emails"] == [{"value": "babs@home.example", "type": "home"}]


def test_value_filter_remove_role(user):
    patched = patch_user(user, {"op": "remove", "path": 'roles[value eq "admin"]'})
    assert patched["roles"] == [{"value": "reader"}]


def test_removing_every_element_drops_the_attribute(user):
    patched = patch_user(user, {"op": "remove", "path": 'phoneNumbers[type eq "work"]'})
    assert "phoneNumbers" not in patched


def test_value_filter_remove_sub_attribute(user):
    patched = patch_user(user, {"op": "remove", "path": 'addresses[type eq "work"].locality'})
    assert patched["addresses"] == [{"type": "work", "streetAddress": "1 Main St"}]


def test_value_filter_replace_element_with_object(user):
    # RFC 7644 §3.5.2.3 example: replace all of a work address.
    patched = patch_user(
        user,
        {
            "op": "replace",
            "path": 'addresses[type eq "work"]',
            "value": {
                "type": "work",
                "streetAddress": "911 Universal City Plaza",
                "locality": "Hollywood",
                "region": "CA",
                "postalCode": "91608",
                "country": "US",
                "formatted": "911 Universal City Plaza\nHollywood, CA 91608 US",
                "primary": True,
            },
        },
    )
    assert patched["addresses"] == [
        {
            "type": "work",
            "streetAddress": "911 Universal City Plaza",
            "locality": "Hollywood",
            "region": "CA",
            "postalCode": "91608",
            "country": "US",
            "formatted": "911 Universal City Plaza\nHollywood, CA 91608 US",
            "primary": True,
        }
    ]


def test_value_filter_replace_keeps_filter_terms(user):
    patched = patch_user(
        user, {"op": "replace", "path": 'emails[type eq "home"]', "value": {"value": "h@x"}}
    )
    assert patched["emails"][1] == {"type": "home", "value": "h@x"}


def test_value_filter_add_merges_into_match(user):
    patched = patch_user(
        user, {"op": "add", "path": 'emails[type eq "home"]', "value": {"display": "Home"}}
    )
    assert patched["emails"][1] == {"value": "babs@home.example", "type": "home", "display": "Home"}


@pytest.mark.parametrize(
    "path",
    [
        'emails[type eq "work" and primary eq true].value',
        'emails[primary eq true or type eq "nope"].value',
        'emails[type ne "home"].value',
        'emails[not (type eq "home")].value',
        'emails[(type eq "WORK")].value',
        'emails[value sw "babs@e" and value co "example"].value',
        "emails[primary pr].value",
        "emails[type eq 'work'].value".replace("'", '"'),
    ],
)
def test_filter_operators(user, path):
    patched = patch_user(user, {"op": "replace", "path": path, "value": "new@x"})
    assert [e["value"] for e in patched["emails"]] == ["new@x", "babs@home.example"]


def test_filter_boolean_matches_entra_string_booleans():
    resource = {"emails": [{"value": "a@x", "primary": "True"}, {"value": "b@x"}]}
    patched = patch_user(
        resource, {"op": "replace", "path": "emails[primary eq true].value", "value": "c@x"}
    )
    assert patched["emails"][0]["value"] == "c@x"


def test_filter_without_eq_terms_and_no_match_is_no_target(user):
    with scim_error("noTarget"):
        patch_user(
            user,
            {
                "op": "replace",
                "path": 'emails[type ne "work" and type ne "home"]',
                "value": {"value": "x@y"},
            },
        )
    with scim_error("noTarget"):
        patch_user(user, {"op": "replace", "path": 'emails[value co "zzz"].value', "value": "x"})


@pytest.mark.parametrize(
    "path",
    ["emails[type eq", "emails]", 'emails[type eq "work"]value', "emails..value", "2emails", ""],
)
def test_malformed_paths_are_invalid_path(user, path):
    with scim_error("invalidPath"):
        apply_user_patch(user, [{"op": "replace", "path": path or " x y", "value": "v"}])


@pytest.mark.parametrize(
    "path",
    [
        'emails[type xx "work"].value',
        "emails[type eq].value",
        'emails[type eq "work" and].value',
        'emails[(type eq "work"].value',
        "emails[type eq work].value",
        'emails[name.givenName eq "x"].value',
    ],
)
def test_unsupported_filters_are_invalid_filter(user, path):
    with scim_error("invalidFilter"):
        patch_user(user, {"op": "replace", "path": path, "value": "v"})


def test_filter_on_single_valued_attribute_is_invalid_path(user):
    with scim_error("invalidPath"):
        patch_user(user, {"op": "replace", "path": 'name[givenName eq "x"]', "value": {}})
    with scim_error("invalidPath"):
        patch_user(user, {"op": "replace", "path": "displayName.value", "value": "x"})


# --- add semantics -------------------------------------------------------------------------


def test_add_to_multi_valued_appends_and_skips_duplicates(user):
    patched = patch_user(
        user,
        {
            "op": "add",
            "path": "emails",
            "value": [
                {"value": "babs@home.example", "type": "home"},
                {"value": "b@other.example", "type": "other"},
            ],
        },
        {"op": "add", "path": "roles", "value": {"value": "auditor"}},
    )
    assert patched["emails"][2:] == [{"value": "b@other.example", "type": "other"}]
    assert len(patched["emails"]) == 3
    assert patched["roles"] == [{"value": "admin"}, {"value": "reader"}, {"value": "auditor"}]


def test_add_primary_value_clears_other_primaries(user):
    patched = patch_user(
        user,
        {
            "op": "add",
            "path": "emails",
            "value": [{"value": "n@x", "type": "work", "primary": True}],
        },
    )
    assert [e.get("primary") for e in patched["emails"]] == [False, None, True]


def test_add_to_single_valued_sets_it(user):
    assert patch_user(user, {"op": "add", "path": "title", "value": "CTO"})["title"] == "CTO"


def test_add_to_complex_merges(user):
    patched = patch_user(user, {"op": "add", "path": "name", "value": {"middleName": "Jane"}})
    assert patched["name"] == {"givenName": "Barbara", "familyName": "Jensen", "middleName": "Jane"}


def test_add_without_path_entra_post_fix(user):
    # Entra known issues: after the fix, Add arrives without a path.
    patched = patch_user(user, {"op": "add", "value": {"nickName": "Babs"}})
    assert patched["nickName"] == "Babs"


def test_add_without_path_appends_to_multi_valued(user):
    patched = patch_user(
        user,
        {"op": "add", "value": {"emails": [{"value": "x@y", "type": "other"}], "title": "Boss"}},
    )
    assert patched["emails"][-1] == {"value": "x@y", "type": "other"}
    assert len(patched["emails"]) == 3
    assert patched["title"] == "Boss"


def test_add_null_is_a_no_op(user):
    assert patch_user(user, {"op": "add", "path": "title", "value": None}) == user


# --- replace semantics ---------------------------------------------------------------------


def test_replace_multi_valued_replaces_all(user):
    patched = patch_user(
        user, {"op": "replace", "path": "emails", "value": [{"value": "only@x", "type": "work"}]}
    )
    assert patched["emails"] == [{"value": "only@x", "type": "work"}]


def test_replace_with_null_removes(user):
    assert "displayName" not in patch_user(
        user, {"op": "replace", "path": "displayName", "value": None}
    )


def test_replace_without_path_entra_dotted_and_urn_keys(user):
    # Entra known issues: "Request with attribute path" after the fix.
    patched = patch_user(
        user,
        {
            "op": "replace",
            "value": {
                "displayName": "Babs J",
                "name.givenName": "Babs",
                "name.familyName": "Jensen-Smith",
                'emails[type eq "work"].value': "babs@new.example",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "7",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager": MANAGER_ID,
            },
        },
    )
    assert patched["displayName"] == "Babs J"
    assert patched["name"] == {"givenName": "Babs", "familyName": "Jensen-Smith"}
    assert patched["emails"][0]["value"] == "babs@new.example"
    assert patched[ENTERPRISE] == {
        "department": "Sales",
        "employeeNumber": "7",
        "manager": {"value": MANAGER_ID},
    }


def test_replace_without_path_extension_object_merges(user):
    patched = patch_user(
        user,
        {"op": "replace", "value": {ENTERPRISE: {"department": "X", "manager": {"value": "m"}}}},
    )
    assert patched[ENTERPRISE] == {
        "department": "X",
        "employeeNumber": "42",
        "manager": {"value": "m"},
    }


def test_path_naming_the_extension_merges_and_remove_drops_it(user):
    patched = patch_user(user, {"op": "add", "path": ENTERPRISE, "value": {"division": "EMEA"}})
    assert patched[ENTERPRISE] == {
        "department": "Sales",
        "employeeNumber": "42",
        "division": "EMEA",
    }
    patched = patch_user(user, {"op": "remove", "path": ENTERPRISE})
    assert ENTERPRISE not in patched
    assert ENTERPRISE not in patched["schemas"]


def test_unknown_extension_is_kept_under_its_urn():
    custom = "urn:ietf:params:scim:schemas:extension:acme:2.0:User"
    patched = patch_user(
        {"userName": "x"},
        {"op": "add", "value": {custom: {"badge": "B7", "tags": ["a", "b"]}}},
        {"op": "add", "path": f"{custom}:tags", "value": ["c", "a"]},
    )
    assert patched[custom] == {"badge": "B7", "tags": ["a", "b", "c"]}


def test_replace_complex_with_object_merges(user):
    patched = patch_user(user, {"op": "replace", "path": "name", "value": {"givenName": "B"}})
    assert patched["name"] == {"givenName": "B", "familyName": "Jensen"}


# --- active --------------------------------------------------------------------------------


def test_okta_deactivate_user(user):
    # Okta SCIM 2.0 reference, "Update a specific User (PATCH)".
    patched = patch_user(user, {"op": "replace", "value": {"active": False}})
    assert patched["active"] is False


@pytest.mark.parametrize(
    ("sent", "stored"),
    [("False", False), ("True", True), ("false", False), ("true", True), (False, False)],
)
def test_entra_active_strings(user, sent, stored):
    # Entra known issues: booleans arrive as the strings "True"/"False".
    patched = patch_user(user, {"op": "Replace", "path": "active", "value": sent})
    assert patched["active"] is stored


@pytest.mark.parametrize("sent", ["no", 0, 1, {"value": True}, [True]])
def test_other_active_values_are_invalid(user, sent):
    with scim_error("invalidValue"):
        patch_user(user, {"op": "replace", "path": "active", "value": sent})


def test_primary_strings_become_booleans():
    patched = patch_user(
        {"userName": "x"},
        {
            "op": "Add",
            "path": "roles",
            "value": [{"primary": "True", "type": "WindowsAzureActiveDirectoryRole", "value": "A"}],
        },
    )
    assert patched["roles"] == [
        {"primary": True, "type": "WindowsAzureActiveDirectoryRole", "value": "A"}
    ]


# --- manager -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [MANAGER_ID, {"value": MANAGER_ID}, [{"value": MANAGER_ID}], {"Value": MANAGER_ID}]
)
@pytest.mark.parametrize("path", [f"{ENTERPRISE}:manager", "manager", "Manager"])
@pytest.mark.parametrize("op", ["add", "replace"])
def test_manager_forms(user, value, path, op):
    patched = patch_user(user, {"op": op, "path": path, "value": value})
    assert patched[ENTERPRISE]["manager"] == {"value": MANAGER_ID}


def test_manager_value_sub_attribute(user):
    patched = patch_user(
        user, {"op": "replace", "path": f"{ENTERPRISE}:manager.value", "value": MANAGER_ID}
    )
    assert patched[ENTERPRISE]["manager"] == {"value": MANAGER_ID}


def test_manager_display_name_is_kept_as_on_post_and_ref_is_derived(user):
    patched = patch_user(
        user,
        {
            "op": "replace",
            "path": f"{ENTERPRISE}:manager",
            "value": {"value": MANAGER_ID, "displayName": "Boss", "$ref": "../Users/m"},
        },
    )
    assert patched[ENTERPRISE]["manager"] == {"value": MANAGER_ID, "displayName": "Boss"}
    renamed = patch_user(
        patched,
        {"op": "replace", "path": f"{ENTERPRISE}:manager.displayName", "value": "Big Boss"},
        {"op": "replace", "path": f"{ENTERPRISE}:manager.$ref", "value": "../Users/x"},
    )
    assert renamed[ENTERPRISE]["manager"] == {"value": MANAGER_ID, "displayName": "Big Boss"}
    moved = patch_user(renamed, {"op": "replace", "path": "manager.value", "value": "m2"})
    assert moved[ENTERPRISE]["manager"] == {"value": "m2", "displayName": "Big Boss"}
    dropped = patch_user(moved, {"op": "remove", "path": f"{ENTERPRISE}:manager.displayName"})
    assert dropped[ENTERPRISE]["manager"] == {"value": "m2"}
    # A display name alone names no manager.
    nobody = patch_user(
        {"userName": "x"}, {"op": "add", "path": "manager.displayName", "value": "Boss"}
    )
    assert nobody == {"userName": "x"}


@pytest.mark.parametrize(
    "operation",
    [
        {"op": "remove", "path": f"{ENTERPRISE}:manager"},
        {"op": "remove", "path": "manager"},
        {"op": "replace", "path": f"{ENTERPRISE}:manager", "value": ""},
        {"op": "replace", "path": f"{ENTERPRISE}:manager", "value": {"value": ""}},
        {"op": "replace", "path": f"{ENTERPRISE}:manager", "value": None},
        {"op": "replace", "path": f"{ENTERPRISE}:manager", "value": []},
        {"op": "replace", "value": {f"{ENTERPRISE}:manager": ""}},
    ],
)
def test_manager_removal(user, operation):
    user[ENTERPRISE]["manager"] = {"value": MANAGER_ID}
    patched = patch_user(user, operation)
    assert patched[ENTERPRISE] == {"department": "Sales", "employeeNumber": "42"}


def test_manager_must_be_an_id(user):
    with scim_error("invalidValue"):
        patch_user(user, {"op": "replace", "path": "manager", "value": 12})


@pytest.mark.parametrize(
    "operation",
    [
        {"op": "replace", "path": "roles", "value": ["Assistant", "Viewer"]},
        {"op": "Replace", "value": {"roles": ["Assistant", "Viewer"]}},
        {"op": "replace", "value": {f"{CORE_USER_URN}:roles": ["Assistant", "Viewer"]}},
    ],
)
def test_roles_as_a_list_of_strings_like_post(user, operation):
    """Okta "string array" roles (docs/okta.md): each string is a value, as POST/PUT take them."""
    patched = patch_user(user, operation)
    assert patched["roles"] == [{"value": "Assistant"}, {"value": "Viewer"}]


def test_add_and_remove_roles_as_strings(user):
    added = patch_user(user, {"op": "add", "path": "roles", "value": ["Viewer", "admin"]})
    assert added["roles"] == [{"value": "admin"}, {"value": "reader"}, {"value": "Viewer"}]
    removed = patch_user(added, {"op": "remove", "path": "roles", "value": ["reader"]})
    assert removed["roles"] == [{"value": "admin"}, {"value": "Viewer"}]


# --- read-only and case handling -----------------------------------------------------------


def test_read_only_attributes_are_ignored(user):
    patched = patch_user(
        user,
        {"op": "replace", "value": {"id": "other", "meta": {}, "schemas": [], "groups": []}},
        {"op": "replace", "path": "id", "value": "other"},
        {"op": "add", "path": "groups", "value": [{"value": "g"}]},
        {"op": "remove", "path": "meta"},
        {"op": "replace", "path": "password", "value": "hunter2"},
    )
    assert patched == user


CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
SEAT = "urn:ietf:params:scim:schemas:extension:seatagent:2.0:User"


@pytest.mark.parametrize(
    "operation",
    [
        {"op": "replace", "path": "fooBar", "value": "x"},
        {"op": "add", "path": "fooBar", "value": "x"},
        {"op": "remove", "path": "fooBar"},
        {"op": "replace", "path": "name.fooBar", "value": "x"},
        {"op": "replace", "path": f"{CORE_USER}:fooBar", "value": "x"},
        {"op": "replace", "path": f"{ENTERPRISE}:fooBar", "value": "x"},
        {"op": "replace", "path": f"{ENTERPRISE}:manager.fooBar", "value": "x"},
        {"op": "replace", "path": "emails.fooBar", "value": "x"},
        {"op": "replace", "path": 'emails[type eq "work"].fooBar', "value": "x"},
        {"op": "replace", "path": 'emails[fooBar eq "work"].value', "value": "x"},
        {"op": "remove", "path": 'roles[value eq "a" or not (fooBar pr)]'},
        {"op": "replace", "value": {"fooBar": "x"}},
        {"op": "replace", "value": {"name.fooBar": "x"}},
        {"op": "replace", "value": {f"{ENTERPRISE}:fooBar": "x"}},
        {"op": "add", "path": ENTERPRISE, "value": {"fooBar": "x"}},
    ],
)
def test_unknown_core_and_enterprise_paths_are_invalid_path(user, operation):
    """RFC 7644 §3.5.2: an attribute the core or enterprise schema does not define is not
    silently dropped."""
    before = copy.deepcopy(user)
    with scim_error("invalidPath"):
        patch_user(user, {"op": "replace", "path": "displayName", "value": "changed"}, operation)
    assert user == before


def test_read_only_and_foreign_extension_paths_are_still_accepted(user):
    """What IdPs echo (id, meta, groups), the read-only seat-agent extension and a foreign
    extension's attributes are not invalid paths (docs/scim.md)."""
    patched = patch_user(
        user,
        {"op": "replace", "path": "id", "value": "other"},
        {"op": "replace", "path": "meta.lastModified", "value": "2020-01-01T00:00:00Z"},
        {"op": "add", "path": "groups", "value": [{"value": "g"}]},
        {"op": "replace", "path": f"{SEAT}:licenseState", "value": "licensed"},
        {
            "op": "add",
            "path": "urn:ietf:params:scim:schemas:extension:acme:2.0:User:badge",
            "value": "B",
        },
    )
    assert patched["id"] == user["id"]
    assert patched["urn:ietf:params:scim:schemas:extension:acme:2.0:User"] == {"badge": "B"}


def test_attribute_names_are_case_insensitive(user):
    patched = patch_user(
        user,
        {"op": "replace", "path": "DisplayName", "value": "X"},
        {"op": "replace", "path": "NAME.GIVENNAME", "value": "Y"},
        {"op": "replace", "path": 'EMAILS[TYPE EQ "work"].VALUE', "value": "z@x"},
        {"op": "replace", "path": f"{ENTERPRISE.upper()}:DEPARTMENT", "value": "D"},
    )
    assert patched["displayName"] == "X"
    assert "DisplayName" not in patched
    assert patched["name"]["givenName"] == "Y"
    assert patched["emails"][0]["value"] == "z@x"
    assert patched[ENTERPRISE]["department"] == "D"


def test_new_keys_get_canonical_names():
    patched = patch_user(
        {"userName": "x"},
        {"op": "add", "path": "nickname", "value": "N"},
        {"op": "add", "path": "PHONENUMBERS", "value": [{"value": "1"}]},
        {"op": "add", "path": f"{ENTERPRISE}:COSTCENTER", "value": "C"},
        {"op": "add", "path": "name.givenname", "value": "G"},
    )
    assert patched == {
        "userName": "x",
        "nickName": "N",
        "phoneNumbers": [{"value": "1"}],
        ENTERPRISE: {"costCenter": "C"},
        "name": {"givenName": "G"},
    }


# --- wrong types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "operation",
    [
        {"op": "replace", "path": "emails", "value": "babs@example.com"},
        {"op": "add", "path": "emails", "value": [5]},
        {"op": "add", "path": "roles", "value": "Assistant"},
        {"op": "replace", "path": "name", "value": "Babs Jensen"},
        {"op": "replace", "path": "name.givenName", "value": {"x": 1}},
        {"op": "replace", "path": "displayName", "value": {"value": "x"}},
        {"op": "replace", "path": 'emails[type eq "work"]', "value": "x"},
        {"op": "replace", "path": 'emails[type eq "work"].value', "value": ["x"]},
        {"op": "replace", "value": "not an object"},
        {"op": "replace", "path": ENTERPRISE, "value": "x"},
    ],
)
def test_wrong_types_are_invalid_value(user, operation):
    with scim_error("invalidValue"):
        patch_user(user, operation)


def test_failed_request_leaves_resource_untouched(user):
    before = copy.deepcopy(user)
    with scim_error("invalidValue"):
        patch_user(
            user,
            {"op": "replace", "path": "displayName", "value": "changed"},
            {"op": "replace", "path": "active", "value": "maybe"},
        )
    assert user == before


# --- groups --------------------------------------------------------------------------------


def test_okta_add_members(group):
    # Okta SCIM 2.0 reference, "Update a specific Group membership".
    patched, delta = patch_group(
        group,
        {
            "op": "add",
            "path": "members",
            "value": [{"value": "23a35c27-23d3-4c03-b4c5-6443c09e7173", "display": "t@okta.local"}],
        },
    )
    assert patched == group
    assert delta == MemberDelta(["23a35c27-23d3-4c03-b4c5-6443c09e7173"], [], False)


def test_okta_remove_member_by_filter(group):
    _, delta = patch_group(
        group, {"op": "remove", "path": 'members[value eq "89bb1940-b905-4575-9e7f-6f887cfb368e"]'}
    )
    assert delta == MemberDelta([], ["89bb1940-b905-4575-9e7f-6f887cfb368e"], False)


def test_remove_members_filter_with_or(group):
    _, delta = patch_group(group, {"op": "remove", "path": 'members[value eq "a" or value eq "b"]'})
    assert delta == MemberDelta([], ["a", "b"], False)


def test_members_filter_on_other_attributes_is_invalid_filter(group):
    with scim_error("invalidFilter"):
        patch_group(group, {"op": "remove", "path": 'members[display eq "Babs"]'})


def test_entra_remove_listed_members_only(group):
    # Entra tutorial, "Update Group [Remove Members]" (also the pre-fix known-issue form).
    _, delta = patch_group(
        group,
        {
            "op": "Remove",
            "path": "members",
            "value": [{"$ref": None, "value": "id1"}, {"value": "id2"}],
        },
    )
    assert delta == MemberDelta([], ["id1", "id2"], False)


def test_remove_members_without_value_removes_all(group):
    _, delta = patch_group(group, {"op": "remove", "path": "members"})
    assert delta == MemberDelta([], [], True)


def test_replace_members(group):
    _, delta = patch_group(
        group,
        {"op": "replace", "path": "members", "value": [{"value": "a"}, {"value": "b"}]},
    )
    assert delta == MemberDelta(["a", "b"], [], True)


def test_replace_without_path_display_name_and_members(group):
    patched, delta = patch_group(
        group,
        {
            "op": "replace",
            "value": {
                "id": "abf4dd94-a4c0-4f67-89c9-76b03340cb9b",
                "displayName": "new",
                "members": [{"value": "a", "display": "A"}],
            },
        },
    )
    assert patched == {**group, "displayName": "new"}
    assert delta == MemberDelta(["a"], [], True)


def test_entra_replace_display_name(group):
    # Entra tutorial, "Update Group [Non-member attributes]".
    patched, delta = patch_group(
        group, {"op": "Replace", "path": "displayName", "value": "1879db59updatedDisplayName"}
    )
    assert patched["displayName"] == "1879db59updatedDisplayName"
    assert delta == MemberDelta([], [], False)


def test_entra_add_members(group):
    # Entra tutorial, "Update Group [Add Members]".
    _, delta = patch_group(
        group,
        {
            "op": "Add",
            "path": "members",
            "value": [{"$ref": None, "value": "f648f8d5ea4e4cd38e9c"}],
        },
    )
    assert delta == MemberDelta(["f648f8d5ea4e4cd38e9c"], [], False)


def test_member_operations_accumulate_in_order(group):
    _, delta = patch_group(
        group,
        {"op": "add", "path": "members", "value": [{"value": "a"}, {"value": "b"}, {"value": "a"}]},
        {"op": "remove", "path": 'members[value eq "a"]'},
        {"op": "remove", "path": "members", "value": [{"value": "c"}]},
        {"op": "add", "path": "members", "value": {"value": "c"}},
    )
    assert delta == MemberDelta(["b", "c"], ["a"], False)


def test_member_changes_after_replace_edit_the_new_set(group):
    _, delta = patch_group(
        group,
        {"op": "add", "path": "members", "value": [{"value": "old"}]},
        {"op": "replace", "path": "members", "value": [{"value": "a"}, {"value": "b"}]},
        {"op": "remove", "path": 'members[value eq "a"]'},
        {"op": "add", "path": "members", "value": [{"value": "c"}]},
    )
    assert delta == MemberDelta(["b", "c"], [], True)


def test_group_attributes_and_read_only(group):
    patched, _ = patch_group(
        group,
        {
            "op": "replace",
            "path": "urn:ietf:params:scim:schemas:core:2.0:Group:displayName",
            "value": "Ops",
        },
        {"op": "replace", "path": "externalId", "value": "e2"},
        {"op": "replace", "path": "id", "value": "nope"},
        {"op": "remove", "path": "meta"},
    )
    assert patched == {**group, "displayName": "Ops", "externalId": "e2"}


def test_member_without_value_is_invalid(group):
    with scim_error("invalidValue"):
        patch_group(group, {"op": "add", "path": "members", "value": [{"display": "x"}]})


# --- more multi-valued forms ---------------------------------------------------------------


def test_remove_multi_valued_with_value_removes_listed_elements(user):
    patched = patch_user(
        user, {"op": "remove", "path": "emails", "value": [{"value": "babs@home.example"}]}
    )
    assert patched["emails"] == [{"value": "babs@example.com", "type": "work", "primary": True}]


def test_sub_attribute_without_filter_addresses_every_element(user):
    patched = patch_user(user, {"op": "replace", "path": "roles.display", "value": "Role"})
    assert patched["roles"] == [
        {"value": "admin", "display": "Role"},
        {"value": "reader", "display": "Role"},
    ]


def test_setting_primary_by_filter_clears_the_previous_primary(user):
    patched = patch_user(
        user, {"op": "replace", "path": 'emails[type eq "home"].primary', "value": "True"}
    )
    assert [e.get("primary") for e in patched["emails"]] == [False, True]
