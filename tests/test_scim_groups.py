"""SCIM /Groups through real HTTP (RFC 7643 §4.2, RFC 7644 §3), checked against what is stored."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from agent.storage.records import SeatState
from agent.storage.tables import group_members, groups

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


def patch(*ops: dict) -> dict:
    return {"schemas": [PATCH], "Operations": list(ops)}


def create_user(api, user_name: str, **extra) -> str:
    r = api.scim("POST", "/Users", {"schemas": [USER], "userName": user_name, **extra})
    assert r.status_code == 201, r.get_json()
    return r.get_json()["id"]


def create_group(api, display_name: str, members: list[str] = (), **extra) -> dict:
    body = {
        "schemas": [GROUP],
        "displayName": display_name,
        "members": [{"value": m} for m in members],
        **extra,
    }
    r = api.scim("POST", "/Groups", body)
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def member_rows(api, group_id: str) -> set[str]:
    with api.agent.store.read() as tx:
        return set(tx.groups.member_ids(group_id))


def stored_group(api, group_id: str):
    with api.agent.store.read() as tx:
        return tx.groups.get(group_id, with_members=False)


def group_count(api) -> int:
    with api.agent.store.read() as tx:
        return tx.conn.execute(select(func.count()).select_from(groups)).scalar_one()


def assert_scim_error(r, status: int, scim_type: str | None = None) -> dict:
    assert r.status_code == status, r.get_data(as_text=True)
    assert r.mimetype == "application/scim+json"
    body = r.get_json()
    assert body["schemas"] == [ERROR]
    assert body["status"] == str(status)
    if scim_type is not None:
        assert body["scimType"] == scim_type
    return body


def test_create_group_with_members(api):
    alice = create_user(api, "alice@example.com", displayName="Alice A")
    bob = create_user(api, "bob@example.com")
    r = api.scim(
        "POST",
        "/Groups",
        {
            "schemas": [GROUP],
            "displayName": "Engineering",
            "externalId": "ext-eng",
            "members": [{"value": alice, "display": "whatever"}, {"value": bob}],
        },
    )
    assert r.status_code == 201
    body = r.get_json()
    gid = body["id"]
    assert r.headers["Location"] == body["meta"]["location"]
    assert body["meta"]["location"] == f"http://localhost/scim/v2/Groups/{gid}"
    assert r.headers["ETag"] == body["meta"]["version"] == 'W/"1"'
    assert body["schemas"] == [GROUP]
    assert body["displayName"] == "Engineering"
    assert body["externalId"] == "ext-eng"
    # members.display is returned "request" (/Schemas): not in the default representation.
    assert body["members"] == [
        {"value": alice, "$ref": f"http://localhost/scim/v2/Users/{alice}", "type": "User"},
        {"value": bob, "$ref": f"http://localhost/scim/v2/Users/{bob}", "type": "User"},
    ]
    assert member_rows(api, gid) == {alice, bob}
    assert stored_group(api, gid).resource == {
        "displayName": "Engineering",
        "externalId": "ext-eng",
    }
    assert api.scim("GET", f"/Groups/{gid}").get_json() == body
    # Asked for, display is the member's displayName or userName, never what the client sent.
    asked = api.scim("GET", f"/Groups/{gid}?attributes=members.value,members.display").get_json()
    assert asked["members"] == [
        {"value": alice, "display": "Alice A"},
        {"value": bob, "display": "bob@example.com"},
    ]
    listed = api.scim("GET", "/Groups?attributes=members.display").get_json()["Resources"]
    assert listed[0]["members"] == [{"display": "Alice A"}, {"display": "bob@example.com"}]


def test_display_name_is_unique_case_insensitively(api):
    first = create_group(api, "Sales")
    assert_scim_error(api.scim("POST", "/Groups", {"displayName": "SALES"}), 409, "uniqueness")
    assert group_count(api) == 1

    other = create_group(api, "Marketing")["id"]
    r = api.scim(
        "PATCH",
        f"/Groups/{other}",
        patch({"op": "replace", "path": "displayName", "value": "sales"}),
    )
    assert_scim_error(r, 409, "uniqueness")
    r = api.scim("PUT", f"/Groups/{other}", {"schemas": [GROUP], "displayName": "sAlEs"})
    assert_scim_error(r, 409, "uniqueness")
    record = stored_group(api, other)
    assert (record.resource["displayName"], record.version) == ("Marketing", 1)

    r = api.scim("PUT", f"/Groups/{first['id']}", {"schemas": [GROUP], "displayName": "SALES"})
    assert r.status_code == 200
    assert stored_group(api, first["id"]).resource["displayName"] == "SALES"


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("GET", None),
        ("PUT", {"schemas": [GROUP], "displayName": "X"}),
        ("PATCH", patch({"op": "replace", "path": "displayName", "value": "X"})),
        ("DELETE", None),
    ],
)
def test_unknown_group_id_is_404_with_scim_error(api, method, body):
    create_group(api, "Existing")
    err = assert_scim_error(api.scim(method, "/Groups/no-such-group", body), 404)
    assert "no-such-group" in err["detail"]
    assert group_count(api) == 1
    assert (
        stored_group(api, api.scim("GET", "/Groups").get_json()["Resources"][0]["id"]).version == 1
    )


def test_missing_display_name_and_unknown_members_are_400(api):
    assert_scim_error(api.scim("POST", "/Groups", {"schemas": [GROUP]}), 400, "invalidValue")
    r = api.scim("POST", "/Groups", {"displayName": "Ghosts", "members": [{"value": "nobody"}]})
    err = assert_scim_error(r, 400, "invalidValue")
    assert "nobody" in err["detail"]
    assert group_count(api) == 0

    uid = create_user(api, "real@example.com")
    gid = create_group(api, "Real", [uid])["id"]
    r = api.scim(
        "PATCH",
        f"/Groups/{gid}",
        patch(
            {"op": "replace", "path": "displayName", "value": "Renamed"},
            {"op": "add", "path": "members", "value": [{"value": "nobody"}]},
        ),
    )
    assert_scim_error(r, 400, "invalidValue")
    record = stored_group(api, gid)
    assert (record.resource["displayName"], record.version) == ("Real", 1)
    assert member_rows(api, gid) == {uid}


def test_group_string_attributes_refuse_other_types(api):
    """RFC 7643 §2.3.1: no coercion of numbers to strings (POST, PUT, PATCH)."""
    for body in ({"displayName": 5}, {"displayName": "G", "externalId": 7}):
        assert_scim_error(api.scim("POST", "/Groups", body), 400, "invalidValue")
    assert group_count(api) == 0
    gid = create_group(api, "Typed")["id"]
    r = api.scim("PUT", f"/Groups/{gid}", {"schemas": [GROUP], "displayName": True})
    assert_scim_error(r, 400, "invalidValue")
    for operation in (
        {"op": "replace", "path": "displayName", "value": 5},
        {"op": "replace", "value": {"externalId": 1.5}},
    ):
        assert_scim_error(api.scim("PATCH", f"/Groups/{gid}", patch(operation)), 400)
    assert stored_group(api, gid).resource == {"displayName": "Typed"}
    assert stored_group(api, gid).version == 1
    r = api.scim(
        "PATCH", f"/Groups/{gid}", patch({"op": "replace", "path": "fooBar", "value": "x"})
    )
    assert_scim_error(r, 400, "invalidPath")


def test_patch_group_answers_204_with_etag_and_get_shows_the_change(api):
    a = create_user(api, "a@example.com")
    b = create_user(api, "b@example.com")
    gid = create_group(api, "Ops", [a])["id"]
    r = api.scim(
        "PATCH",
        f"/Groups/{gid}",
        patch({"op": "add", "path": "members", "value": [{"value": b}]}),
        {"If-Match": 'W/"1"'},
    )
    assert r.status_code == 204
    assert r.get_data() == b""
    assert r.headers["ETag"] == 'W/"2"'
    assert member_rows(api, gid) == {a, b}
    got = api.scim("GET", f"/Groups/{gid}")
    assert got.headers["ETag"] == 'W/"2"'
    assert [m["value"] for m in got.get_json()["members"]] == [a, b]


def test_if_match_mismatch_on_groups_is_412_and_changes_nothing(api):
    a = create_user(api, "a@example.com")
    gid = create_group(api, "Locked", [a])["id"]
    stale = {"If-Match": 'W/"99"'}
    r = api.scim("PATCH", f"/Groups/{gid}", patch({"op": "remove", "path": "members"}), stale)
    assert_scim_error(r, 412)
    r = api.scim("PUT", f"/Groups/{gid}", {"displayName": "Other", "members": []}, stale)
    assert_scim_error(r, 412)
    assert_scim_error(api.scim("DELETE", f"/Groups/{gid}", headers=stale), 412)
    record = stored_group(api, gid)
    assert (record.resource["displayName"], record.version) == ("Locked", 1)
    assert member_rows(api, gid) == {a}


def test_put_group_replaces_members_and_name(api):
    a, b, c = (create_user(api, f"{n}@example.com") for n in "abc")
    gid = create_group(api, "Before", [a, b])["id"]
    r = api.scim(
        "PUT",
        f"/Groups/{gid}",
        {"schemas": [GROUP], "displayName": "After", "members": [{"value": b}, {"value": c}]},
    )
    assert r.status_code == 200
    assert r.get_json()["displayName"] == "After"
    assert {m["value"] for m in r.get_json()["members"]} == {b, c}
    assert member_rows(api, gid) == {b, c}
    assert stored_group(api, gid).resource == {"displayName": "After"}


def test_excluded_attributes_members_on_list_and_get(api):
    uid = create_user(api, "m@example.com")
    gid = create_group(api, "Big", [uid])["id"]
    listed = api.scim("GET", "/Groups?excludedAttributes=members").get_json()
    assert listed["totalResults"] == 1
    assert "members" not in listed["Resources"][0]
    assert listed["Resources"][0]["displayName"] == "Big"
    one = api.scim("GET", f"/Groups/{gid}?excludedAttributes=members").get_json()
    assert "members" not in one
    assert (one["id"], one["displayName"]) == (gid, "Big")
    only = api.scim("GET", f"/Groups/{gid}?attributes=displayName").get_json()
    assert set(only) == {"schemas", "id", "meta", "displayName"}
    full = api.scim("GET", f"/Groups/{gid}?attributes=members").get_json()
    assert [m["value"] for m in full["members"]] == [uid]


def test_excluding_a_member_sub_attribute_keeps_the_members(api):
    """RFC 7644 §3.4.2.5: excludedAttributes=members.value drops that sub-attribute only."""
    uid = create_user(api, "m@example.com")
    gid = create_group(api, "Big", [uid])["id"]
    ref = f"http://localhost/scim/v2/Users/{uid}"
    one = api.scim("GET", f"/Groups/{gid}?excludedAttributes=members.value").get_json()
    assert one["members"] == [{"$ref": ref, "type": "User"}]
    listed = api.scim("GET", "/Groups?excludedAttributes=members.value,members.type").get_json()
    assert listed["Resources"][0]["members"] == [{"$ref": ref}]
    urn = api.scim("GET", f"/Groups/{gid}?excludedAttributes={GROUP}:members").get_json()
    assert "members" not in urn


def test_group_filters(api):
    create_group(api, "Alpha Team")
    beta = create_group(api, "Beta Team", externalId="b-1")["id"]
    found = api.scim("GET", '/Groups?filter=displayName eq "beta team"').get_json()
    assert [g["id"] for g in found["Resources"]] == [beta]
    found = api.scim("GET", '/Groups?filter=externalId eq "b-1"').get_json()
    assert [g["id"] for g in found["Resources"]] == [beta]
    assert api.scim("GET", '/Groups?filter=displayName sw "Team"').get_json()["totalResults"] == 0
    assert api.scim("GET", '/Groups?filter=displayName ew "Team"').get_json()["totalResults"] == 2
    err = assert_scim_error(api.scim("GET", '/Groups?filter=userName eq "x"'), 400, "invalidFilter")
    assert "userName" in err["detail"]


def test_delete_group_removes_it_and_its_member_rows(api):
    uid = create_user(api, "g@example.com")
    gid = create_group(api, "Doomed", [uid])["id"]
    r = api.scim("DELETE", f"/Groups/{gid}")
    assert r.status_code == 204
    assert_scim_error(api.scim("GET", f"/Groups/{gid}"), 404)
    assert stored_group(api, gid) is None
    assert member_rows(api, gid) == set()
    user = api.scim("GET", f"/Users/{uid}").get_json()
    assert "groups" not in user
    assert api.scim("GET", "/Groups").get_json()["totalResults"] == 0


def test_adding_one_member_to_a_group_of_2000(api, clock):
    """Membership rows make one add cost the same at any group size; GET still lists all."""
    ids = [str(uuid.uuid4()) for _ in range(2000)]
    gid = create_group(api, "Everyone")["id"]
    with api.agent.store.write() as tx:
        now = clock()
        for i, uid in enumerate(ids):
            tx.users.insert(
                uid, {"userName": f"bulk{i:04d}@example.com", "active": True}, SeatState(), now
            )
        assert tx.groups.add_members(gid, ids) == ids
    newcomer = create_user(api, "newcomer@example.com")

    r = api.scim(
        "PATCH",
        f"/Groups/{gid}",
        patch({"op": "add", "path": "members", "value": [{"value": newcomer}, {"value": ids[5]}]}),
    )
    assert r.status_code == 204
    with api.agent.store.read() as tx:
        rows = tx.conn.execute(
            select(func.count()).select_from(group_members).where(group_members.c.group_id == gid)
        ).scalar_one()
    assert rows == 2001

    body = api.scim("GET", f"/Groups/{gid}").get_json()
    values = [m["value"] for m in body["members"]]
    assert len(values) == len(set(values)) == 2001
    assert set(values) == {*ids, newcomer}
    assert values[-1] == newcomer

    r = api.scim(
        "PATCH", f"/Groups/{gid}", patch({"op": "remove", "path": f'members[value eq "{ids[0]}"]'})
    )
    assert r.status_code == 204
    assert len(member_rows(api, gid)) == 2000
    assert ids[0] not in member_rows(api, gid)
    listed = api.scim("GET", '/Groups?filter=displayName eq "Everyone"').get_json()
    assert len(listed["Resources"][0]["members"]) == 2000


def test_names_with_a_quote_are_found_by_the_idps_lookup(api):
    """Entra and Okta look a group or user up by ``eq`` before they create it; a name with a
    double quote is sent escaped (``\\"``) in the filter and must be found, or the IdP would
    create it again and again meet a 409."""
    from urllib.parse import quote

    r = api.scim("POST", "/Groups", {"schemas": [GROUP], "displayName": 'O"Brien Team'})
    assert r.status_code == 201, r.get_json()
    r = api.scim("POST", "/Users", {"schemas": [USER], "userName": 'o"brien@example.com'})
    assert r.status_code == 201, r.get_json()
    found = api.scim("GET", "/Groups?filter=" + quote(r'displayName eq "O\"Brien Team"'))
    assert found.status_code == 200 and found.get_json()["totalResults"] == 1
    found = api.scim("GET", "/Users?filter=" + quote(r'userName eq "O\"BRIEN@example.com"'))
    assert found.status_code == 200 and found.get_json()["totalResults"] == 1
    searched = api.scim(
        "POST",
        "/Users/.search",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter": r'userName co "\"brien"',
        },
    )
    assert searched.status_code == 200 and searched.get_json()["totalResults"] == 1


def test_deleting_a_member_gives_its_groups_a_new_version(api):
    """A group's member list changes when a member user is deleted (its membership rows go
    with it): the group's ETag must change too, or a client holding the old one would see a
    stale group as current and an If-Match with it would still pass (found by trying the
    product from outside)."""
    ann = create_user(api, "ann@example.com")
    bob = create_user(api, "bob@example.com")
    team = create_group(api, "Team", [ann, bob])
    other = create_group(api, "Other", [bob])
    alone = create_group(api, "Alone", [ann])
    before = {g["id"]: api.scim("GET", f"/Groups/{g['id']}") for g in (team, other, alone)}
    assert api.scim("DELETE", f"/Users/{bob}").status_code == 204
    for g, changed in ((team, True), (other, True), (alone, False)):
        now = api.scim("GET", f"/Groups/{g['id']}")
        was = before[g["id"]]
        assert (now.headers["ETag"] != was.headers["ETag"]) is changed, g["displayName"]
        assert (now.get_json()["meta"]["version"] != was.get_json()["meta"]["version"]) is changed
    assert [m["value"] for m in api.scim("GET", f"/Groups/{team['id']}").get_json()["members"]] == [
        ann
    ]
    stale = api.scim(
        "PUT",
        f"/Groups/{team['id']}",
        {"schemas": [GROUP], "displayName": "Team", "members": [{"value": ann}]},
        headers={"If-Match": before[team["id"]].headers["ETag"]},
    )
    assert stale.status_code == 412
