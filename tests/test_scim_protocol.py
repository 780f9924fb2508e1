"""SCIM protocol behaviour over HTTP (RFC 7644): auth, media types, errors, lists, filters,
discovery documents that describe what the server really does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import ADMIN_TOKEN, SCIM_TOKEN, Api
from sqlalchemy import func, select

from agent.config import settings_from_mapping
from agent.storage.tables import groups, users

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
SEAT = "urn:ietf:params:scim:schemas:extension:seatagent:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
SCIM_JSON = "application/scim+json"


@pytest.fixture
def custom_api(db_url, clock):
    """An app with extra settings sections (``server``, ``scim``) besides the test defaults."""
    from agent.app import create_app

    made = []

    def factory(**sections: dict) -> Api:
        settings = settings_from_mapping(
            {
                "database": {"url": db_url},
                "auth": {"scim_token": SCIM_TOKEN, "admin_token": ADMIN_TOKEN},
                "license": {"seats": 1000},
                **sections,
            }
        )
        app = create_app(settings, clock=clock)
        made.append(app)
        return Api(app)

    yield factory
    for app in made:
        app.extensions["seat_agent"].store.dispose()


def create(api, user_name: str, **extra) -> dict:
    r = api.scim("POST", "/Users", {"schemas": [USER], "userName": user_name, **extra})
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def count_rows(api, table) -> int:
    with api.agent.store.read() as tx:
        return tx.conn.execute(select(func.count()).select_from(table)).scalar_one()


def assert_scim_error(r, status: int, scim_type: str | None = None) -> dict:
    assert r.status_code == status, r.get_data(as_text=True)
    assert r.mimetype == SCIM_JSON
    body = r.get_json()
    assert body["schemas"] == [ERROR]
    assert body["status"] == str(status)
    assert isinstance(body["detail"], str) and body["detail"]
    if scim_type is not None:
        assert body["scimType"] == scim_type
    else:
        assert "scimType" not in body
    return body


def raw(api, method: str, path: str, data: bytes | str, content_type: str | None, **headers):
    all_headers = {"Authorization": f"Bearer {SCIM_TOKEN}", **headers}
    kwargs: dict[str, Any] = {"headers": all_headers, "data": data}
    if content_type is not None:
        kwargs["content_type"] = content_type
    return api.client.open("/scim/v2" + path, method=method, **kwargs)


# -- authentication (RFC 7644 §2) ----------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong-token",
        f"Basic {SCIM_TOKEN}",
        f"Token {SCIM_TOKEN}",
        "Bearer ",
        ADMIN_TOKEN,
    ],
)
@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/Users"), ("POST", "/Users"), ("GET", "/Schemas")]
)
def test_missing_or_wrong_token_is_401_with_bearer_challenge(api, authorization, method, path):
    headers = {} if authorization is None else {"Authorization": authorization}
    body = json.dumps({"schemas": [USER], "userName": "intruder@example.com"})
    r = api.client.open(
        "/scim/v2" + path, method=method, headers=headers, data=body, content_type=SCIM_JSON
    )
    assert_scim_error(r, 401)
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert count_rows(api, users) == 0


def test_admin_token_is_not_a_scim_token(api):
    r = api.client.get("/scim/v2/Users", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert_scim_error(r, 401)


# -- media types and bodies (RFC 7644 §3.1, §3.8, §3.12) -------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["application/scim+json", "application/json", "application/scim+json; charset=utf-8"],
)
def test_both_json_media_types_are_accepted(api, content_type):
    body = json.dumps({"schemas": [USER], "userName": "ct@example.com"})
    r = raw(api, "POST", "/Users", body, content_type)
    assert r.status_code == 201
    assert r.mimetype == SCIM_JSON
    assert count_rows(api, users) == 1


def test_responses_are_scim_json(api):
    uid = create(api, "media@example.com")["id"]
    for path in (
        f"/Users/{uid}",
        "/Users",
        "/Groups",
        "/ServiceProviderConfig",
        "/ResourceTypes",
        "/Schemas",
        f"/Schemas/{USER}",
        "/Users/nope",
    ):
        r = api.scim("GET", path)
        assert r.mimetype == SCIM_JSON, path
        json.loads(r.get_data())


def test_malformed_json_is_400_invalid_syntax_and_creates_nothing(api):
    truncated = json.dumps({"schemas": [USER], "userName": "x@example.com"})[:-1]
    r = raw(api, "POST", "/Users", truncated, SCIM_JSON)
    assert_scim_error(r, 400, "invalidSyntax")
    r = raw(api, "POST", "/Groups", b"\xff\xfe not utf-8", SCIM_JSON)
    assert_scim_error(r, 400, "invalidSyntax")
    r = raw(api, "POST", "/Users", '["not", "an", "object"]', SCIM_JSON)
    assert_scim_error(r, 400, "invalidSyntax")
    assert count_rows(api, users) == 0
    assert count_rows(api, groups) == 0


def test_malformed_json_in_put_and_patch_changes_nothing(api):
    uid = create(api, "j@example.com", displayName="J")["id"]
    assert_scim_error(raw(api, "PUT", f"/Users/{uid}", "{", SCIM_JSON), 400, "invalidSyntax")
    assert_scim_error(raw(api, "PATCH", f"/Users/{uid}", "{", SCIM_JSON), 400, "invalidSyntax")
    with api.agent.store.read() as tx:
        record = tx.users.get(uid)
    assert record.version == 1
    assert record.resource["displayName"] == "J"


def test_text_plain_is_415(api):
    body = json.dumps({"schemas": [USER], "userName": "plain@example.com"})
    r = raw(api, "POST", "/Users", body, "text/plain")
    assert_scim_error(r, 415)  # RFC 7644 §3.12 defines scimType for 400s only
    assert count_rows(api, users) == 0


def test_body_over_max_body_bytes_is_413(custom_api):
    api = custom_api(server={"max_body_bytes": 2048})
    padding = "x" * 3000
    body = json.dumps({"schemas": [USER], "userName": "big@example.com", "nickName": padding})
    r = raw(api, "POST", "/Users", body, SCIM_JSON)
    assert_scim_error(r, 413)  # no scimType: RFC 7644 §3.12 defines it for 400s only
    assert count_rows(api, users) == 0
    # Just under the limit is fine.
    roles = [{"value": f"{i:02d}" + "r" * 100} for i in range(16)]
    small = json.dumps({"schemas": [USER], "userName": "small@example.com", "roles": roles})
    assert 1900 < len(small) < 2048
    assert raw(api, "POST", "/Users", small, SCIM_JSON).status_code == 201
    spc = api.scim("GET", "/ServiceProviderConfig").get_json()
    assert spc["bulk"]["maxPayloadSize"] == 2048


def test_unknown_path_under_scim_is_404_scim_error(api):
    for path in ("/Nope", "/Users/abc/extra", "/v1/Users", "/Groups/x/members"):
        assert_scim_error(api.scim("GET", path), 404)
    # Without a token an unknown path is still a SCIM-shaped answer.
    r = api.client.get("/scim/v2/Nope")
    assert r.status_code in (401, 404)
    assert r.mimetype == SCIM_JSON


def test_wrong_method_is_405_scim_error(api):
    r = api.scim("DELETE", "/Users")
    assert_scim_error(r, 405)
    assert {m.strip() for m in r.headers["Allow"].split(",")} >= {"GET", "POST"}
    assert_scim_error(api.scim("PUT", "/ServiceProviderConfig"), 405)


def test_paths_outside_scim_keep_their_own_errors(api):
    for path in ("/not-scim", "/scim/v2x/Users"):
        r = api.client.get(path)
        assert r.status_code == 404
        assert r.mimetype != SCIM_JSON


SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"


def _root_search(api, **params) -> Any:
    return api.scim("POST", "/.search", {"schemas": [SEARCH], **params})


def _names_of(page: dict) -> list[str]:
    return [r.get("userName") or r["displayName"] for r in page["Resources"]]


def test_root_search_returns_users_then_groups_with_paging_across_them(api):
    """RFC 7644 §3.4.3: POST /.search at the root searches every resource type."""
    for name in ("u1@example.com", "u2@example.com", "u3@example.com"):
        create(api, name, displayName=name.upper())
    for name in ("G1", "G2"):
        assert api.scim("POST", "/Groups", {"schemas": [GROUP], "displayName": name}).status_code
    page = _root_search(api).get_json()
    assert page["schemas"] == [LIST]
    assert page["totalResults"] == 5
    assert _names_of(page) == [
        "u1@example.com",
        "u2@example.com",
        "u3@example.com",
        "G1",
        "G2",
    ]
    assert [r["meta"]["resourceType"] for r in page["Resources"]] == ["User"] * 3 + ["Group"] * 2
    across = _root_search(api, startIndex=3, count=2).get_json()
    assert (across["totalResults"], across["startIndex"], across["itemsPerPage"]) == (5, 3, 2)
    assert _names_of(across) == ["u3@example.com", "G1"]
    tail = _root_search(api, startIndex=5, count=10).get_json()
    assert _names_of(tail) == ["G2"]
    assert _root_search(api, startIndex=6).get_json()["Resources"] == []


def test_root_search_filter_applies_per_resource_type(api):
    create(api, "alpha@example.com", displayName="Alpha person")
    create(api, "beta@example.com", displayName="Beta person")
    api.scim("POST", "/Groups", {"schemas": [GROUP], "displayName": "Alpha team"})
    both = _root_search(api, filter='displayName sw "alpha"').get_json()
    assert both["totalResults"] == 2
    assert _names_of(both) == ["alpha@example.com", "Alpha team"]
    # userName is not a Group attribute: Groups simply contribute nothing.
    users_only = _root_search(api, filter='userName eq "BETA@example.com"').get_json()
    assert users_only["totalResults"] == 1
    assert _names_of(users_only) == ["beta@example.com"]
    # Unknown to every resource type: 400 invalidFilter, as on /Users.
    assert_scim_error(_root_search(api, filter='fooBar eq "x"'), 400, "invalidFilter")
    assert_scim_error(_root_search(api, filter="displayName eq"), 400, "invalidFilter")


def test_root_search_sorts_and_pages_the_combined_list(api):
    create(api, "m@example.com", displayName="Mike")
    create(api, "a@example.com", displayName="alice")
    create(api, "z@example.com")  # no displayName: sorts last ascending
    for name in ("Bravo", "Yankee"):
        api.scim("POST", "/Groups", {"schemas": [GROUP], "displayName": name})
    asc = _root_search(api, sortBy="displayName").get_json()
    assert _names_of(asc) == ["a@example.com", "Bravo", "m@example.com", "Yankee", "z@example.com"]
    desc = _root_search(api, sortBy="displayName", sortOrder="descending").get_json()
    assert _names_of(desc) == ["z@example.com", "Yankee", "m@example.com", "Bravo", "a@example.com"]
    page = _root_search(api, sortBy="displayName", startIndex=2, count=2).get_json()
    assert page["totalResults"] == 5
    assert _names_of(page) == ["Bravo", "m@example.com"]
    # Groups have no userName: absent values, last ascending (RFC 7644 §3.4.2.3).
    by_user = _root_search(api, sortBy="userName").get_json()
    assert _names_of(by_user) == [
        "a@example.com",
        "m@example.com",
        "z@example.com",
        "Bravo",
        "Yankee",
    ]
    assert_scim_error(_root_search(api, sortBy="fooBar"), 400, "invalidValue")


def test_root_search_sorted_paging_is_bounded(api):
    """Merging two sorted types reads startIndex + count - 1 of each: past 10,000 that is
    400 tooMany (RFC 7644 §3.12), unless only one type matches or nothing is sorted."""
    create(api, "one@example.com", displayName="One")
    api.scim("POST", "/Groups", {"schemas": [GROUP], "displayName": "Two"})
    far = {"startIndex": 9_995, "count": 10}
    assert_scim_error(_root_search(api, sortBy="displayName", **far), 400, "tooMany")
    unsorted = _root_search(api, **far).get_json()
    assert (unsorted["totalResults"], unsorted["Resources"]) == (2, [])
    one_type = _root_search(api, sortBy="displayName", filter="userName pr", **far).get_json()
    assert (one_type["totalResults"], one_type["Resources"]) == (1, [])


def test_root_search_honours_attributes(api):
    create(api, "p@example.com", displayName="P", title="Boss")
    api.scim("POST", "/Groups", {"schemas": [GROUP], "displayName": "G"})
    page = _root_search(api, attributes=["displayName"]).get_json()
    assert [sorted(r) for r in page["Resources"]] == [["displayName", "id", "meta", "schemas"]] * 2
    page = _root_search(api, excludedAttributes=["displayName"]).get_json()
    assert all("displayName" not in r for r in page["Resources"])
    assert page["Resources"][0]["title"] == "Boss"


# -- PATCH envelope (RFC 7644 §3.5.2) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "scim_type"),
    [
        (
            {"schemas": [], "Operations": [{"op": "replace", "path": "displayName", "value": "X"}]},
            "invalidSyntax",
        ),
        ({"schemas": [PATCH]}, "invalidSyntax"),
        ({"schemas": [PATCH], "Operations": []}, "invalidSyntax"),
        ({"schemas": [PATCH], "Operations": {"op": "replace"}}, "invalidSyntax"),
        ({"schemas": [PATCH], "Operations": [{"op": "merge", "value": {}}]}, "invalidSyntax"),
        (
            {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "displayName"}]},
            "invalidSyntax",
        ),
        ({"schemas": [PATCH], "Operations": [{"op": "remove"}]}, "noTarget"),
        ({"schemas": [PATCH], "Operations": ["replace"]}, "invalidSyntax"),
        (
            {"schemas": [USER], "Operations": [{"op": "replace", "value": {"displayName": "X"}}]},
            "invalidSyntax",
        ),
        (
            {
                "schemas": [PATCH],
                "Operations": [{"op": "replace", "path": "emails[type eq", "value": "X"}],
            },
            None,
        ),
    ],
)
def test_bad_patch_envelope_is_400_and_changes_nothing(api, body, scim_type):
    uid = create(api, "env@example.com", displayName="Env")["id"]
    gid = api.scim("POST", "/Groups", {"displayName": "Env", "members": [{"value": uid}]})
    gid = gid.get_json()["id"]
    for path in (f"/Users/{uid}", f"/Groups/{gid}"):
        r = api.scim("PATCH", path, body)
        assert r.status_code == 400, (path, r.get_json())
        err = r.get_json()
        assert err["schemas"] == [ERROR]
        if scim_type is not None:
            assert err["scimType"] == scim_type
    with api.agent.store.read() as tx:
        assert tx.users.get(uid).version == 1
        assert tx.users.get(uid).resource["displayName"] == "Env"
        assert tx.groups.get(gid, with_members=False).version == 1
        assert tx.groups.member_ids(gid) == [uid]


# -- lists: pagination and sorting (RFC 7644 §3.4.2.3, §3.4.2.4) ---------------------------------


def test_pagination_is_one_based_stable_and_complete(api):
    names = [f"user{i:02d}@example.com" for i in range(11)]
    for name in reversed(names):  # insertion order differs from sort order
        create(api, name)
    seen: list[str] = []
    for start in (1, 4, 7, 10):
        page = api.scim("GET", f"/Users?startIndex={start}&count=3&sortBy=userName").get_json()
        assert page["schemas"] == [LIST]
        assert page["totalResults"] == 11 and isinstance(page["totalResults"], int)
        assert page["startIndex"] == start
        assert page["itemsPerPage"] == len(page["Resources"]) == min(3, 12 - start)
        seen.extend(u["userName"] for u in page["Resources"])
    assert seen == names

    # Without sortBy the order is still stable across pages: no duplicates, no gaps.
    unsorted: list[str] = []
    for start in range(1, 12, 4):
        page = api.scim("GET", f"/Users?startIndex={start}&count=4").get_json()
        unsorted.extend(u["id"] for u in page["Resources"])
    assert len(unsorted) == len(set(unsorted)) == 11


def test_pagination_edges(api):
    for i in range(3):
        create(api, f"edge{i}@example.com")
    beyond = api.scim("GET", "/Users?startIndex=10&count=5").get_json()
    assert beyond["totalResults"] == 3
    assert beyond["Resources"] == []
    assert beyond["itemsPerPage"] == 0
    zero = api.scim("GET", "/Users?count=0").get_json()
    assert zero["totalResults"] == 3
    assert zero.get("Resources", []) == []
    below = api.scim("GET", "/Users?startIndex=0&count=1").get_json()
    assert below["startIndex"] == 1
    assert len(below["Resources"]) == 1
    negative = api.scim("GET", "/Users?count=-4").get_json()
    assert negative["totalResults"] == 3 and negative["Resources"] == []
    assert_scim_error(api.scim("GET", "/Users?count=ten"), 400, "invalidValue")
    assert_scim_error(api.scim("GET", "/Users?startIndex=first"), 400, "invalidValue")


def test_count_is_capped_at_the_advertised_max_results(custom_api):
    api = custom_api(scim={"max_page_size": 4, "default_page_size": 2})
    for i in range(6):
        create(api, f"cap{i}@example.com")
    spc = api.scim("GET", "/ServiceProviderConfig").get_json()
    assert spc["filter"]["maxResults"] == 4
    page = api.scim("GET", "/Users?count=100").get_json()
    assert page["totalResults"] == 6
    assert len(page["Resources"]) == 4
    assert len(api.scim("GET", "/Users").get_json()["Resources"]) == 2


def test_sort_by_and_sort_order(api, clock):
    create(api, "b@example.com", displayName="Charlie")
    create(api, "c@example.com", displayName="alpha")
    create(api, "a@example.com")  # no displayName: last ascending, first descending
    asc = api.scim("GET", "/Users?sortBy=userName").get_json()["Resources"]
    assert [u["userName"] for u in asc] == ["a@example.com", "b@example.com", "c@example.com"]
    desc = api.scim("GET", "/Users?sortBy=userName&sortOrder=descending").get_json()["Resources"]
    assert [u["userName"] for u in desc] == ["c@example.com", "b@example.com", "a@example.com"]
    by_display = api.scim("GET", "/Users?sortBy=displayName").get_json()["Resources"]
    assert [u.get("displayName") for u in by_display] == ["alpha", "Charlie", None]
    by_display = api.scim("GET", "/Users?sortBy=displayName&sortOrder=DESCENDING").get_json()
    assert [u.get("displayName") for u in by_display["Resources"]] == [None, "Charlie", "alpha"]
    assert_scim_error(api.scim("GET", "/Users?sortBy=userName&sortOrder=up"), 400, "invalidValue")
    err = assert_scim_error(api.scim("GET", "/Users?sortBy=shoeSize"), 400, "invalidValue")
    assert "sort" in err["detail"] and "shoeSize" in err["detail"]
    assert "filter" not in err["detail"]
    err = assert_scim_error(api.scim("GET", "/Groups?sortBy=userName"), 400, "invalidValue")
    assert "filter" not in err["detail"]


# -- filters through HTTP (RFC 7644 §3.4.2.2) -------------------------------------------------------


def test_null_in_a_filter_means_unassigned(api):
    """RFC 7644 §3.4.2.2 allows null as a compValue; RFC 7643 §2.5 makes it "unassigned"."""
    create(api, "titled@example.com", title="Boss")
    create(api, "untitled@example.com")
    assert _ids(api, "filter=title eq null") == ["untitled@example.com"]
    assert _ids(api, "filter=title ne null") == ["titled@example.com"]
    assert _ids(api, 'filter=title eq "null"') == []
    assert _ids(api, "filter=emails eq null") == ["titled@example.com", "untitled@example.com"]
    err = assert_scim_error(api.scim("GET", "/Users?filter=title co null"), 400, "invalidFilter")
    assert "null" in err["detail"]


def _ids(api, query: str) -> list[str]:
    r = api.scim("GET", "/Users?" + query)
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["totalResults"] == len(body["Resources"])
    return sorted(u["userName"] for u in body["Resources"])


def test_filters_over_http(api, clock):
    create(
        api,
        "work@example.com",
        emails=[
            {"value": "Work.Mail@Example.com", "type": "work"},
            {"value": "home.mail@example.com", "type": "home"},
        ],
        **{ENTERPRISE: {"department": "Sales"}},
    )
    create(
        api,
        "home@example.com",
        active=False,
        emails=[{"value": "work.mail@example.org", "type": "home"}],
    )
    clock.advance(hours=1)
    cutoff = clock.now.isoformat().replace("+00:00", "Z")
    clock.advance(hours=1)
    create(api, "late@example.com", title="Late")

    assert _ids(api, "filter=active eq false") == ["home@example.com"]
    assert _ids(api, 'filter=emails[type eq "work"].value eq "work.mail@example.com"') == [
        "work@example.com"
    ]
    # The home address of the second user must not match a work-only filter.
    assert _ids(api, 'filter=emails[type eq "work" and value co "mail@"]') == ["work@example.com"]
    assert _ids(api, 'filter=emails co "mail@example"') == ["home@example.com", "work@example.com"]
    assert _ids(api, f'filter=meta.lastModified gt "{cutoff}"') == ["late@example.com"]
    assert _ids(api, f'filter=meta.created lt "{cutoff}"') == [
        "home@example.com",
        "work@example.com",
    ]
    assert _ids(api, f'filter={ENTERPRISE}:department eq "sales"') == ["work@example.com"]
    assert _ids(api, "filter=title pr and not (active eq false)") == ["late@example.com"]
    assert _ids(api, 'filter=USERNAME EQ "LATE@EXAMPLE.COM"') == ["late@example.com"]

    for bad in ('shoeSize eq "42"', "userName eq", 'emails[type eq "work"', "active gt true"):
        err = assert_scim_error(api.scim("GET", "/Users?filter=" + bad), 400, "invalidFilter")
        assert err["detail"]
    assert_scim_error(
        api.scim("GET", '/Users?filter=meta.lastModified gt "yesterday"'), 400, "invalidFilter"
    )


def test_like_wildcards_are_literals(api):
    for name in (
        "a_b@example.com",
        "axb@example.com",
        "100%off@example.com",
        "100xoff@example.com",
    ):
        create(api, name, displayName=name.upper())
    assert _ids(api, 'filter=userName co "_b"') == ["a_b@example.com"]
    assert _ids(api, 'filter=userName sw "100%"') == ["100%off@example.com"]
    assert _ids(api, 'filter=displayName co "%OFF"') == ["100%off@example.com"]
    assert _ids(api, 'filter=displayName sw "A_"') == ["a_b@example.com"]
    assert _ids(api, 'filter=userName ew "%"') == []


def test_post_users_search(api):
    for name in ("s1@example.com", "s2@example.com", "t1@example.com"):
        create(api, name, displayName=name[:2])
    r = api.scim(
        "POST",
        "/Users/.search",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter": 'userName sw "s"',
            "attributes": ["userName"],
            "sortBy": "userName",
            "sortOrder": "descending",
            "startIndex": 1,
            "count": 1,
        },
    )
    assert r.status_code == 200
    body = r.get_json()
    assert body["totalResults"] == 2
    assert [set(u) for u in body["Resources"]] == [{"schemas", "id", "meta", "userName"}]
    assert body["Resources"][0]["userName"] == "s2@example.com"
    r = api.scim("POST", "/Users/.search", {"excludedAttributes": ["displayName"]})
    assert all("displayName" not in u for u in r.get_json()["Resources"])
    assert_scim_error(api.scim("POST", "/Users/.search", {"filter": "nope"}), 400, "invalidFilter")
    assert_scim_error(api.scim("POST", "/Users/.search", ["x"]), 400, "invalidSyntax")


# -- discovery (RFC 7644 §4) describes what the server really does ----------------------------------


def test_service_provider_config_matches_behaviour(api):
    r = api.scim("GET", "/ServiceProviderConfig")
    assert r.status_code == 200
    spc = r.get_json()
    settings = api.agent.settings
    assert spc["patch"] == {"supported": True}
    assert spc["bulk"]["supported"] is False
    assert spc["changePassword"] == {"supported": False}
    assert spc["sort"] == {"supported": True}
    assert spc["etag"] == {"supported": True}
    assert spc["filter"] == {"supported": True, "maxResults": settings.scim.max_page_size}
    assert [s["type"] for s in spc["authenticationSchemes"]] == ["oauthbearertoken"]
    assert spc["meta"]["location"] == "http://localhost/scim/v2/ServiceProviderConfig"
    # Bulk is not offered, so /Bulk is not an endpoint.
    assert_scim_error(api.scim("POST", "/Bulk", {"Operations": []}), 404)
    # ETags and PATCH really work (more in test_scim_users).
    created = api.scim("POST", "/Users", {"userName": "spc@example.com"})
    assert created.headers["ETag"] == 'W/"1"'


def test_resource_types(api):
    body = api.scim("GET", "/ResourceTypes").get_json()
    assert body["schemas"] == [LIST]
    assert body["totalResults"] == 2
    by_id = {rt["id"]: rt for rt in body["Resources"]}
    assert set(by_id) == {"User", "Group"}
    assert by_id["User"]["endpoint"] == "/Users" and by_id["User"]["schema"] == USER
    assert {e["schema"] for e in by_id["User"]["schemaExtensions"]} == {ENTERPRISE, SEAT}
    assert by_id["Group"]["endpoint"] == "/Groups" and by_id["Group"]["schema"] == GROUP
    for name, rt in by_id.items():
        r = api.scim("GET", f"/ResourceTypes/{name}")
        assert r.get_json() == rt
        endpoint = api.scim("GET", rt["endpoint"])
        assert endpoint.status_code == 200
    assert_scim_error(api.scim("GET", "/ResourceTypes/Device"), 404)


def test_schemas_list_and_by_id(api):
    body = api.scim("GET", "/Schemas").get_json()
    assert body["totalResults"] == len(body["Resources"]) == 4
    ids = [s["id"] for s in body["Resources"]]
    assert set(ids) == {USER, GROUP, ENTERPRISE, SEAT}
    for schema in body["Resources"]:
        r = api.scim("GET", f"/Schemas/{schema['id']}")
        assert r.status_code == 200
        assert r.get_json() == schema
    assert_scim_error(api.scim("GET", "/Schemas/urn:example:nope"), 404)


def _declared(schema: dict) -> dict[str, dict]:
    return {a["name"].lower(): a for a in schema["attributes"]}


def test_schemas_declare_every_attribute_the_server_returns(api):
    boss = create(api, "boss@example.com")["id"]
    uid = create(
        api,
        "full@example.com",
        password="never-returned",
        name={"givenName": "F", "familyName": "U", "formatted": "F U"},
        displayName="Full",
        nickName="F",
        profileUrl="https://example.com/f",
        title="T",
        userType="Employee",
        preferredLanguage="en",
        locale="en-US",
        timezone="Europe/Paris",
        emails=[{"value": "f@example.com", "type": "work", "primary": True}],
        phoneNumbers=[{"value": "+1", "type": "work"}],
        ims=[{"value": "f", "type": "xmpp"}],
        photos=[{"value": "https://example.com/p.png", "type": "photo"}],
        addresses=[{"locality": "Paris", "type": "work", "primary": True}],
        entitlements=[{"value": "e"}],
        roles=[{"value": "r"}],
        x509Certificates=[{"value": "MII="}],
        externalId="ext",
        **{
            ENTERPRISE: {
                "employeeNumber": "1",
                "costCenter": "c",
                "organization": "o",
                "division": "d",
                "department": "dep",
                "manager": {"value": boss},
            }
        },
    )["id"]
    gid = api.scim(
        "POST", "/Groups", {"displayName": "G", "externalId": "g", "members": [{"value": uid}]}
    )
    gid = gid.get_json()["id"]
    user = api.scim("GET", f"/Users/{uid}").get_json()
    group = api.scim("GET", f"/Groups/{gid}").get_json()
    schemas = {s["id"]: s for s in api.scim("GET", "/Schemas").get_json()["Resources"]}
    common = {"id", "externalid", "meta", "schemas"}

    def check(resource: dict, core: str, extensions: list[str]) -> None:
        declared = _declared(schemas[core])
        for key, value in resource.items():
            if key in extensions:
                ext = _declared(schemas[key])
                for sub in value:
                    assert sub.lower() in ext, (key, sub)
                continue
            if key.lower() in common:
                continue
            attr = declared.get(key.lower())
            assert attr is not None, f"{key} is returned but not declared in {core}"
            assert attr["returned"] != "never", key
            items = value if isinstance(value, list) else [value]
            if attr["type"] == "complex":
                subs = {s["name"].lower() for s in attr["subAttributes"]}
                for item in items:
                    assert {k.lower() for k in item} <= subs, (key, item)
        assert set(resource["schemas"]) == {core, *[e for e in extensions if e in resource]}

    check(user, USER, [ENTERPRISE, SEAT])
    check(group, GROUP, [])
    assert "password" not in user
    assert _declared(schemas[USER])["password"]["returned"] == "never"
    assert user[ENTERPRISE]["manager"]["$ref"].endswith(f"/Users/{boss}")


def test_database_down_is_a_clean_503_and_changes_nothing(make_api, monkeypatch):
    """A database that refuses connections gives a SCIM 503 with Retry-After, not a 500."""
    from sqlalchemy.exc import OperationalError

    api = make_api()
    store = api.agent.store

    def refuse(*_a, **_k):
        raise OperationalError("connect", {}, Exception("connection refused"))

    monkeypatch.setattr(store, "write", refuse)
    r = api.scim("POST", "/Users", {"userName": "down@example.com"})
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "5"
    assert r.get_json()["status"] == "503"
    monkeypatch.undo()
    assert (
        api.scim("GET", '/Users?filter=userName eq "down@example.com"').get_json()["totalResults"]
        == 0
    )
    assert api.scim("POST", "/Users", {"userName": "down@example.com"}).status_code == 201


def test_responses_are_compact_utf8_json_and_big_integers_survive():
    """scim_response writes with orjson and falls back to the standard library for what orjson
    refuses (integers beyond 64 bits): the bytes are the same compact UTF-8 either way."""
    import json

    from agent.web.scim_response import _encode

    body = {"displayName": "Zoë Ångström 東京", "totalResults": 2**63 - 1, "n": [1.5, True, None]}
    expected = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    assert _encode(body) == expected
    big = {"startIndex": 10**30}
    assert json.loads(_encode(big)) == big  # exact, not a float
