"""SCIM /Users through real HTTP (RFC 7644 §3.3-§3.6, §3.14), checked against what is stored."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from agent.storage.tables import group_members, user_values, users

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
SEAT = "urn:ietf:params:scim:schemas:extension:seatagent:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


def user(user_name: str, **extra) -> dict:
    return {"schemas": [USER], "userName": user_name, **extra}


def patch(*ops: dict) -> dict:
    return {"schemas": [PATCH], "Operations": list(ops)}


def create(api, user_name: str, **extra) -> dict:
    r = api.scim("POST", "/Users", user(user_name, **extra))
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def stored(api, user_id: str):
    with api.agent.store.read() as tx:
        return tx.users.get(user_id)


def raw_row(api, user_id: str):
    with api.agent.store.read() as tx:
        return tx.conn.execute(select(users).where(users.c.id == user_id)).first()


def user_count(api) -> int:
    with api.agent.store.read() as tx:
        return tx.conn.execute(select(func.count()).select_from(users)).scalar_one()


def assert_scim_error(r, status: int, scim_type: str | None = None) -> dict:
    assert r.status_code == status, r.get_data(as_text=True)
    assert r.mimetype == "application/scim+json"
    body = r.get_json()
    assert body["schemas"] == [ERROR]
    assert body["status"] == str(status)
    assert body["detail"]
    if scim_type is not None:
        assert body["scimType"] == scim_type
    return body


# -- create and read ------------------------------------------------------------------------


def test_create_stores_the_user_and_returns_location_and_etag(api):
    r = api.scim(
        "POST",
        "/Users",
        user(
            "bjensen@example.com",
            name={"givenName": "Barbara", "familyName": "Jensen"},
            emails=[{"value": "bjensen@example.com", "type": "work", "primary": True}],
            externalId="ext-1",
            **{ENTERPRISE: {"department": "R&D", "employeeNumber": "701984"}},
        ),
    )
    assert r.status_code == 201
    body = r.get_json()
    assert r.headers["Location"] == body["meta"]["location"]
    assert body["meta"]["location"] == f"http://localhost/scim/v2/Users/{body['id']}"
    assert r.headers["ETag"] == body["meta"]["version"] == 'W/"1"'
    assert body["meta"]["resourceType"] == "User"
    assert body["schemas"] == [USER, ENTERPRISE, SEAT]
    assert body["active"] is True

    record = stored(api, body["id"])
    assert record.resource == {
        "userName": "bjensen@example.com",
        "name": {"givenName": "Barbara", "familyName": "Jensen"},
        "emails": [{"value": "bjensen@example.com", "type": "work", "primary": True}],
        "externalId": "ext-1",
        ENTERPRISE: {"department": "R&D", "employeeNumber": "701984"},
        "active": True,
    }
    row = raw_row(api, body["id"])
    assert (row.user_name_ci, row.external_id, row.department) == (
        "bjensen@example.com",
        "ext-1",
        "R&D",
    )
    with api.agent.store.read() as tx:
        values = tx.conn.execute(
            select(user_values.c.attr, user_values.c.type, user_values.c.value_ci).where(
                user_values.c.user_id == body["id"]
            )
        ).all()
    assert [tuple(v) for v in values] == [("emails", "work", "bjensen@example.com")]

    got = api.scim("GET", f"/Users/{body['id']}")
    assert got.status_code == 200
    assert got.get_json() == body
    assert got.headers["ETag"] == 'W/"1"'


def test_password_is_accepted_but_never_stored_or_returned(api):
    secret = "S3cr3t-Pa55word!"
    body = create(api, "pw@example.com", password=secret, groups=[])
    uid = body["id"]
    assert "password" not in body
    r = api.scim("PUT", f"/Users/{uid}", user("pw@example.com", password=secret + "2"))
    assert r.status_code == 200
    r = api.scim(
        "PATCH", f"/Users/{uid}", patch({"op": "replace", "value": {"password": secret + "3"}})
    )
    assert r.status_code == 200
    r = api.scim(
        "PATCH", f"/Users/{uid}", patch({"op": "replace", "path": "password", "value": "x"})
    )
    assert r.status_code == 200
    assert "password" not in r.get_json()
    raw = raw_row(api, uid).resource
    assert secret not in raw
    assert "password" not in json.loads(raw)
    assert "password" not in api.scim("GET", f"/Users/{uid}").get_json()


def test_user_name_is_unique_case_insensitively(api):
    first = create(api, "Bob@Example.com")
    r = api.scim("POST", "/Users", user("bob@EXAMPLE.COM"))
    assert_scim_error(r, 409, "uniqueness")
    assert user_count(api) == 1

    other = create(api, "alice@example.com")
    r = api.scim("PUT", f"/Users/{other['id']}", user("BOB@example.com"))
    assert_scim_error(r, 409, "uniqueness")
    r = api.scim(
        "PATCH",
        f"/Users/{other['id']}",
        patch({"op": "replace", "path": "userName", "value": "bob@example.COM"}),
    )
    assert_scim_error(r, 409, "uniqueness")
    assert stored(api, other["id"]).resource["userName"] == "alice@example.com"
    assert stored(api, other["id"]).version == 1

    # Changing only the case of one's own userName is not a conflict.
    r = api.scim("PUT", f"/Users/{first['id']}", user("BOB@example.com"))
    assert r.status_code == 200
    assert stored(api, first["id"]).resource["userName"] == "BOB@example.com"


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("GET", None),
        ("PUT", user("x@example.com")),
        ("PATCH", patch({"op": "replace", "path": "active", "value": False})),
        ("DELETE", None),
    ],
)
def test_unknown_user_id_is_404_with_scim_error(api, method, body):
    create(api, "someone@example.com")
    r = api.scim(method, "/Users/00000000-0000-0000-0000-000000000000", body)
    err = assert_scim_error(r, 404)
    assert "00000000-0000-0000-0000-000000000000" in err["detail"]
    assert user_count(api) == 1


@pytest.mark.parametrize(
    ("body", "detail_mentions"),
    [
        (user("a@example.com", emails="x"), "emails"),
        (user("a@example.com", active="maybe"), "active"),
        ({"schemas": [USER], "displayName": "No Name"}, "userName"),
        (user("   "), "userName"),
        (user("a@example.com", name="Barbara"), "name"),
        (
            user("a@example.com", emails=[{"value": "a@example.com", "primary": "sometimes"}]),
            "primary",
        ),
    ],
)
def test_wrong_types_are_400_invalid_value_and_create_nothing(api, body, detail_mentions):
    r = api.scim("POST", "/Users", body)
    err = assert_scim_error(r, 400, "invalidValue")
    assert detail_mentions in err["detail"]
    assert user_count(api) == 0


@pytest.mark.parametrize(
    ("attribute", "limit", "extra"),
    [
        ("nickName", 255, lambda v: {"nickName": v}),
        ("locale", 64, lambda v: {"locale": v}),
        ("name.formatted", 512, lambda v: {"name": {"formatted": v}}),
        ("emails.value", 1024, lambda v: {"emails": [{"value": v}]}),
        ("emails.type", 64, lambda v: {"emails": [{"value": "a@example.com", "type": v}]}),
        ("department", 255, lambda v: {ENTERPRISE: {"department": v}}),
    ],
)
def test_values_longer_than_stored_columns_are_400_on_every_database(api, attribute, limit, extra):
    """Filterable attributes live in sized columns: PostgreSQL would refuse a longer value with
    a 500, SQLite would store it; both must answer the same 400 instead."""
    r = api.scim("POST", "/Users", user("long@example.com", **extra("é" * (limit + 1))))
    err = assert_scim_error(r, 400, "invalidValue")
    assert attribute in err["detail"] and str(limit) in err["detail"]
    assert user_count(api) == 0
    r = api.scim("POST", "/Users", user("long@example.com", **extra("é" * limit)))
    assert r.status_code == 201
    uid = r.get_json()["id"]
    r = api.scim("PUT", f"/Users/{uid}", user("long@example.com", **extra("x" * (limit + 1))))
    assert_scim_error(r, 400, "invalidValue")
    assert stored(api, uid).version == 1
    long_name = "u" * 250 + "@example.com"
    assert_scim_error(api.scim("POST", "/Users", user(long_name)), 400, "invalidValue")


def test_wrong_types_in_put_and_patch_change_nothing(api):
    uid = create(api, "t@example.com", displayName="T")["id"]
    r = api.scim("PUT", f"/Users/{uid}", user("t@example.com", active="maybe"))
    assert_scim_error(r, 400, "invalidValue")
    r = api.scim(
        "PATCH", f"/Users/{uid}", patch({"op": "replace", "path": "active", "value": "maybe"})
    )
    assert_scim_error(r, 400, "invalidValue")
    r = api.scim("PATCH", f"/Users/{uid}", patch({"op": "add", "path": "emails", "value": "x"}))
    assert_scim_error(r, 400, "invalidValue")
    record = stored(api, uid)
    assert record.version == 1
    assert record.resource == {"userName": "t@example.com", "displayName": "T", "active": True}


@pytest.mark.parametrize(
    ("extra", "detail_mentions"),
    [
        ({"userName": 123}, "userName"),
        ({"nickName": 5}, "nickName"),
        ({"displayName": True}, "displayName"),
        ({"name": {"givenName": 5}}, "name.givenName"),
        ({"emails": [{"value": 5}]}, "emails.value"),
        ({"emails": [{"value": "a@example.com", "type": 1}]}, "emails.type"),
        ({"roles": [{"value": 1.5}]}, "roles.value"),
        ({ENTERPRISE: {"employeeNumber": 42}}, "employeeNumber"),
        ({ENTERPRISE: {"manager": {"value": 7}}}, "manager.value"),
    ],
)
def test_numbers_and_booleans_are_not_coerced_to_strings(api, extra, detail_mentions):
    """RFC 7643 §2.3.1: string attributes take JSON strings; anything else is 400 invalidValue
    on POST, PUT and PATCH, and nothing is stored."""
    body = {**user("typed@example.com"), **extra}
    err = assert_scim_error(api.scim("POST", "/Users", body), 400, "invalidValue")
    assert detail_mentions in err["detail"]
    assert user_count(api) == 0
    uid = create(api, "typed@example.com")["id"]
    assert_scim_error(api.scim("PUT", f"/Users/{uid}", body), 400, "invalidValue")
    no_path = patch({"op": "replace", "value": extra})
    assert_scim_error(api.scim("PATCH", f"/Users/{uid}", no_path), 400, "invalidValue")
    record = stored(api, uid)
    assert record.version == 1
    assert record.resource == {"userName": "typed@example.com", "active": True}


def test_typed_patch_values_are_refused(api):
    uid = create(api, "typed@example.com", emails=[{"value": "t@example.com", "type": "work"}])[
        "id"
    ]
    for operation in (
        {"op": "replace", "path": "displayName", "value": 5},
        {"op": "add", "path": "emails", "value": [{"value": 5}]},
        {"op": "replace", "path": 'emails[type eq "work"].value', "value": 5},
        {"op": "replace", "path": "name.familyName", "value": False},
        {"op": "replace", "path": f"{ENTERPRISE}:department", "value": 9},
    ):
        r = api.scim("PATCH", f"/Users/{uid}", patch(operation))
        assert_scim_error(r, 400, "invalidValue")
    assert stored(api, uid).version == 1
    # Entra's string booleans for active stay accepted.
    r = api.scim(
        "PATCH", f"/Users/{uid}", patch({"op": "Replace", "path": "active", "value": "False"})
    )
    assert r.status_code == 200
    assert stored(api, uid).resource["active"] is False
    r = api.scim("PUT", f"/Users/{uid}", user("typed@example.com", active="True"))
    assert r.status_code == 200
    assert stored(api, uid).resource["active"] is True


@pytest.mark.parametrize(
    "operation",
    [
        {"op": "replace", "path": "fooBar", "value": "x"},
        {"op": "replace", "path": "name.fooBar", "value": "x"},
        {"op": "replace", "path": f"{USER}:fooBar", "value": "x"},
        {"op": "add", "path": f"{ENTERPRISE}:fooBar", "value": "x"},
        {"op": "replace", "value": {"fooBar": "x", "displayName": "Changed"}},
    ],
)
def test_patch_unknown_attribute_path_is_400_invalid_path(api, operation):
    uid = create(api, "paths@example.com", displayName="P")["id"]
    r = api.scim("PATCH", f"/Users/{uid}", patch(operation))
    assert_scim_error(r, 400, "invalidPath")
    record = stored(api, uid)
    assert record.version == 1
    assert record.resource == {"userName": "paths@example.com", "displayName": "P", "active": True}


def test_patch_read_only_and_foreign_paths_are_accepted_and_ignored(api):
    uid = create(api, "ignored@example.com", displayName="I")["id"]
    r = api.scim(
        "PATCH",
        f"/Users/{uid}",
        patch(
            {"op": "replace", "path": "id", "value": "other"},
            {"op": "replace", "path": "meta.lastModified", "value": "2020-01-01T00:00:00Z"},
            {"op": "add", "path": "groups", "value": [{"value": "g"}]},
            {"op": "replace", "path": f"{SEAT}:licenseState", "value": "free"},
            {
                "op": "add",
                "path": "urn:ietf:params:scim:schemas:extension:acme:2.0:User:badge",
                "value": "B",
            },
            {"op": "replace", "path": "displayName", "value": "J"},
        ),
    )
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["id"] == uid and body["displayName"] == "J"
    assert body[SEAT]["licenseState"] == "licensed"
    record = stored(api, uid)
    assert record.resource == {
        "userName": "ignored@example.com",
        "displayName": "J",
        "active": True,
    }


def test_patch_roles_as_strings_is_stored_like_post(api):
    """docs/okta.md: Okta's "string array" roles arrive as strings on POST and PATCH alike."""
    uid = create(api, "roles@example.com", roles=["Member"])["id"]
    assert stored(api, uid).resource["roles"] == [{"value": "Member"}]
    for operation, expected in (
        (
            {"op": "replace", "path": "roles", "value": ["Assistant", "Viewer"]},
            ["Assistant", "Viewer"],
        ),
        ({"op": "add", "path": "roles", "value": ["Editor"]}, ["Assistant", "Viewer", "Editor"]),
        ({"op": "replace", "value": {"roles": ["Member"]}}, ["Member"]),
    ):
        r = api.scim("PATCH", f"/Users/{uid}", patch(operation))
        assert r.status_code == 200, r.get_json()
        assert [v["value"] for v in stored(api, uid).resource["roles"]] == expected
        assert [v["value"] for v in r.get_json()["roles"]] == expected


def test_schemas_without_the_core_user_schema_is_400(api):
    r = api.scim("POST", "/Users", {"schemas": [ENTERPRISE], "userName": "s@example.com"})
    assert_scim_error(r, 400, "invalidSyntax")
    assert user_count(api) == 0


# -- PUT -------------------------------------------------------------------------------------


def test_put_replaces_every_writable_attribute(api):
    uid = create(
        api,
        "put@example.com",
        nickName="Putty",
        title="Engineer",
        emails=[{"value": "put@example.com", "type": "work"}],
    )["id"]
    r = api.scim(
        "PUT",
        f"/Users/{uid}",
        user("put@example.com", title="Manager", id="ignored", meta={"version": "W/9"}),
    )
    assert r.status_code == 200
    body = r.get_json()
    assert body["id"] == uid
    assert body["title"] == "Manager"
    assert "nickName" not in body and "emails" not in body
    assert r.headers["ETag"] == 'W/"2"'
    record = stored(api, uid)
    assert record.resource == {"userName": "put@example.com", "title": "Manager", "active": True}
    with api.agent.store.read() as tx:
        left = tx.conn.execute(
            select(func.count()).select_from(user_values).where(user_values.c.user_id == uid)
        ).scalar_one()
    assert left == 0


# -- ETags (RFC 7644 §3.14) -------------------------------------------------------------------


def test_if_match_mismatch_is_412_and_changes_nothing(api):
    uid = create(api, "etag@example.com", displayName="Before")["id"]
    stale = {"If-Match": 'W/"7"'}
    r = api.scim("PUT", f"/Users/{uid}", user("etag@example.com", displayName="After"), stale)
    assert_scim_error(r, 412)
    r = api.scim(
        "PATCH",
        f"/Users/{uid}",
        patch({"op": "replace", "path": "displayName", "value": "After"}),
        stale,
    )
    assert_scim_error(r, 412)
    r = api.scim("DELETE", f"/Users/{uid}", headers=stale)
    assert_scim_error(r, 412)
    record = stored(api, uid)
    assert record is not None
    assert record.version == 1
    assert record.resource["displayName"] == "Before"


def test_if_match_with_the_current_etag_is_applied(api):
    r = api.scim("POST", "/Users", user("etag2@example.com", displayName="Before"))
    uid, tag = r.get_json()["id"], r.headers["ETag"]
    r = api.scim(
        "PATCH",
        f"/Users/{uid}",
        patch({"op": "replace", "path": "displayName", "value": "After"}),
        {"If-Match": tag},
    )
    assert r.status_code == 200
    assert r.headers["ETag"] == r.get_json()["meta"]["version"] == 'W/"2"'
    assert stored(api, uid).resource["displayName"] == "After"
    r = api.scim(
        "PUT", f"/Users/{uid}", user("etag2@example.com", displayName="Again"), {"If-Match": tag}
    )
    assert_scim_error(r, 412)
    r = api.scim("DELETE", f"/Users/{uid}", headers={"If-Match": 'W/"2"'})
    assert r.status_code == 204
    assert stored(api, uid) is None


def test_unchanged_patch_keeps_the_version(api):
    uid = create(api, "same@example.com", displayName="Same")["id"]
    r = api.scim(
        "PATCH", f"/Users/{uid}", patch({"op": "replace", "path": "displayName", "value": "Same"})
    )
    assert r.status_code == 200
    assert r.headers["ETag"] == 'W/"1"'
    assert stored(api, uid).version == 1


# -- PATCH results in storage ---------------------------------------------------------------------


def test_patch_remove_active_leaves_it_unassigned(api):
    """RFC 7644 §3.5.2.2: a removed attribute is unassigned; an unassigned ``active`` counts as
    active for seats, but the server must not claim the client sent ``true``."""
    uid = create(api, "rm@example.com", active=False)["id"]
    assert stored(api, uid).seat.license_state == "inactive"
    r = api.scim("PATCH", f"/Users/{uid}", patch({"op": "remove", "path": "active"}))
    assert r.status_code == 200
    assert "active" not in r.get_json()
    record = stored(api, uid)
    assert "active" not in record.resource
    assert record.active is True
    assert raw_row(api, uid).active is True
    assert record.seat.license_state == "licensed"


def test_manager_is_returned_with_its_ref(api):
    boss = create(api, "boss@example.com")["id"]
    uid = create(api, "emp@example.com")["id"]
    r = api.scim(
        "PATCH",
        f"/Users/{uid}",
        patch({"op": "replace", "path": f"{ENTERPRISE}:manager", "value": boss}),
    )
    assert r.status_code == 200
    expected = {"value": boss, "$ref": f"http://localhost/scim/v2/Users/{boss}"}
    assert r.get_json()[ENTERPRISE]["manager"] == expected
    assert api.scim("GET", f"/Users/{uid}").get_json()[ENTERPRISE]["manager"] == expected
    assert stored(api, uid).resource[ENTERPRISE] == {"manager": {"value": boss}}
    assert raw_row(api, uid).manager_id == boss


def test_manager_display_name_is_kept_by_post_put_and_patch_alike(api):
    boss = create(api, "boss@example.com")["id"]
    sent = {"manager": {"value": boss, "displayName": "The Boss", "$ref": "ignored"}}
    uid = create(api, "emp@example.com", **{ENTERPRISE: sent})["id"]
    kept = {"manager": {"value": boss, "displayName": "The Boss"}}
    assert stored(api, uid).resource[ENTERPRISE] == kept
    api.scim("PATCH", f"/Users/{uid}", patch({"op": "remove", "path": f"{ENTERPRISE}:manager"}))
    assert ENTERPRISE not in stored(api, uid).resource
    r = api.scim(
        "PATCH",
        f"/Users/{uid}",
        patch({"op": "add", "path": f"{ENTERPRISE}:manager", "value": sent["manager"]}),
    )
    assert r.status_code == 200
    assert stored(api, uid).resource[ENTERPRISE] == kept
    assert r.get_json()[ENTERPRISE]["manager"]["displayName"] == "The Boss"
    r = api.scim("PUT", f"/Users/{uid}", user("emp@example.com", **{ENTERPRISE: sent}))
    assert r.status_code == 200
    assert stored(api, uid).resource[ENTERPRISE] == kept


# -- deactivation and deletion ------------------------------------------------------------------


def test_deactivated_users_stay_readable_and_filterable(api):
    keep = create(api, "keep@example.com")["id"]
    gone = create(api, "gone@example.com")["id"]
    r = api.scim("PATCH", f"/Users/{gone}", patch({"op": "replace", "value": {"active": False}}))
    assert r.status_code == 200
    assert r.get_json()["active"] is False
    assert r.get_json()[SEAT]["licenseState"] == "inactive"

    got = api.scim("GET", f"/Users/{gone}")
    assert got.status_code == 200
    assert got.get_json()["active"] is False
    assert raw_row(api, gone).active is False

    inactive = api.scim("GET", "/Users?filter=active eq false").get_json()
    assert inactive["totalResults"] == 1
    assert [u["id"] for u in inactive["Resources"]] == [gone]
    active = api.scim("GET", "/Users?filter=active eq true").get_json()
    assert [u["id"] for u in active["Resources"]] == [keep]
    by_name = api.scim("GET", '/Users?filter=userName eq "gone@example.com"').get_json()
    assert [u["id"] for u in by_name["Resources"]] == [gone]
    assert api.scim("GET", "/Users").get_json()["totalResults"] == 2


def test_delete_removes_the_user_and_its_memberships(api):
    uid = create(api, "del@example.com")["id"]
    other = create(api, "stay@example.com")["id"]
    g = api.scim(
        "POST",
        "/Groups",
        {"displayName": "Team", "members": [{"value": uid}, {"value": other}]},
    )
    assert g.status_code == 201
    gid = g.get_json()["id"]

    r = api.scim("DELETE", f"/Users/{uid}")
    assert r.status_code == 204
    assert r.get_data() == b""
    assert_scim_error(api.scim("GET", f"/Users/{uid}"), 404)
    assert_scim_error(api.scim("DELETE", f"/Users/{uid}"), 404)
    assert stored(api, uid) is None
    with api.agent.store.read() as tx:
        rows = tx.conn.execute(select(group_members.c.group_id, group_members.c.user_id)).all()
        values = tx.conn.execute(
            select(func.count()).select_from(user_values).where(user_values.c.user_id == uid)
        ).scalar_one()
    assert [tuple(row) for row in rows] == [(gid, other)]
    assert values == 0
    members = api.scim("GET", f"/Groups/{gid}").get_json()["members"]
    assert [m["value"] for m in members] == [other]


def test_user_groups_are_the_same_on_every_read_path(api, monkeypatch):
    """GET by id, a filter lookup, a page past the first and a page found by the counted
    buckets of the user order (agent.storage.user_order, buckets of 4 here) all return a
    user's groups, in displayName order (case-insensitive)."""
    from agent.storage import user_order

    monkeypatch.setattr(user_order, "BUCKET_SIZE", 4)
    ids = [create(api, f"u{i:02d}@example.com")["id"] for i in range(12)]
    member = ids[8]  # in the third bucket: deep pages find it by the buckets
    names = ["zeta", "Alpha", "mid"]
    for name in names:
        r = api.scim("POST", "/Groups", {"displayName": name, "members": [{"value": member}]})
        assert r.status_code == 201
    want = ["Alpha", "mid", "zeta"]

    def displays(body):
        return [g["display"] for g in body.get("groups", [])]

    assert displays(api.scim("GET", f"/Users/{member}").get_json()) == want
    found = api.scim("GET", '/Users?filter=userName eq "u08@example.com"').get_json()
    assert [displays(u) for u in found["Resources"]] == [want]
    for start, count in ((5, 5), (9, 1), (2, 10)):  # by bucket, by bucket, a wide page
        page = api.scim("GET", f"/Users?startIndex={start}&count={count}").get_json()
        by_id = {u["id"]: displays(u) for u in page["Resources"]}
        assert by_id[member] == want, (start, count)
        assert all(v == [] for k, v in by_id.items() if k != member)


def test_user_groups_attribute_follows_membership(api):
    uid = create(api, "member@example.com")["id"]
    gid = api.scim("POST", "/Groups", {"displayName": "Readers", "members": [{"value": uid}]})
    gid = gid.get_json()["id"]
    groups = api.scim("GET", f"/Users/{uid}").get_json()["groups"]
    assert groups == [
        {
            "value": gid,
            "$ref": f"http://localhost/scim/v2/Groups/{gid}",
            "display": "Readers",
            "type": "direct",
        }
    ]
    # groups is read-only: a PUT that sends other groups does not change membership.
    r = api.scim("PUT", f"/Users/{uid}", user("member@example.com", groups=[]))
    assert r.status_code == 200
    assert [g["value"] for g in r.get_json()["groups"]] == [gid]
    assert api.scim("DELETE", f"/Groups/{gid}").status_code == 204
    assert "groups" not in api.scim("GET", f"/Users/{uid}").get_json()


# -- attributes / excludedAttributes (RFC 7644 §3.4.2.5, §3.9) -------------------------------------


def test_attributes_user_name_returns_only_always_returned_and_user_name(api):
    uid = create(api, "proj@example.com", displayName="Proj", name={"givenName": "P"})["id"]
    r = api.scim("GET", f"/Users/{uid}?attributes=userName")
    assert set(r.get_json()) == {"schemas", "id", "meta", "userName"}
    listed = api.scim("GET", "/Users?attributes=userName").get_json()["Resources"]
    assert [set(u) for u in listed] == [{"schemas", "id", "meta", "userName"}]
    r = api.scim("GET", f"/Users/{uid}?attributes=name.givenName,displayName")
    body = r.get_json()
    assert body["name"] == {"givenName": "P"}
    assert body["displayName"] == "Proj"
    assert "userName" not in body


def test_excluded_attributes_on_users(api):
    uid = create(api, "ex@example.com", displayName="Ex", emails=[{"value": "ex@example.com"}])[
        "id"
    ]
    body = api.scim("GET", f"/Users/{uid}?excludedAttributes=emails,displayName").get_json()
    assert "emails" not in body and "displayName" not in body
    assert body["userName"] == "ex@example.com"
    # id, schemas and meta are always returned (RFC 7643 §7 returned "always").
    body = api.scim("GET", f"/Users/{uid}?excludedAttributes=id,meta").get_json()
    assert body["id"] == uid and "meta" in body


def test_an_answer_without_content_names_no_media_type(api):
    """Found by trying the product from outside: a DELETE's 204 and the automatic answer to
    OPTIONS said ``text/html`` (Flask's default) under /scim and /admin, which never answer
    HTML; with no content there is no media type to name."""
    uid = create(api, "gone@example.com")["id"]
    r = api.scim("DELETE", f"/Users/{uid}")
    assert r.status_code == 204 and "Content-Type" not in r.headers
    for r in (api.scim("OPTIONS", "/Users"), api.admin("OPTIONS", "/seats")):
        assert r.status_code == 200 and "GET" in r.headers["Allow"]
        assert "Content-Type" not in r.headers
    assert api.scim("GET", "/Users").headers["Content-Type"] == "application/scim+json"


def test_a_path_outside_scim_and_admin_is_answered_in_json(api):
    """Not Flask's HTML page: a JSON error that says where the service is (an admin typing
    /status finds the status page's address in it)."""
    r = api.client.get("/status")
    assert r.status_code == 404 and r.mimetype == "application/json"
    assert "/admin/" in r.get_json()["error"]
    r = api.client.post("/healthz")
    assert r.status_code == 405 and r.mimetype == "application/json"
    assert "GET" in r.headers["Allow"] and "POST" in r.get_json()["error"]
    assert api.client.get("/healthz").status_code == 200
