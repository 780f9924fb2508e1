"""Okta's provisioning request sequence replayed over HTTP, as Okta's "SCIM 2.0 protocol
reference" and "Build a SCIM provisioning integration" guides document it (bodies, query strings,
``groups: []``, the placeholder ``password``, no-path PATCH for active and group rename).

Each step checks the response and what is stored.
"""

from __future__ import annotations

from urllib.parse import quote

from sqlalchemy import select

from agent.storage.tables import users

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
SEAT = "urn:ietf:params:scim:schemas:extension:seatagent:2.0:User"
OKTA = {"User-Agent": "Okta SCIM Client 1.0.0", "Accept": "application/scim+json"}


def okta_user(user_name: str, given: str, family: str, external_id: str) -> dict:
    """POST /Users as Okta sends it (profile mapping defaults)."""
    return {
        "schemas": [USER],
        "userName": user_name,
        "name": {"givenName": given, "familyName": family},
        "emails": [{"primary": True, "value": user_name, "type": "work"}],
        "displayName": f"{given} {family}",
        "locale": "en-US",
        "externalId": external_id,
        "groups": [],
        "password": "1mz050nq",
        "active": True,
    }


def okta_filter(attr: str, value: str) -> str:
    return quote(f'{attr} eq "{value}"', safe="")


def stored_user(api, user_id: str):
    with api.agent.store.read() as tx:
        return tx.users.get(user_id)


def stored_members(api, group_id: str) -> set[str]:
    with api.agent.store.read() as tx:
        return set(tx.groups.member_ids(group_id))


def test_okta_user_lifecycle(api):
    # 1. Does the user exist? Okta asks by userName with startIndex/count.
    path = f"/Users?filter={okta_filter('userName', 'test.user@okta.local')}&startIndex=1&count=100"
    r = api.scim("GET", path, headers=OKTA)
    assert r.status_code == 200
    assert r.get_json() == {
        "schemas": [LIST],
        "totalResults": 0,
        "startIndex": 1,
        "itemsPerPage": 0,
        "Resources": [],
    }

    # 2. Create it.
    r = api.scim(
        "POST",
        "/Users",
        okta_user("test.user@okta.local", "Test", "User", "00ujl29u0le5T6Aj10h7"),
        OKTA,
    )
    assert r.status_code == 201
    created = r.get_json()
    uid = created["id"]
    assert created["userName"] == "test.user@okta.local"
    assert created["active"] is True
    assert "password" not in created and "groups" not in created
    record = stored_user(api, uid)
    assert record.resource == {
        "userName": "test.user@okta.local",
        "name": {"givenName": "Test", "familyName": "User"},
        "emails": [{"primary": True, "value": "test.user@okta.local", "type": "work"}],
        "displayName": "Test User",
        "locale": "en-US",
        "externalId": "00ujl29u0le5T6Aj10h7",
        "active": True,
    }
    assert record.seat.license_state == "licensed"
    with api.agent.store.read() as tx:
        raw = tx.conn.execute(select(users.c.resource).where(users.c.id == uid)).scalar_one()
    assert "1mz050nq" not in raw

    # 3. The same query now finds it, and Okta reads it by id.
    r = api.scim("GET", path, headers=OKTA)
    found = r.get_json()
    assert found["totalResults"] == 1
    assert found["Resources"][0]["id"] == uid
    r = api.scim("GET", f"/Users/{uid}", headers=OKTA)
    assert r.status_code == 200
    assert r.get_json() == created

    # 4. Profile update: Okta PUTs the whole user (GET, change, PUT back).
    body = okta_user("test.user@okta.local", "Another", "User", "00ujl29u0le5T6Aj10h7")
    body["id"] = uid
    body["meta"] = created["meta"]
    body["name"]["middleName"] = "M"
    body["emails"][0]["value"] = "another.user@okta.local"
    r = api.scim("PUT", f"/Users/{uid}", body, OKTA)
    assert r.status_code == 200
    assert r.get_json()["name"] == {"givenName": "Another", "familyName": "User", "middleName": "M"}
    assert r.get_json()["displayName"] == "Another User"
    record = stored_user(api, uid)
    assert record.version == 2
    assert record.resource["emails"] == [
        {"primary": True, "value": "another.user@okta.local", "type": "work"}
    ]
    assert "password" not in record.resource and "id" not in record.resource

    # 5. Deactivate: PATCH without a path.
    deactivate = {"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": False}}]}
    r = api.scim("PATCH", f"/Users/{uid}", deactivate, OKTA)
    assert r.status_code == 200
    assert r.get_json()["active"] is False
    assert r.get_json()[SEAT]["licenseState"] == "inactive"
    record = stored_user(api, uid)
    assert record.resource["active"] is False
    assert record.seat.holds_seat is False
    assert api.scim("GET", "/Users?filter=active eq false").get_json()["totalResults"] == 1
    # Okta still finds the deactivated user by userName (re-assignment reactivates it).
    assert api.scim("GET", path, headers=OKTA).get_json()["Resources"][0]["active"] is False

    # 6. Reactivate.
    reactivate = {"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": True}}]}
    r = api.scim("PATCH", f"/Users/{uid}", reactivate, OKTA)
    assert r.status_code == 200
    assert r.get_json()["active"] is True
    record = stored_user(api, uid)
    assert record.resource["active"] is True
    assert record.seat.license_state == "licensed"
    # Name and e-mail survived both PATCHes.
    assert record.resource["name"]["givenName"] == "Another"
    assert record.version == 4


def test_okta_group_push(api):
    u1 = api.scim("POST", "/Users", okta_user("a@okta.local", "A", "One", "00u1")).get_json()["id"]
    u2 = api.scim("POST", "/Users", okta_user("b@okta.local", "B", "Two", "00u2")).get_json()["id"]
    u3 = api.scim("POST", "/Users", okta_user("c@okta.local", "C", "Three", "00u3")).get_json()[
        "id"
    ]

    # 1. Does the group exist?
    query = f"/Groups?filter={okta_filter('displayName', 'Test SCIMv2')}&startIndex=1&count=100"
    r = api.scim("GET", query, headers=OKTA)
    assert r.get_json()["totalResults"] == 0

    # 2. Create it with its members.
    r = api.scim(
        "POST",
        "/Groups",
        {
            "schemas": [GROUP],
            "displayName": "Test SCIMv2",
            "members": [
                {"value": u1, "display": "a@okta.local"},
                {"value": u2, "display": "b@okta.local"},
            ],
        },
        OKTA,
    )
    assert r.status_code == 201
    gid = r.get_json()["id"]
    assert {m["value"] for m in r.get_json()["members"]} == {u1, u2}
    assert stored_members(api, gid) == {u1, u2}
    found = api.scim("GET", query, headers=OKTA).get_json()
    assert [g["id"] for g in found["Resources"]] == [gid]

    # 3. Rename: Okta sends the id along with the new name, without a path.
    rename = {
        "schemas": [PATCH],
        "Operations": [
            {"op": "replace", "value": {"id": gid, "displayName": "Test SCIMv2 Renamed"}}
        ],
    }
    r = api.scim("PATCH", f"/Groups/{gid}", rename, OKTA)
    assert r.status_code == 204
    with api.agent.store.read() as tx:
        group = tx.groups.get(gid, with_members=False)
    assert group.resource == {"displayName": "Test SCIMv2 Renamed"}
    assert stored_members(api, gid) == {u1, u2}
    assert api.scim("GET", query, headers=OKTA).get_json()["totalResults"] == 0
    user = api.scim("GET", f"/Users/{u1}").get_json()
    assert user["groups"][0]["display"] == "Test SCIMv2 Renamed"

    # 4. Add a member.
    add = {
        "schemas": [PATCH],
        "Operations": [
            {"op": "add", "path": "members", "value": [{"value": u3, "display": "c@okta.local"}]}
        ],
    }
    assert api.scim("PATCH", f"/Groups/{gid}", add, OKTA).status_code == 204
    assert stored_members(api, gid) == {u1, u2, u3}

    # 5. Remove one member by value filter.
    remove = {
        "schemas": [PATCH],
        "Operations": [{"op": "remove", "path": f'members[value eq "{u1}"]'}],
    }
    assert api.scim("PATCH", f"/Groups/{gid}", remove, OKTA).status_code == 204
    assert stored_members(api, gid) == {u2, u3}
    members = api.scim("GET", f"/Groups/{gid}", headers=OKTA).get_json()["members"]
    assert {m["value"] for m in members} == {u2, u3}
    assert "groups" not in api.scim("GET", f"/Users/{u1}").get_json()

    # 6. Okta's "replace all members" form (no path, members inside the value).
    replace_all = {
        "schemas": [PATCH],
        "Operations": [{"op": "replace", "value": {"members": [{"value": u1}]}}],
    }
    assert api.scim("PATCH", f"/Groups/{gid}", replace_all, OKTA).status_code == 204
    assert stored_members(api, gid) == {u1}

    # 7. Delete the group: the users stay, the memberships go.
    assert api.scim("DELETE", f"/Groups/{gid}", headers=OKTA).status_code == 204
    assert api.scim("GET", f"/Groups/{gid}").status_code == 404
    assert stored_members(api, gid) == set()
    assert api.scim("GET", "/Users").get_json()["totalResults"] == 3
    assert "groups" not in api.scim("GET", f"/Users/{u1}").get_json()


def test_okta_import_paging(api):
    """Okta's import reads every user with startIndex/count pages until totalResults."""
    ids = {
        api.scim(
            "POST", "/Users", okta_user(f"u{i}@okta.local", "U", str(i), f"00u{i}")
        ).get_json()["id"]
        for i in range(5)
    }
    seen: list[str] = []
    start = 1
    while True:
        page = api.scim("GET", f"/Users?startIndex={start}&count=2", headers=OKTA).get_json()
        seen.extend(u["id"] for u in page["Resources"])
        start += page["itemsPerPage"]
        if start > page["totalResults"]:
            break
    assert sorted(seen) == sorted(ids)
    assert len(seen) == 5
