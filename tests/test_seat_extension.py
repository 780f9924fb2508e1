"""``[scim] seat_extension``: the seat-agent User extension is an opt-in of the SCIM surface.

Off (the default) nothing of it is declared, returned, filterable or sortable, and seat state
is read from the admin API. On, it is declared in /Schemas and /ResourceTypes and every User
carries it. The seat engine decides the same either way.
"""

from __future__ import annotations

import pytest
from test_seat_engine import create, patch

SEAT = "urn:ietf:params:scim:schemas:extension:seatagent:2.0:User"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


@pytest.fixture
def default_api(make_api):
    return make_api(seat_extension=False, seats=1, on_full="queue")


def test_off_by_default_nothing_of_the_extension_is_declared(default_api):
    api = default_api
    types = api.scim("GET", "/ResourceTypes").get_json()["Resources"]
    user_type = next(t for t in types if t["id"] == "User")
    assert user_type["schemaExtensions"] == [{"schema": ENTERPRISE, "required": False}]
    ids = {s["id"] for s in api.scim("GET", "/Schemas").get_json()["Resources"]}
    assert SEAT not in ids and ENTERPRISE in ids
    r = api.scim("GET", f"/Schemas/{SEAT}")
    assert r.status_code == 404 and r.get_json()["status"] == "404"


def test_off_users_carry_no_seat_state_but_the_engine_decides_the_same(default_api):
    api = default_api
    first = create(api, "ann@example.com")
    second = create(api, "bob@example.com")  # 1 seat, on_full = queue
    for body in (first, second):
        assert body["schemas"] == [USER] and SEAT not in body
    listed = api.scim("GET", "/Users").get_json()["Resources"]
    assert all(SEAT not in u and SEAT not in u["schemas"] for u in listed)
    # The decision is the same as with the extension on: the second user waits for a seat.
    assert api.admin("GET", f"/users/{first['id']}").get_json()["licenseState"] == "licensed"
    waiting = api.admin("GET", f"/users/{second['id']}").get_json()
    assert (waiting["licenseState"], waiting["queuePosition"]) == ("queued", 1)
    assert waiting["appStatus"] == "Queued" and waiting["holdsSeat"] is False
    assert waiting["active"] is True and waiting["fallbackRole"] is None


@pytest.mark.parametrize(
    "query",
    [
        f'filter={SEAT}:licenseState eq "queued"',
        f'filter=userName pr and not ({SEAT}:appStatus eq "Active")',
    ],
)
def test_off_a_filter_on_the_extension_is_an_unknown_attribute(default_api, query):
    api = default_api
    create(api, "ann@example.com")
    r = api.scim("GET", f"/Users?{query}")
    assert r.status_code == 400, r.get_json()
    assert r.get_json()["scimType"] == "invalidFilter"
    assert SEAT in r.get_json()["detail"]
    searched = api.scim(
        "POST",
        "/.search",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter": f'{SEAT}:licenseState eq "licensed"',
        },
    )
    assert searched.status_code == 400 and searched.get_json()["scimType"] == "invalidFilter"


def test_off_sorting_by_the_extension_is_refused(default_api):
    r = default_api.scim("GET", f"/Users?sortBy={SEAT}:licenseState")
    assert r.status_code == 400 and r.get_json()["scimType"] == "invalidValue"


def test_off_a_patch_naming_the_extension_is_ignored_like_any_foreign_extension(default_api):
    api = default_api
    ann = create(api, "ann@example.com")
    bob = create(api, "bob@example.com")  # queued
    r = api.scim(
        "PATCH",
        f"/Users/{bob['id']}",
        patch({"op": "replace", "path": f"{SEAT}:licenseState", "value": "licensed"}),
    )
    assert r.status_code == 200, r.get_json()
    assert SEAT not in r.get_json()
    assert api.admin("GET", f"/users/{bob['id']}").get_json()["licenseState"] == "queued"
    assert api.admin("GET", f"/users/{ann['id']}").get_json()["licenseState"] == "licensed"


def test_on_every_user_carries_it_and_it_is_declared(make_api):
    api = make_api(seat_extension=True, seats=1, on_full="queue")
    create(api, "ann@example.com")
    bob = create(api, "bob@example.com")
    assert bob["schemas"] == [USER, SEAT]
    assert bob[SEAT] == {"licenseState": "queued", "appStatus": "Queued", "queuePosition": 1}
    user_type = api.scim("GET", "/ResourceTypes/User").get_json()
    assert {e["schema"] for e in user_type["schemaExtensions"]} == {ENTERPRISE, SEAT}
    found = api.scim("GET", f'/Users?filter={SEAT}:licenseState eq "queued"').get_json()
    assert [u["id"] for u in found["Resources"]] == [bob["id"]]
    # The admin API says the same as the extension.
    seat = api.admin("GET", f"/users/{bob['id']}").get_json()
    assert (seat["licenseState"], seat["appStatus"], seat["queuePosition"]) == (
        "queued",
        "Queued",
        1,
    )


def test_admin_user_seat_refuses_unknown_users_and_parameters(default_api):
    api = default_api
    r = api.admin("GET", "/users/no-such-user")
    assert r.status_code == 404 and "error" in r.get_json()
    ann = create(api, "ann@example.com")
    r = api.admin("GET", f"/users/{ann['id']}?verbose=1")
    assert r.status_code == 400 and "error" in r.get_json()
    r = api.client.get(f"/admin/users/{ann['id']}")  # no token
    assert r.status_code == 401
