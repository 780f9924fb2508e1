"""Microsoft Entra ID's provisioning requests replayed over HTTP, from "Tutorial: Develop and plan
provisioning for a SCIM endpoint in Microsoft Entra ID" and "Known issues and resolutions with
SCIM 2.0 protocol compliance of the Microsoft Entra user provisioning service" (capitalised
``op``, ``"False"`` strings, dotted and full-URN keys in a no-path replace, the pre-2020 member
remove with a value list, the extra ADSCIM group schema).

Each step checks the response and what is stored.
"""

from __future__ import annotations

import pytest

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
ADSCIM_GROUP = "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SEAT = "urn:ietf:params:scim:schemas:extension:seatagent:2.0:User"
ENTRA = {"User-Agent": "Azure AD SCIM client", "Content-Type": "application/scim+json"}


def entra_user(user_name: str, external_id: str, **extra) -> dict:
    """POST /Users as the tutorial shows it."""
    return {
        "schemas": [USER, ENTERPRISE],
        "externalId": external_id,
        "userName": user_name,
        "active": True,
        "emails": [{"primary": True, "type": "work", "value": user_name}],
        "meta": {"resourceType": "User"},
        "name": {
            "formatted": "givenName familyName",
            "familyName": "familyName",
            "givenName": "givenName",
        },
        "roles": [],
        **extra,
    }


def entra_patch(*ops: dict) -> dict:
    return {"schemas": [PATCH], "Operations": list(ops)}


def stored(api, user_id: str):
    with api.agent.store.read() as tx:
        return tx.users.get(user_id)


def members(api, group_id: str) -> set[str]:
    with api.agent.store.read() as tx:
        return set(tx.groups.member_ids(group_id))


def create_user(api, user_name: str, external_id: str, **extra) -> str:
    r = api.scim("POST", "/Users", entra_user(user_name, external_id, **extra), ENTRA)
    assert r.status_code == 201, r.get_json()
    return r.get_json()["id"]


def test_entra_user_lifecycle(api):
    name = "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1@testuser.com"
    query = f'/Users?filter=userName eq "{name}"'
    r = api.scim("GET", query, headers=ENTRA)
    assert r.status_code == 200
    assert (r.get_json()["totalResults"], r.get_json()["Resources"]) == (0, [])

    r = api.scim(
        "POST",
        "/Users",
        entra_user(
            name,
            "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
            **{ENTERPRISE: {"department": "Engineering", "employeeNumber": "701984"}},
        ),
        ENTRA,
    )
    assert r.status_code == 201
    created = r.get_json()
    uid = created["id"]
    assert created["schemas"] == [USER, ENTERPRISE, SEAT]
    assert created["externalId"] == "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"
    record = stored(api, uid)
    assert record.resource == {
        "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "userName": name,
        "active": True,
        "emails": [{"primary": True, "type": "work", "value": name}],
        "name": {
            "formatted": "givenName familyName",
            "familyName": "familyName",
            "givenName": "givenName",
        },
        ENTERPRISE: {"department": "Engineering", "employeeNumber": "701984"},
    }
    assert record.seat.license_state == "licensed"

    found = api.scim("GET", query, headers=ENTRA).get_json()
    assert [u["id"] for u in found["Resources"]] == [uid]
    by_external = api.scim(
        "GET", '/Users?filter=externalId eq "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"'
    ).get_json()
    assert [u["id"] for u in by_external["Resources"]] == [uid]
    # Entra retries a create it thinks failed: the duplicate is a 409 uniqueness.
    dup = api.scim("POST", "/Users", entra_user(name.upper(), "other"), ENTRA)
    assert dup.status_code == 409
    assert dup.get_json()["scimType"] == "uniqueness"

    # Multi-valued and sub-attribute updates, with "Replace" capitalised.
    r = api.scim(
        "PATCH",
        f"/Users/{uid}",
        entra_patch(
            {
                "op": "Replace",
                "path": 'emails[type eq "work"].value',
                "value": "updatedEmail@microsoft.com",
            },
            {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"},
        ),
        ENTRA,
    )
    assert r.status_code == 200
    resource = stored(api, uid).resource
    assert resource["emails"] == [
        {"primary": True, "type": "work", "value": "updatedEmail@microsoft.com"}
    ]
    assert resource["name"]["familyName"] == "updatedFamilyName"
    assert resource["name"]["givenName"] == "givenName"
    hit = api.scim(
        "GET", '/Users?filter=emails[type eq "work"].value eq "updatedemail@microsoft.com"'
    )
    assert [u["id"] for u in hit.get_json()["Resources"]] == [uid]

    # A no-path replace with dotted and full-URN keys (Known issues: before aadOptscim062020).
    r = api.scim(
        "PATCH",
        f"/Users/{uid}",
        entra_patch(
            {
                "op": "Replace",
                "value": {
                    "name.givenName": "Barbara",
                    "name.familyName": "Jensen",
                    f"{ENTERPRISE}:department": "Sales",
                    "displayName": "Barbara Jensen",
                },
            }
        ),
        ENTRA,
    )
    assert r.status_code == 200
    resource = stored(api, uid).resource
    assert resource["name"] == {
        "formatted": "givenName familyName",
        "familyName": "Jensen",
        "givenName": "Barbara",
    }
    assert resource[ENTERPRISE] == {"department": "Sales", "employeeNumber": "701984"}
    assert resource["displayName"] == "Barbara Jensen"
    assert "name.givenName" not in resource
    assert f"{ENTERPRISE}:department" not in resource
    dept = api.scim("GET", f'/Users?filter={ENTERPRISE}:department eq "Sales"').get_json()
    assert [u["id"] for u in dept["Resources"]] == [uid]

    # Single-valued: userName.
    r = api.scim(
        "PATCH",
        f"/Users/{uid}",
        entra_patch({"op": "Replace", "path": "userName", "value": "renamed@testuser.com"}),
        ENTRA,
    )
    assert r.status_code == 200
    assert stored(api, uid).resource["userName"] == "renamed@testuser.com"
    assert api.scim("GET", query).get_json()["totalResults"] == 0

    # Disable with the string boolean "False", then enable with "True".
    r = api.scim(
        "PATCH",
        f"/Users/{uid}",
        entra_patch({"op": "Replace", "path": "active", "value": "False"}),
        ENTRA,
    )
    assert r.status_code == 200
    assert r.get_json()["active"] is False
    record = stored(api, uid)
    assert record.resource["active"] is False
    assert record.seat.license_state == "inactive"
    r = api.scim(
        "PATCH",
        f"/Users/{uid}",
        entra_patch({"op": "Replace", "path": "active", "value": "True"}),
        ENTRA,
    )
    assert r.get_json()["active"] is True
    assert stored(api, uid).seat.license_state == "licensed"
    r = api.scim(
        "PATCH",
        f"/Users/{uid}",
        entra_patch({"op": "replace", "path": "active", "value": False}),
        ENTRA,
    )
    assert stored(api, uid).resource["active"] is False

    # Hard delete after the soft-delete period.
    assert api.scim("DELETE", f"/Users/{uid}", headers=ENTRA).status_code == 204
    assert stored(api, uid) is None
    r = api.scim("GET", f"/Users/{uid}", headers=ENTRA)
    assert r.status_code == 404
    assert r.get_json()["status"] == "404"


@pytest.mark.parametrize(
    "form",
    [
        pytest.param(lambda boss: boss, id="string"),
        pytest.param(lambda boss: {"value": boss}, id="object"),
        pytest.param(lambda boss: [{"value": boss}], id="list"),
    ],
)
def test_entra_manager_forms(api, form):
    boss = create_user(api, "boss@contoso.com", "e-boss")
    uid = create_user(api, "emp@contoso.com", "e-emp")
    sent = form(boss)
    r = api.scim(
        "PATCH",
        f"/Users/{uid}",
        entra_patch({"op": "Add", "path": f"{ENTERPRISE}:manager", "value": sent}),
        ENTRA,
    )
    assert r.status_code == 200
    assert r.get_json()[ENTERPRISE]["manager"]["value"] == boss
    assert stored(api, uid).resource[ENTERPRISE] == {"manager": {"value": boss}}
    found = api.scim("GET", f'/Users?filter={ENTERPRISE}:manager.value eq "{boss}"').get_json()
    assert [u["id"] for u in found["Resources"]] == [uid]

    # Clearing the manager: Entra replaces it with an empty value.
    r = api.scim(
        "PATCH",
        f"/Users/{uid}",
        entra_patch({"op": "Replace", "path": f"{ENTERPRISE}:manager", "value": ""}),
        ENTRA,
    )
    assert r.status_code == 200
    assert ENTERPRISE not in stored(api, uid).resource
    assert ENTERPRISE not in r.get_json()


def test_entra_group_lifecycle(api):
    u1 = create_user(api, "u1@contoso.com", "e1")
    u2 = create_user(api, "u2@contoso.com", "e2")
    u3 = create_user(api, "u3@contoso.com", "e3")

    lookup = '/Groups?excludedAttributes=members&filter=displayName eq "Contoso Sales"'
    assert api.scim("GET", lookup, headers=ENTRA).get_json()["totalResults"] == 0

    r = api.scim(
        "POST",
        "/Groups",
        {
            "schemas": [GROUP, ADSCIM_GROUP],
            "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
            "displayName": "Contoso Sales",
            "meta": {"resourceType": "Group"},
        },
        ENTRA,
    )
    assert r.status_code == 201
    created = r.get_json()
    gid = created["id"]
    assert created["schemas"] == [GROUP]
    assert created["members"] == []
    with api.agent.store.read() as tx:
        assert tx.groups.get(gid, with_members=False).resource == {
            "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
            "displayName": "Contoso Sales",
        }

    # Add members, capitalised, with Entra's "$ref": null.
    r = api.scim(
        "PATCH",
        f"/Groups/{gid}",
        entra_patch(
            {
                "op": "Add",
                "path": "members",
                "value": [{"$ref": None, "value": u1}, {"$ref": None, "value": u2}, {"value": u3}],
            }
        ),
        ENTRA,
    )
    assert r.status_code == 204
    assert members(api, gid) == {u1, u2, u3}

    # Entra's lookup excludes members, on the list and by id.
    found = api.scim("GET", lookup, headers=ENTRA).get_json()
    assert found["totalResults"] == 1
    assert found["Resources"][0]["id"] == gid
    assert "members" not in found["Resources"][0]
    one = api.scim("GET", f"/Groups/{gid}?excludedAttributes=members", headers=ENTRA).get_json()
    assert "members" not in one and one["displayName"] == "Contoso Sales"

    # Pre-2020 remove: path "members" with a value list removes exactly those.
    r = api.scim(
        "PATCH",
        f"/Groups/{gid}",
        entra_patch({"op": "Remove", "path": "members", "value": [{"value": u1}, {"value": u3}]}),
        ENTRA,
    )
    assert r.status_code == 204
    assert members(api, gid) == {u2}
    # The post-2020 form.
    r = api.scim(
        "PATCH",
        f"/Groups/{gid}",
        entra_patch({"op": "remove", "path": f'members[value eq "{u2}"]'}),
        ENTRA,
    )
    assert r.status_code == 204
    assert members(api, gid) == set()

    # Non-member attributes.
    r = api.scim(
        "PATCH",
        f"/Groups/{gid}",
        entra_patch({"op": "Replace", "path": "displayName", "value": "Contoso Sales EMEA"}),
        ENTRA,
    )
    assert r.status_code == 204
    renamed = api.scim("GET", '/Groups?filter=displayName eq "Contoso Sales EMEA"').get_json()
    assert [g["id"] for g in renamed["Resources"]] == [gid]
    assert api.scim("GET", lookup).get_json()["totalResults"] == 0

    assert api.scim("DELETE", f"/Groups/{gid}", headers=ENTRA).status_code == 204
    assert api.scim("GET", f"/Groups/{gid}", headers=ENTRA).status_code == 404
    assert api.scim("GET", "/Users?count=0").get_json()["totalResults"] == 3


def test_entra_deleting_a_member_user_leaves_the_group(api):
    u1 = create_user(api, "m1@contoso.com", "m1")
    u2 = create_user(api, "m2@contoso.com", "m2")
    r = api.scim(
        "POST",
        "/Groups",
        {
            "schemas": [GROUP, ADSCIM_GROUP],
            "displayName": "G",
            "members": [{"value": u1}, {"value": u2}],
        },
        ENTRA,
    )
    gid = r.get_json()["id"]
    assert api.scim("DELETE", f"/Users/{u1}", headers=ENTRA).status_code == 204
    assert members(api, gid) == {u2}
    listed = api.scim("GET", f"/Groups/{gid}").get_json()["members"]
    assert [m["value"] for m in listed] == [u2]


def test_entra_primary_role_replace_with_quoted_true_replaces_the_role(make_api):
    """Entra's SingleAppRoleAssignment mapping writes roles[primary eq "True"].value; the stored
    primary is a JSON boolean, so the string must match it and replace, not append."""
    api = make_api(free_roles=["Assistant"])
    r = api.scim(
        "POST",
        "/Users",
        {"userName": "role@x", "active": True, "roles": [{"value": "User", "primary": "True"}]},
    )
    uid = r.get_json()["id"]
    assert (
        r.get_json()["urn:ietf:params:scim:schemas:extension:seatagent:2.0:User"]["licenseState"]
        == "licensed"
    )
    r = api.scim(
        "PATCH",
        f"/Users/{uid}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [
                {"op": "Replace", "path": 'roles[primary eq "True"].value', "value": "Assistant"}
            ],
        },
    )
    assert r.status_code == 200
    body = r.get_json()
    assert body["roles"] == [{"value": "Assistant", "primary": True}]
    assert (
        body["urn:ietf:params:scim:schemas:extension:seatagent:2.0:User"]["licenseState"] == "free"
    )
