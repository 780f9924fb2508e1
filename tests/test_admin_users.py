"""The admin's user list (issue 14): find a user by name, email or externalId, by license
state, page by cursor; a userName or externalId works wherever a user id does; CSV of the
billable users (GitLab's "export billable users")."""

from __future__ import annotations

import csv
import io

import pytest
from conftest import ADMIN_TOKEN
from test_seat_engine import create, user


def create_named(api, user_name: str, **extra) -> dict:
    r = api.scim("POST", "/Users", {**user(user_name), **extra})
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def people(api):
    create_named(
        api,
        "alice@example.com",
        externalId="00u-alice",
        name={"givenName": "Alice", "familyName": "Liddell"},
        emails=[{"value": "Alice.L@Mail.example", "primary": True}],
    )
    create(api, "bob@example.com", displayName="Bob Builder", externalId="00u-bob")
    create(api, "carol@example.com", active=False)
    create(api, "dave@example.com")  # queued: the pool holds 2


def users(api, query: str = "") -> dict:
    r = api.admin("GET", f"/users{query}")
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def names(body: dict) -> list[str]:
    return [u["userName"] for u in body["users"]]


def test_the_list_filters_by_state_and_searches_name_email_and_external_id(make_api):
    api = make_api(seats=2, on_full="queue")
    people(api)
    assert names(users(api)) == [
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
        "dave@example.com",
    ]
    assert names(users(api, "?state=licensed")) == ["alice@example.com", "bob@example.com"]
    assert names(users(api, "?state=queued")) == ["dave@example.com"]
    assert names(users(api, "?state=inactive")) == ["carol@example.com"]
    assert names(users(api, "?q=LIDDELL")) == ["alice@example.com"]  # family name
    assert names(users(api, "?q=mail.example")) == ["alice@example.com"]  # email
    assert names(users(api, "?q=builder")) == ["bob@example.com"]  # displayName
    assert names(users(api, "?q=00u-b")) == ["bob@example.com"]  # externalId
    assert names(users(api, "?q=%25")) == []  # a literal %, not a wildcard
    alice = users(api, "?q=alice")["users"][0]
    assert alice["displayName"] == "Alice Liddell"
    assert alice["email"] == "Alice.L@Mail.example"
    assert alice["externalId"] == "00u-alice"
    assert alice["holdsSeat"] is True and alice["licenseState"] == "licensed"
    assert alice["seatSince"] is not None and alice["lastActivity"] is not None
    dave = users(api, "?q=dave")["users"][0]
    assert dave["holdsSeat"] is False and dave["seatSince"] is None


def test_the_list_pages_by_cursor(make_api):
    api = make_api(seats=10)
    for i in range(5):
        create(api, f"u{i}")
    first = users(api, "?count=2")
    second = users(api, f"?count=2&cursor={first['nextCursor']}")
    third = users(api, f"?count=2&cursor={second['nextCursor']}")
    assert names(first) + names(second) + names(third) == [f"u{i}" for i in range(5)]
    assert third["nextCursor"] is None
    assert users(api, "?count=5")["nextCursor"] is None


@pytest.mark.parametrize(
    "query", ["?state=billed", "?cursor=-1", "?cursor=x", "?count=0", "?count=abc", "?sort=x"]
)
def test_bad_list_queries_are_400(api, query):
    r = api.admin("GET", f"/users{query}")
    assert r.status_code == 400
    assert r.get_json()["error"]


def test_a_user_name_or_external_id_works_wherever_an_id_does(make_api):
    api = make_api(seats=2, on_full="queue")
    people(api)
    by_name = api.admin("GET", "/users/ALICE@example.com").get_json()
    by_external = api.admin("GET", "/users/00u-alice").get_json()
    assert by_name["userName"] == by_external["userName"] == "alice@example.com"
    assert api.admin("GET", f"/users/{by_name['id']}").get_json()["id"] == by_name["id"]
    r = api.admin("POST", "/users/dave@example.com/reevaluate")
    assert r.status_code == 200 and r.get_json()["userName"] == "dave@example.com"
    missing = api.admin("GET", "/users/nobody@example.com")
    assert missing.status_code == 404 and "nobody@example.com" in missing.get_json()["error"]


def test_billable_users_export_as_csv(make_api):
    api = make_api(seats=2, on_full="queue")
    people(api)
    r = api.admin("GET", "/billable-users.csv")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    assert [row["userName"] for row in rows] == ["alice@example.com", "bob@example.com"]
    assert all(row["seatSince"] and row["lastActivity"] for row in rows)


def test_billable_csv_cells_never_run_as_spreadsheet_formulas(make_api):
    api = make_api(seats=5)
    create(api, '=HYPERLINK("http://evil","x")')
    create(api, "+1 555")
    r = api.admin("GET", "/billable-users.csv")
    rows = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    names = sorted(row["userName"] for row in rows)
    assert names == ["'+1 555", '\'=HYPERLINK("http://evil","x")']


@pytest.mark.parametrize(
    "ctype", ["text/plain", "application/xml", "application/x-www-form-urlencoded"]
)
def test_an_admin_body_declared_as_not_json_is_a_415_and_changes_nothing(api, ctype):
    """As on /scim: a body declared as something else than JSON is refused (415, JSON error)
    even when its bytes happen to be JSON; no Content-Type at all is still read as JSON."""
    before = api.admin("GET", "/seats").get_json()["licensed"]
    r = api.client.put(
        "/admin/licenses",
        data='{"seats": 42}',
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": ctype},
    )
    assert r.status_code == 415 and ctype in r.get_json()["error"]
    assert api.admin("GET", "/seats").get_json()["licensed"] == before
    r = api.client.put(
        "/admin/licenses",
        data='{"seats": 42}',
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert r.status_code == 200, r.get_json()
    assert api.admin("GET", "/seats").get_json()["licensed"] == 42


def test_a_plus_sign_lost_in_the_url_is_explained(api):
    """``?since=...+00:00`` unencoded arrives with a space for the '+': still a 400, which now
    says how to write the offset."""
    for path in ("/seats?at=", "/ledger?since="):
        r = api.admin("GET", path + "2026-12-03T12:21:17.210+00:00")
        assert r.status_code == 400
        assert "%2B" in r.get_json()["error"], path
        r = api.admin("GET", path + "2026-12-03T12:21:17.210%2B00:00")
        assert r.status_code != 400 or "%2B" not in r.get_json()["error"]
    r = api.admin("GET", "/ledger?since=yesterday")
    assert r.status_code == 400 and "%2B" not in r.get_json()["error"]
