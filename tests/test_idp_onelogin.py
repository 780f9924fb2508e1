"""OneLogin's SCIM provisioner ("SCIM Provisioner with SAML (SCIM v2 Enterprise)") replayed
over HTTP.

Sources:

- developers.onelogin.com/scim/implement-scim-api ("Implement RESTful SCIM APIs for Your
  App"): the calls OneLogin makes (Get User with userName filter, Create User, Get User by ID,
  Update User, Get Groups, Create Group, Patch Group, Delete User, Get Users); the initial
  connection asks for a userName it knows does not exist and expects an empty list (or 404);
  responses must be ``application/json``.
- The "SCIM JSON Template" OneLogin fills per user, as vendors publish it for this connector
  (livingsecurity.com "Configuring SCIM for OneLogin"): core and enterprise schemas,
  ``{$parameters.*}`` placeholders that become empty strings when a parameter has no value,
  and a manager whose id may be empty.
- 15five/django-scim2's User adapter (copied by freeipa/ipa-tuura): "OneLogin sends a dict
  despite the spec" for ``emails``.
- developers.onelogin.com/scim/test-your-scim: when a user is deleted in OneLogin the app
  deletes, suspends or does nothing.

The Update User and Patch Group bodies are not on those pages; those steps replay the RFC 7644
forms (§3.5.1 PUT, §3.5.2 PATCH add/remove of members).
"""

from __future__ import annotations

from urllib.parse import quote

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ONELOGIN = {"Accept": "application/json", "Content-Type": "application/json"}


def onelogin_user(user_name: str, title: str = "", department: str = "") -> dict:
    """The v2 Enterprise template with the parameters a plain OneLogin user leaves empty."""
    return {
        "schemas": [USER, ENTERPRISE],
        "userName": user_name,
        "name": {"familyName": "Lovelace", "givenName": "Ada"},
        "title": title,
        "userType": "",
        "timezone": "",
        "emails": [{"value": user_name, "type": "work", "primary": True}],
        "addresses": [{"locality": "", "region": "", "country": ""}],
        ENTERPRISE: {
            "organization": "",
            "division": "",
            "department": department,
            "manager": {"value": "", "displayName": " "},
        },
    }


def by_user_name(api, user_name: str):
    query = quote(f'userName eq "{user_name}"', safe="")
    return api.scim("GET", f"/Users?filter={query}", headers=ONELOGIN)


def members(api, group_id: str) -> set[str]:
    with api.agent.store.read() as tx:
        return set(tx.groups.member_ids(group_id))


def test_onelogin_initial_connection(api):
    r = by_user_name(api, "onelogin-connection-test-8c1f@example.invalid")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    assert (r.get_json()["totalResults"], r.get_json()["Resources"]) == (0, [])


def test_onelogin_user_lifecycle(api):
    # Provisioning: look the user up, then create it from the template.
    assert by_user_name(api, "ada@example.com").get_json()["totalResults"] == 0
    r = api.scim("POST", "/Users", onelogin_user("ada@example.com"), ONELOGIN)
    assert r.status_code == 201, r.get_json()
    assert r.headers["Content-Type"] == "application/json"
    uid = r.get_json()["id"]
    with api.agent.store.read() as tx:
        stored = tx.users.get(uid).resource
    assert stored["name"] == {"familyName": "Lovelace", "givenName": "Ada"}
    assert "manager" not in stored.get(ENTERPRISE, {})  # an empty manager id is no manager
    assert api.admin("GET", "/seats").get_json()["consumed"] == 1

    # Get User by ID.
    r = api.scim("GET", f"/Users/{uid}", headers=ONELOGIN)
    assert r.status_code == 200
    assert r.get_json()["userName"] == "ada@example.com"

    # Update User: the template again, with the changed parameters.
    r = api.scim(
        "PUT",
        f"/Users/{uid}",
        onelogin_user("ada@example.com", title="Analyst", department="Engines"),
        ONELOGIN,
    )
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["title"] == "Analyst"
    assert r.get_json()[ENTERPRISE]["department"] == "Engines"

    # "Suspend" when the user is deleted in OneLogin: active false.
    suspend = {**onelogin_user("ada@example.com", "Analyst", "Engines"), "active": False}
    r = api.scim("PUT", f"/Users/{uid}", suspend, ONELOGIN)
    assert r.status_code == 200
    assert r.get_json()["active"] is False
    assert api.admin("GET", "/seats").get_json()["consumed"] == 0

    # "Delete".
    assert api.scim("DELETE", f"/Users/{uid}", headers=ONELOGIN).status_code == 204
    assert by_user_name(api, "ada@example.com").get_json()["totalResults"] == 0

    # Get Users lists what is left.
    r = api.scim("GET", "/Users", headers=ONELOGIN)
    assert (r.status_code, r.get_json()["totalResults"]) == (200, 0)


def test_onelogin_emails_as_one_object(api):
    """OneLogin has been seen sending ``emails`` as a single object: kept as a one-item list."""
    body = onelogin_user("grace@example.com")
    body["emails"] = {"value": "grace@example.com", "type": "work", "primary": True}
    r = api.scim("POST", "/Users", body, ONELOGIN)
    assert r.status_code == 201, r.get_json()
    assert r.get_json()["emails"] == [
        {"value": "grace@example.com", "type": "work", "primary": True}
    ]
    assert by_user_name(api, "grace@example.com").get_json()["totalResults"] == 1


def test_onelogin_groups(api):
    ada = api.scim("POST", "/Users", onelogin_user("ada@example.com"), ONELOGIN).get_json()["id"]
    bob = api.scim("POST", "/Users", onelogin_user("bob@example.com"), ONELOGIN).get_json()["id"]

    # Get Groups, then Create Group.
    r = api.scim("GET", "/Groups", headers=ONELOGIN)
    assert (r.status_code, r.get_json()["totalResults"]) == (200, 0)
    r = api.scim("POST", "/Groups", {"schemas": [GROUP], "displayName": "Engineers"}, ONELOGIN)
    assert r.status_code == 201, r.get_json()
    gid = r.get_json()["id"]

    # Patch Group: members in and out.
    add = {
        "schemas": [PATCH],
        "Operations": [{"op": "add", "path": "members", "value": [{"value": ada}, {"value": bob}]}],
    }
    assert api.scim("PATCH", f"/Groups/{gid}", add, ONELOGIN).status_code in (200, 204)
    assert members(api, gid) == {ada, bob}
    remove = {
        "schemas": [PATCH],
        "Operations": [{"op": "remove", "path": f'members[value eq "{bob}"]'}],
    }
    assert api.scim("PATCH", f"/Groups/{gid}", remove, ONELOGIN).status_code in (200, 204)
    assert members(api, gid) == {ada}
    r = api.scim("GET", "/Groups", headers=ONELOGIN)
    assert [g["displayName"] for g in r.get_json()["Resources"]] == ["Engineers"]
