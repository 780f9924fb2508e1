"""Cursor paging (RFC 9865) of /Users, /Groups, POST .search and the admin user list, and index
paging (RFC 7644 §3.4.2.4) walked page by page, over HTTP on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest
from scim2_models import Context, ServiceProviderConfig
from test_scim_protocol import GROUP, SEARCH, assert_scim_error, create

from agent.scim.cursor import CURSOR_TIMEOUT_SECONDS, CursorCodec, Position, query_digest


def _users(api, n: int, prefix: str = "u") -> list[str]:
    return [create(api, f"{prefix}{i:03d}@example.com")["id"] for i in range(n)]


def _get(api, path: str) -> dict:
    r = api.scim("GET", path)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()


def _walk(api, path: str, count: int, between=None) -> tuple[list[str], list[dict]]:
    """Every id of a cursor walk of ``path`` and its pages; ``between(i)`` runs after page i."""
    sep = "&" if "?" in path else "?"
    body = _get(api, f"{path}{sep}cursor=&count={count}")
    pages = [body]
    while "nextCursor" in body:
        if between is not None:
            between(len(pages) - 1)
        body = _get(api, f"{path}{sep}cursor={body['nextCursor']}&count={count}")
        pages.append(body)
    return [r["id"] for p in pages for r in p["Resources"]], pages


def test_service_provider_config_announces_both_kinds_of_paging(api):
    spc = _get(api, "/ServiceProviderConfig")
    assert spc["pagination"] == {
        "cursor": True,
        "index": True,
        "defaultPaginationMethod": "index",
        "defaultPageSize": 100,
        "maxPageSize": 1000,
        "cursorTimeout": CURSOR_TIMEOUT_SECONDS,
    }
    parsed = ServiceProviderConfig.model_validate(spc, scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
    assert parsed.pagination is not None and parsed.pagination.cursor is True


def test_a_cursor_walk_returns_every_user_once_whatever_changes_between_pages(api):
    """Users created and deleted between pages: every user that exists for the whole walk
    comes exactly once, a user deleted before the walk reaches it never, and users created
    during the walk come at its end (creation order). totalResults is the count of the
    moment; the first page has no previousCursor and the last no nextCursor."""
    ids = _users(api, 23)
    deleted = {ids[1], ids[12], ids[20]}  # one already seen when deleted, two not yet
    created: list[str] = []

    def between(page: int) -> None:
        if page == 1:
            for uid in deleted:
                assert api.scim("DELETE", f"/Users/{uid}").status_code == 204
            created.extend(_users(api, 2, prefix="late"))

    got, pages = _walk(api, "/Users", 5, between)
    assert len(got) == len(set(got))
    assert got == [i for i in ids if i not in deleted or i == ids[1]] + created
    assert "previousCursor" not in pages[0]
    assert all("previousCursor" in p for p in pages[1:])
    assert "nextCursor" not in pages[-1] and all("nextCursor" in p for p in pages[:-1])
    assert pages[0]["totalResults"] == 23 and pages[-1]["totalResults"] == 22
    assert all("startIndex" not in p and p["itemsPerPage"] == len(p["Resources"]) for p in pages)


def test_previous_cursors_walk_back_to_the_first_page(api):
    ids = _users(api, 12)
    first = _get(api, "/Users?cursor=&count=4")
    second = _get(api, f"/Users?cursor={first['nextCursor']}&count=4")
    third = _get(api, f"/Users?cursor={second['nextCursor']}&count=4")
    assert [r["id"] for r in third["Resources"]] == ids[8:12]
    assert "nextCursor" not in third
    back = _get(api, f"/Users?cursor={third['previousCursor']}&count=4")
    assert [r["id"] for r in back["Resources"]] == ids[4:8]
    back = _get(api, f"/Users?cursor={back['previousCursor']}&count=4")
    assert [r["id"] for r in back["Resources"]] == ids[0:4]
    assert "previousCursor" not in back  # the first page again
    forward = _get(api, f"/Users?cursor={back['nextCursor']}&count=4")
    assert [r["id"] for r in forward["Resources"]] == ids[4:8]


def test_an_index_walk_returns_every_user_once(api, monkeypatch):
    """startIndex pages over users with holes (deleted users), pages found by the counted
    buckets of the user order (buckets of 4 here): every user once, in order."""
    from agent.storage import user_order

    monkeypatch.setattr(user_order, "BUCKET_SIZE", 4)
    ids = _users(api, 30)
    for uid in (ids[0], ids[9], ids[10], ids[11], ids[29]):
        assert api.scim("DELETE", f"/Users/{uid}").status_code == 204
    left = [u for u in ids if u not in (ids[0], ids[9], ids[10], ids[11], ids[29])]
    for count in (1, 4, 7):
        got = []
        start = 1
        while True:
            page = _get(api, f"/Users?startIndex={start}&count={count}")
            assert page["totalResults"] == 25 and page["startIndex"] == start
            got += [r["id"] for r in page["Resources"]]
            if start + count > page["totalResults"]:
                break
            start += count
        assert got == left, count


def test_a_filtered_cursor_walk(api):
    ids = _users(api, 9, prefix="a") + _users(api, 9, prefix="b")
    got, pages = _walk(api, "/Users?filter=" + quote('userName sw "a"'), 2)
    assert got == ids[:9]
    assert all(p["totalResults"] == 9 for p in pages)
    assert len(pages) == 5


def test_count_zero_gives_the_total_and_no_cursor(api):
    _users(api, 3)
    body = _get(api, "/Users?cursor=&count=0")
    assert body["totalResults"] == 3 and body["Resources"] == []
    assert "nextCursor" not in body and "previousCursor" not in body


def test_refused_cursors_and_counts(api, clock):
    _users(api, 5)
    first = _get(api, "/Users?cursor=&count=2")
    good = first["nextCursor"]
    raw = bytearray(base64.urlsafe_b64decode(good + "=" * (-len(good) % 4)))
    raw[5] ^= 1  # another seq, same signature: forged
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    other_key = CursorCodec(b"k" * 32, clock).encode("Users", Position(1), 2, query_digest(None))
    for bad in ("garbage", good[:-2], forged, other_key, good + "!", "%00"):
        r = api.scim("GET", f"/Users?cursor={quote(bad)}&count=2")
        assert_scim_error(r, 400, "invalidCursor")
    assert_scim_error(api.scim("GET", f"/Groups?cursor={good}&count=2"), 400, "invalidCursor")
    r = api.scim("GET", f"/Users?cursor={good}&count=2&filter=" + quote('userName sw "u"'))
    assert_scim_error(r, 400, "invalidCursor")
    assert_scim_error(api.scim("GET", f"/Users?cursor={good}&count=3"), 400, "invalidCount")
    assert_scim_error(api.scim("GET", "/Users?cursor=&count=1001"), 400, "invalidCount")
    assert_scim_error(api.scim("GET", "/Users?cursor=&startIndex=3"), 400, "invalidValue")
    assert_scim_error(api.scim("GET", "/Users?cursor=&sortBy=userName"), 400, "invalidValue")
    assert api.scim("GET", f"/Users?cursor={good}&count=2").status_code == 200
    clock.advance(seconds=CURSOR_TIMEOUT_SECONDS - 5)
    assert api.scim("GET", f"/Users?cursor={good}&count=2").status_code == 200
    clock.advance(seconds=10)
    assert_scim_error(api.scim("GET", f"/Users?cursor={good}&count=2"), 400, "expiredCursor")


def test_group_cursor_walk(api):
    uid = create(api, "member@example.com")["id"]
    gids = []
    for i in range(7):
        body = {"schemas": [GROUP], "displayName": f"g{i}", "members": [{"value": uid}]}
        r = api.scim("POST", "/Groups", body)
        assert r.status_code == 201
        gids.append(r.get_json()["id"])
    got, pages = _walk(api, "/Groups", 3)
    assert got == gids and len(pages) == 3
    assert pages[0]["Resources"][0]["members"][0]["value"] == uid
    lean, _ = _walk(api, "/Groups?excludedAttributes=members", 3)
    assert lean == gids
    assert_scim_error(api.scim("GET", "/Groups?cursor=nope&count=3"), 400, "invalidCursor")


def _search(api, path: str, body: dict) -> dict:
    r = api.scim("POST", path, {"schemas": [SEARCH], **body})
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()


@pytest.mark.parametrize("count", [1, 3, 7, 20])
def test_root_search_cursor_walk_gives_users_then_groups_once(api, count):
    users = _users(api, 5)
    groups = []
    for i in range(4):
        r = api.scim("POST", "/Groups", {"schemas": [GROUP], "displayName": f"team{i}"})
        groups.append(r.get_json()["id"])
    body = _search(api, "/.search", {"cursor": "", "count": count})
    pages = [body]
    while "nextCursor" in body:
        body = _search(api, "/.search", {"cursor": body["nextCursor"], "count": count})
        pages.append(body)
    assert [r["id"] for p in pages for r in p["Resources"]] == users + groups
    assert all(p["totalResults"] == 9 for p in pages)
    assert all("previousCursor" not in p for p in pages)
    assert all(len(p["Resources"]) == count for p in pages[:-1])


def test_type_search_endpoints_take_cursor_and_count_in_the_body(api):
    users = _users(api, 5)
    first = _search(api, "/Users/.search", {"cursor": "", "count": 3})
    assert [r["id"] for r in first["Resources"]] == users[:3]
    second = _search(api, "/Users/.search", {"cursor": first["nextCursor"], "count": 3})
    assert [r["id"] for r in second["Resources"]] == users[3:]
    assert "nextCursor" not in second
    r = api.scim("POST", "/Users/.search", {"schemas": [SEARCH], "cursor": 5, "count": 3})
    assert_scim_error(r, 400, "invalidCursor")
    gid = api.scim("POST", "/Groups", {"schemas": [GROUP], "displayName": "x"}).get_json()["id"]
    groups = _search(api, "/Groups/.search", {"cursor": "", "count": 3})
    assert [g["id"] for g in groups["Resources"]] == [gid]
    r = api.scim("POST", "/Groups/.search", {"schemas": [SEARCH], "cursor": first["nextCursor"]})
    assert_scim_error(r, 400, "invalidCursor")


def test_admin_user_list_cursors(api, clock):
    ids = _users(api, 7)
    got = []
    body = api.admin("GET", "/users?count=3&cursor=").get_json()
    pages = 1
    got += [u["id"] for u in body["users"]]
    while body["nextCursor"] is not None:
        nxt = body["nextCursor"]
        body = api.admin("GET", f"/users?count=3&cursor={nxt}").get_json()
        got += [u["id"] for u in body["users"]]
        pages += 1
    assert got == ids and pages == 3
    first = api.admin("GET", "/users?count=3").get_json()["nextCursor"]
    for bad in ("123", "garbage", first[:-1]):
        r = api.admin("GET", f"/users?count=3&cursor={bad}")
        assert r.status_code == 400 and "must be the nextCursor" in r.get_json()["error"]
    r = api.admin("GET", f"/users?count=3&q=u00&cursor={first}")  # another filter
    assert r.status_code == 400 and "same state, q and count" in r.get_json()["error"]
    r = api.admin("GET", f"/users?count=4&cursor={first}")
    assert r.status_code == 400 and "'count' must stay" in r.get_json()["error"]
    assert api.admin("GET", f"/users?count=3&cursor={first}").status_code == 200
    clock.advance(seconds=CURSOR_TIMEOUT_SECONDS + 1)
    r = api.admin("GET", f"/users?count=3&cursor={first}")
    assert r.status_code == 400 and "more than an hour ago" in r.get_json()["error"]
