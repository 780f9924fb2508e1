"""JumpCloud's custom SCIM identity management connector replayed over HTTP.

Sources:

- jumpcloud.com/support "Identity Management using a Custom SCIM Integration": the
  connection test creates a test user and a test group and deletes both (a user it cannot
  delete is deactivated instead); the provisioning events are lookup (to decide between
  create and update), create, update, deprovision ("change an existing user to inactive") and
  delete; groups map ``name`` to ``displayName``, empty groups are not created, renames are
  supported, managed groups deleted in JumpCloud are deleted in the application, and members
  of a group taken off the application are deactivated.
- app.uni-moni.com "SSO setup: JumpCloud": JumpCloud's group member PATCH is the Azure AD
  style, ``value: [{"value": uid}]`` without an RFC filter path, to add and to remove.
- Vendors' JumpCloud setup notes: "Activate" sends ``GET /Users`` and needs a 200 with
  ``totalResults: 0, Resources: []`` when there are no users yet.

The user bodies are not on those pages; those steps replay RFC 7643 §8.1's minimal user and
RFC 7644 §3.5.2.3 replaces.
"""

from __future__ import annotations

from urllib.parse import quote

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
JUMPCLOUD = {"Content-Type": "application/scim+json"}


def jc_user(email: str, given: str = "Test", family: str = "User") -> dict:
    return {
        "schemas": [USER],
        "userName": email,
        "name": {"givenName": given, "familyName": family},
        "emails": [{"value": email, "type": "work", "primary": True}],
        "active": True,
    }


def patch(*ops: dict) -> dict:
    return {"schemas": [PATCH], "Operations": list(ops)}


def members(api, group_id: str) -> set[str]:
    with api.agent.store.read() as tx:
        return set(tx.groups.member_ids(group_id))


def test_jumpcloud_activate_and_connection_test(api):
    # "Activate": GET /Users on an empty directory.
    r = api.scim("GET", "/Users", headers=JUMPCLOUD)
    assert r.status_code == 200
    assert (r.get_json()["totalResults"], r.get_json()["Resources"]) == (0, [])

    # The connection test: a test user and a test group, then both deleted.
    r = api.scim("POST", "/Users", jc_user("scim-test@example.com"), JUMPCLOUD)
    assert r.status_code == 201, r.get_json()
    uid = r.get_json()["id"]
    r = api.scim("POST", "/Groups", {"schemas": [GROUP], "displayName": "JC Test"}, JUMPCLOUD)
    assert r.status_code == 201, r.get_json()
    gid = r.get_json()["id"]
    assert api.scim("DELETE", f"/Groups/{gid}", headers=JUMPCLOUD).status_code == 204
    assert api.scim("DELETE", f"/Users/{uid}", headers=JUMPCLOUD).status_code == 204
    assert api.scim("GET", "/Users", headers=JUMPCLOUD).get_json()["totalResults"] == 0
    assert api.admin("GET", "/seats").get_json()["consumed"] == 0


def test_jumpcloud_user_lifecycle(api):
    # Lookup, to decide between create and update.
    query = "/Users?filter=" + quote('userName eq "jane@example.com"', safe="")
    assert api.scim("GET", query, headers=JUMPCLOUD).get_json()["totalResults"] == 0
    r = api.scim("POST", "/Users", jc_user("jane@example.com", "Jane", "Doe"), JUMPCLOUD)
    assert r.status_code == 201
    uid = r.get_json()["id"]
    assert [u["id"] for u in api.scim("GET", query).get_json()["Resources"]] == [uid]

    # Update: one replace per changed attribute, with a path.
    r = api.scim(
        "PATCH",
        f"/Users/{uid}",
        patch(
            {"op": "replace", "path": "name.givenName", "value": "Janet"},
            {"op": "replace", "path": "name.familyName", "value": "Doe-Smith"},
        ),
        JUMPCLOUD,
    )
    assert r.status_code in (200, 204)
    got = api.scim("GET", f"/Users/{uid}").get_json()
    assert got["name"] == {"givenName": "Janet", "familyName": "Doe-Smith"}

    # Deprovision: the user becomes inactive and gives back the seat.
    r = api.scim(
        "PATCH", f"/Users/{uid}", patch({"op": "replace", "path": "active", "value": False})
    )
    assert r.status_code in (200, 204)
    assert api.scim("GET", f"/Users/{uid}").get_json()["active"] is False
    assert api.admin("GET", "/seats").get_json()["consumed"] == 0

    # Reactivated, then deleted.
    r = api.scim(
        "PATCH", f"/Users/{uid}", patch({"op": "replace", "path": "active", "value": True})
    )
    assert r.status_code in (200, 204)
    assert api.admin("GET", "/seats").get_json()["consumed"] == 1
    assert api.scim("DELETE", f"/Users/{uid}", headers=JUMPCLOUD).status_code == 204
    assert api.admin("GET", "/seats").get_json()["consumed"] == 0


def test_jumpcloud_group_management(api):
    a, b, c = (
        api.scim("POST", "/Users", jc_user(f"{n}@example.com"), JUMPCLOUD).get_json()["id"]
        for n in ("a", "b", "c")
    )
    # JumpCloud takes over an existing group whose name matches: it looks it up by name.
    lookup = "/Groups?filter=" + quote('displayName eq "Designers"', safe="")
    assert api.scim("GET", lookup, headers=JUMPCLOUD).get_json()["totalResults"] == 0

    # Empty groups are not created: the group arrives with its first members.
    r = api.scim(
        "POST",
        "/Groups",
        {"schemas": [GROUP], "displayName": "Designers", "members": [{"value": a}]},
        JUMPCLOUD,
    )
    assert r.status_code == 201, r.get_json()
    gid = r.get_json()["id"]
    assert members(api, gid) == {a}
    assert [g["id"] for g in api.scim("GET", lookup).get_json()["Resources"]] == [gid]

    # Members in and out, Azure AD style: a value list, no filter path.
    add = patch({"op": "add", "path": "members", "value": [{"value": b}, {"value": c}]})
    assert api.scim("PATCH", f"/Groups/{gid}", add, JUMPCLOUD).status_code in (200, 204)
    assert members(api, gid) == {a, b, c}
    remove = patch({"op": "remove", "path": "members", "value": [{"value": a}]})
    assert api.scim("PATCH", f"/Groups/{gid}", remove, JUMPCLOUD).status_code in (200, 204)
    assert members(api, gid) == {b, c}

    # Rename.
    rename = patch({"op": "replace", "path": "displayName", "value": "Product Designers"})
    assert api.scim("PATCH", f"/Groups/{gid}", rename, JUMPCLOUD).status_code in (200, 204)
    assert api.scim("GET", f"/Groups/{gid}").get_json()["displayName"] == "Product Designers"
    assert {m["value"] for m in api.scim("GET", f"/Groups/{gid}").get_json()["members"]} == {b, c}

    # Group taken off the application: its members are deactivated, then it is deleted.
    for uid in (b, c):
        off = patch({"op": "replace", "path": "active", "value": False})
        assert api.scim("PATCH", f"/Users/{uid}", off, JUMPCLOUD).status_code in (200, 204)
    assert api.scim("DELETE", f"/Groups/{gid}", headers=JUMPCLOUD).status_code == 204
    assert api.scim("GET", f"/Groups/{gid}").status_code == 404
    assert api.admin("GET", "/seats").get_json()["consumed"] == 1  # a is still active
