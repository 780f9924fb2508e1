"""The seat engine through real SCIM and admin requests: every path to a seat, every outcome."""

from __future__ import annotations

from decimal import Decimal

import pytest
from conftest import ADMIN_TOKEN
from sqlalchemy import func, select

from agent.storage.tables import users

SEAT = "urn:ietf:params:scim:schemas:extension:seatagent:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def user(name: str, active: bool = True, **extra):
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "active": active,
        **extra,
    }


def patch(*ops):
    return {"schemas": [PATCH], "Operations": list(ops)}


def create(api, name: str, active: bool = True, **extra) -> dict:
    r = api.scim("POST", "/Users", user(name, active, **extra))
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def seat_of(api, user_id: str) -> dict:
    return api.scim("GET", f"/Users/{user_id}").get_json()[SEAT]


def seats(api) -> dict:
    return api.admin("GET", "/seats").get_json()


def user_count(api) -> int:
    with api.agent.store.read() as tx:
        return tx.conn.execute(select(func.count()).select_from(users)).scalar_one()


def deactivate(api, user_id: str, entra: bool = False):
    op = (
        {"op": "Replace", "path": "active", "value": "False"}
        if entra
        else {"op": "replace", "value": {"active": False}}
    )
    r = api.scim("PATCH", f"/Users/{user_id}", patch(op))
    assert r.status_code == 200, r.get_json()
    return r.get_json()


# -- refuse -------------------------------------------------------------------------------


def test_refuse_create_at_limit_creates_nothing(make_api):
    api = make_api(seats=2)
    create(api, "a")
    create(api, "b")
    r = api.scim("POST", "/Users", user("c"))
    assert r.status_code == 403
    body = r.get_json()
    assert body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    assert body["detail"].startswith("Seat limit reached: 2 of 2 seats in use")
    assert user_count(api) == 2
    assert seats(api)["consumed"] == 2


def test_every_path_to_a_seat_is_refused_the_same_way(make_api):
    """create active, PATCH active (both IdP forms), PUT active, role change, group join,
    userType change: at the limit each gets the same 403 and nothing changes."""
    api = make_api(
        seats=1,
        free_roles=["Assistant"],
        free_user_types=["Room"],
        group_roles={"App Members": "Member", "App Assistants": "Assistant"},
    )
    create(api, "holder")
    inactive = create(api, "inactive", active=False)
    assistant = create(api, "assistant", roles=[{"value": "Assistant"}])
    room = create(api, "room", userType="Room")
    assert seat_of(api, assistant["id"])["licenseState"] == "free"
    assert seat_of(api, room["id"])["licenseState"] == "free"

    attempts = [
        ("POST", "/Users", user("new")),
        ("PATCH", f"/Users/{inactive['id']}", patch({"op": "replace", "value": {"active": True}})),
        (
            "PATCH",
            f"/Users/{inactive['id']}",
            patch({"op": "Replace", "path": "active", "value": "True"}),
        ),
        ("PUT", f"/Users/{inactive['id']}", user("inactive", True)),
        (
            "PATCH",
            f"/Users/{assistant['id']}",
            patch({"op": "replace", "path": "roles", "value": [{"value": "Member"}]}),
        ),
        (
            "PATCH",
            f"/Users/{room['id']}",
            patch({"op": "replace", "path": "userType", "value": "Employee"}),
        ),
    ]
    details = set()
    for method, path, body in attempts:
        before = user_count(api)
        r = api.scim(method, path, body)
        assert r.status_code == 403, (method, path, r.get_json())
        details.add(r.get_json()["detail"])
        assert user_count(api) == before
    assert len(details) == 1
    assert seat_of(api, inactive["id"])["licenseState"] == "inactive"
    assert seat_of(api, assistant["id"])["licenseState"] == "free"
    assert seat_of(api, room["id"])["licenseState"] == "free"
    assert seats(api)["consumed"] == 1


def test_group_join_mapping_to_consuming_role_is_refused_at_limit(make_api):
    api = make_api(seats=1, free_roles=["Assistant"], group_roles={"App Members": "Member"})
    create(api, "holder")
    helper = create(api, "helper", roles=[{"value": "Assistant"}])
    group = api.scim("POST", "/Groups", {"displayName": "App Members"}).get_json()
    r = api.scim(
        "PATCH",
        f"/Groups/{group['id']}",
        patch({"op": "add", "path": "members", "value": [{"value": helper["id"]}]}),
    )
    assert r.status_code == 403
    assert "Seat limit reached" in r.get_json()["detail"]
    members = api.scim("GET", f"/Groups/{group['id']}").get_json().get("members", [])
    assert members == []


# -- queue --------------------------------------------------------------------------------


def test_queue_first_come_first_served_on_every_freeing_path(make_api):
    api = make_api(seats=2, on_full="queue", free_roles=["Assistant"])
    a = create(api, "a")
    b = create(api, "b")
    q1 = create(api, "q1")
    q2 = create(api, "q2")
    q3 = create(api, "q3")
    q4 = create(api, "q4")
    assert q1["active"] is True  # the IdP's view is kept
    assert q1[SEAT] == {"licenseState": "queued", "appStatus": "Queued", "queuePosition": 1}
    assert seat_of(api, q3["id"])["queuePosition"] == 3
    queue = api.admin("GET", "/queue").get_json()["queued"]
    assert [u["userName"] for u in queue] == ["q1", "q2", "q3", "q4"]

    deactivate(api, a["id"])  # deactivation frees a seat -> q1
    assert seat_of(api, q1["id"])["licenseState"] == "licensed"
    assert seat_of(api, q2["id"])["queuePosition"] == 1

    assert api.scim("DELETE", f"/Users/{b['id']}").status_code == 204  # deletion -> q2
    assert seat_of(api, q2["id"])["licenseState"] == "licensed"

    r = api.scim(  # role change to a free role -> q3
        "PATCH",
        f"/Users/{q1['id']}",
        patch({"op": "add", "path": "roles", "value": [{"value": "Assistant"}]}),
    )
    assert r.get_json()[SEAT]["licenseState"] == "free"
    assert seat_of(api, q3["id"])["licenseState"] == "licensed"

    r = api.admin("PUT", "/licenses", {"seats": 3})  # license increase -> q4
    assert r.status_code == 200
    assert [u["userName"] for u in r.get_json()["promoted"]] == ["q4"]
    # Out of the queue: no position left (it said 1, the place it had left).
    assert [u["queuePosition"] for u in r.get_json()["promoted"]] == [None]
    assert [u["licenseState"] for u in r.get_json()["promoted"]] == ["licensed"]
    assert seat_of(api, q4["id"])["licenseState"] == "licensed"
    report = seats(api)
    assert (report["licensed"], report["consumed"], report["queued"]) == (3, 3, 0)
    kinds = [e["kind"] for e in api.admin("GET", "/ledger").get_json()["entries"]]
    assert kinds.count("promote") == 4


def test_queued_user_deactivated_leaves_the_queue(make_api):
    api = make_api(seats=1, on_full="queue")
    a = create(api, "a")
    q1 = create(api, "q1")
    q2 = create(api, "q2")
    deactivate(api, q1["id"], entra=True)
    assert seat_of(api, q1["id"])["licenseState"] == "inactive"
    assert seat_of(api, q2["id"])["queuePosition"] == 1
    deactivate(api, a["id"])
    assert seat_of(api, q2["id"])["licenseState"] == "licensed"
    assert seat_of(api, q1["id"])["licenseState"] == "inactive"


def test_queued_user_deactivated_leaves_the_queue_even_when_inactive_consumes(make_api):
    """inactive_consumes (seed 003) keeps a seat a suspended user *holds*; a queued user holds
    none, so deactivating it takes it out of the queue: it never gets a seat while inactive."""
    api = make_api(seats=1, on_full="queue", inactive_consumes=True)
    a = create(api, "a")
    q1 = create(api, "q1")
    q2 = create(api, "q2")
    assert deactivate(api, q1["id"])[SEAT] == {"licenseState": "inactive", "appStatus": "Inactive"}
    assert seats(api)["queued"] == 1
    assert seat_of(api, q2["id"])["queuePosition"] == 1
    assert api.scim("DELETE", f"/Users/{a['id']}").status_code == 204
    assert seat_of(api, q2["id"])["licenseState"] == "licensed"
    assert seat_of(api, q1["id"]) == {"licenseState": "inactive", "appStatus": "Inactive"}
    report = seats(api)
    assert (report["consumed"], report["queued"]) == (1, 0)


# -- fallback and expand --------------------------------------------------------------------


def test_fallback_gives_free_role_and_no_seat(make_api):
    api = make_api(seats=1, on_full="fallback", fallback_role="Assistant", free_roles=["Assistant"])
    create(api, "a")
    b = create(api, "b")
    assert b[SEAT] == {"licenseState": "free", "appStatus": "Active", "fallbackRole": "Assistant"}
    assert seats(api)["consumed"] == 1


def test_fallback_user_has_the_status_of_the_fallback_role(make_api):
    """A user put on fallback_role gets that role's status, not the status of the consuming
    role it asked for, and keeps it on later changes while on the fallback role."""
    api = make_api(
        seats=1,
        on_full="fallback",
        fallback_role="Assistant",
        free_roles=["Assistant"],
        statuses=[{"name": "Editor", "consumes": True}, {"name": "Viewer", "consumes": False}],
        rules=[
            {"status": "Editor", "active": True, "roles_any": ["Editor"]},
            {"status": "Viewer", "active": True, "roles_any": ["Assistant"]},
        ],
    )
    a = create(api, "a", roles=[{"value": "Editor"}])
    assert a[SEAT] == {"licenseState": "licensed", "appStatus": "Editor"}
    b = create(api, "b", roles=[{"value": "Editor"}])
    assert b[SEAT] == {"licenseState": "free", "appStatus": "Viewer", "fallbackRole": "Assistant"}
    r = api.scim(
        "PATCH", f"/Users/{b['id']}", patch({"op": "replace", "value": {"displayName": "B"}})
    )
    assert r.status_code == 200
    assert seat_of(api, b["id"])["appStatus"] == "Viewer"
    with api.agent.store.read() as tx:
        assert tx.users.get(b["id"]).seat.app_status == "Viewer"
    assert seats(api)["by_status"]["Viewer"] == {"users": 1, "consuming": 0}


def test_expand_raises_licenses_with_prorated_cost_up_to_ceiling(make_api):
    api = make_api(
        seats=1,
        on_full="expand",
        max_seats=2,
        price_per_seat="120.00",
        billing_period="annual",
        renewal_date="2027-05-02",
    )
    create(api, "a")
    b = create(api, "b")
    assert b[SEAT]["licenseState"] == "licensed"
    assert seats(api)["licensed"] == 2
    entries = api.admin("GET", "/ledger").get_json()["entries"]
    expand = [e for e in entries if e["kind"] == "expand"]
    assert len(expand) == 1
    # 2026-11-02 in an annual period 2026-05-02 .. 2027-05-02: 181 of 365 days remain
    assert Decimal(expand[0]["cost"]) == (Decimal("120") * 181 / 365).quantize(Decimal("0.01"))
    r = api.scim("POST", "/Users", user("c"))
    assert r.status_code == 403
    assert "max_seats" in r.get_json()["detail"] or "ceiling" in r.get_json()["detail"].lower()
    billing = api.admin("GET", "/billing").get_json()
    assert Decimal(billing["addon_cost"]) == Decimal(expand[0]["cost"])


# -- licenses -------------------------------------------------------------------------------


def test_license_decrease_never_below_consumption(make_api):
    api = make_api(seats=3)
    ids = [create(api, n)["id"] for n in ("a", "b", "c")]
    r = api.admin("PUT", "/licenses", {"seats": 2})
    assert r.status_code == 409
    assert "3 users consume" in r.get_json()["error"] or "3" in r.get_json()["error"]
    assert seats(api)["licensed"] == 3
    deactivate(api, ids[0])
    r = api.admin("PUT", "/licenses", {"seats": 2})
    assert r.status_code == 200
    assert r.get_json()["seats"] == 2


def test_license_decrease_waits_for_renewal_window(make_api):
    api = make_api(seats=5, decrease="renewal", renewal_date="2027-02-01", renewal_window_days=30)
    r = api.admin("PUT", "/licenses", {"seats": 4})
    assert r.status_code == 409
    assert r.get_json()["allowed_from"] == "2027-01-02"
    assert api.admin("PUT", "/licenses", {"seats": 6}).status_code == 200  # increases always


def test_manual_decrease_is_a_recording_of_the_vendor_change(make_api):
    """decrease = manual (seed 004: only the account manager lowers the allowance): the agent
    never lowers it itself; an admin's PUT records the change made at the vendor, and the
    answer says so and carries the vendor-side steps."""
    api = make_api(seats=5, decrease="manual")
    for name in ("a", "b", "c"):
        create(api, name)
    r = api.admin("PUT", "/licenses", {"seats": 4})
    assert r.status_code == 200
    body = r.get_json()
    assert (body["change"], body["previous"], body["seats"]) == ("recorded", 5, 4)
    assert "made at the vendor" in body["message"]
    assert body["vendor_steps"][0].startswith("1. At the vendor")
    assert "from 5 to 4" in body["vendor_steps"][0]
    assert seats(api)["licensed"] == 4
    last = api.admin("GET", "/ledger?limit=1").get_json()["entries"][0]
    assert last["detail"] == "licenses 5 -> 4 (recorded: lowered at the vendor, decrease = manual)"
    assert api.admin("PUT", "/licenses", {"seats": 2}).status_code == 409  # 3 consume
    assert seats(api)["licensed"] == 4
    up = api.admin("PUT", "/licenses", {"seats": 6}).get_json()
    assert up["change"] == "applied" and "vendor_steps" not in up


def test_anytime_decrease_is_applied_without_vendor_steps(make_api):
    api = make_api(seats=5)
    body = api.admin("PUT", "/licenses", {"seats": 4}).get_json()
    assert (body["change"], body["seats"]) == ("applied", 4)
    assert "vendor_steps" not in body


def test_license_decrease_never_mode(make_api):
    api = make_api(seats=5, decrease="never")
    r = api.admin("PUT", "/licenses", {"seats": 4})
    assert r.status_code == 409
    assert "only rises" in r.get_json()["error"]


@pytest.mark.parametrize(
    "body",
    [{"seats": "5"}, {"seats": 5.5}, {"seats": True}, {"seats": -1}, {"count": 5}, [5], {}],
)
def test_bad_license_input_is_refused_and_changes_nothing(make_api, body):
    api = make_api(seats=5)
    r = api.admin("PUT", "/licenses", body)
    assert r.status_code == 400
    assert "error" in r.get_json()
    assert seats(api)["licensed"] == 5


def ledger_size(api) -> int:
    with api.agent.store.read() as tx:
        return len(tx.ledger.entries(limit=10_000))


@pytest.mark.parametrize("value", [10**30, 2**63, 2**31, 1_000_001])
def test_huge_license_counts_are_a_400_and_change_nothing(make_api, value):
    api = make_api(seats=5)
    before = ledger_size(api)
    r = api.admin("PUT", "/licenses", {"seats": value})
    assert r.status_code == 400
    assert r.get_json() == {"error": "'seats' must be at most 1000000", "max_seats": 1000000}
    assert seats(api)["licensed"] == 5
    assert ledger_size(api) == before
    assert api.admin("PUT", "/licenses", {"seats": 1_000_000}).status_code == 200


@pytest.mark.parametrize("limit", ["100000000000000000000", "0", "-1", "x", "10001", "²"])
def test_ledger_limit_out_of_bounds_is_a_400(make_api, limit):
    api = make_api()
    r = api.admin("GET", "/ledger", query_string={"limit": limit})
    assert r.status_code == 400
    assert "1 to 10000" in r.get_json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/seats?as_of=2026-01-01", None),
        ("GET", "/ledger?sinse=2026-01-01", None),
        ("GET", "/queue?all=1", None),
        ("GET", "/billing?period=last", None),
        ("PUT", "/licenses?dry_run=1", {"seats": 7}),
    ],
)
def test_unknown_query_parameters_are_a_400_and_change_nothing(make_api, method, path, body):
    api = make_api(seats=5)
    r = api.admin(method, path, body)
    assert r.status_code == 400
    assert "unknown query parameter" in r.get_json()["error"]
    assert seats(api)["licensed"] == 5


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/seats", 405),
        ("PATCH", "/licenses", 405),
        ("DELETE", "/queue", 405),
        ("GET", "/nope", 404),
        ("GET", "/users/x/reevaluate", 405),
    ],
)
def test_admin_routing_errors_are_json(make_api, method, path, status):
    api = make_api(seats=5)
    r = api.admin(method, path, {"seats": 1} if method != "GET" else None)
    assert r.status_code == status
    assert r.is_json and r.get_json()["error"]
    if status == 405:
        assert r.headers["Allow"]
    assert seats(api)["licensed"] == 5


def test_admin_json_routing_errors_leave_the_status_page_and_scim_alone(make_api):
    api = make_api()
    page = api.client.get("/admin/login")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert api.client.get("/admin").status_code == 308  # to the status page at /admin/
    r = api.scim("GET", "/Nope")
    assert r.status_code == 404
    assert r.get_json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    assert api.client.get("/nowhere").status_code == 404


def test_ledger_without_since_returns_the_newest_entries_in_time_order(make_api):
    api = make_api(seats=10)
    for name in ("a", "b", "c"):
        create(api, name)
    entries = api.admin("GET", "/ledger?limit=2").get_json()["entries"]
    assert [e["userName"] for e in entries] == ["b", "c"]
    assert entries[0]["seq"] < entries[1]["seq"]
    everything = api.admin("GET", "/ledger").get_json()["entries"]
    assert [e["kind"] for e in everything] == ["licenses", "grant", "grant", "grant"]


def test_ledger_pages_forward_exactly_with_after(make_api):
    """Entries written in the same instant are neither repeated nor skipped: paging goes by
    ``seq`` (``after``), not by time."""
    api = make_api(seats=10)
    for name in ("a", "b", "c", "d", "e"):
        create(api, name)
    seen, after = [], 0
    while True:
        page = api.admin("GET", f"/ledger?after={after}&limit=2").get_json()["entries"]
        if not page:
            break
        seen += [e["userName"] for e in page]
        after = page[-1]["seq"]
    assert seen == [None, "a", "b", "c", "d", "e"]  # the initial license entry first
    for bad in ("-1", "x", "1.5", "9" * 19):
        r = api.admin("GET", f"/ledger?after={bad}")
        assert r.status_code == 400 and "after" in r.get_json()["error"]


def test_admin_requires_admin_token(make_api):
    api = make_api()
    r = api.client.get("/admin/seats", headers={"Authorization": "Bearer scim-test-token"})
    assert r.status_code == 401
    assert r.get_json()["error"]
    r = api.client.put("/admin/licenses", json={"seats": 1})
    assert r.status_code == 401
    assert seats(api)["licensed"] == 1000


def test_seats_report_breaks_down_by_status_and_role(make_api):
    api = make_api(seats=10, free_roles=["Assistant"])
    create(api, "o", roles=[{"value": "Owner"}])
    create(api, "m1", roles=[{"value": "Member"}])
    create(api, "m2", roles=[{"value": "Member"}])
    create(api, "as", roles=[{"value": "Assistant"}])
    create(api, "gone", active=False)
    report = seats(api)
    assert (report["licensed"], report["consumed"], report["available"]) == (10, 3, 7)
    assert report["by_status"]["Active"] == {"users": 4, "consuming": 3}
    assert report["by_status"]["Inactive"] == {"users": 1, "consuming": 0}
    assert report["by_role"] == {"member": 2, "owner": 1}


def test_seats_report_by_role_counts_group_derived_roles_once(make_api):
    """[license] group_roles grant roles too; by_role counts them, and a user holding a role
    both as a SCIM role and through a group (or two groups) counts once."""
    api = make_api(
        seats=10,
        free_roles=["Assistant"],
        group_roles={"App Admins": "Administrator", "Ops Admins": "Administrator"},
    )
    both = create(api, "both", roles=[{"value": "Administrator"}])
    two_groups = create(api, "two-groups")
    via_group = create(api, "via-group", roles=[{"value": "Member"}])
    create(api, "m", roles=[{"value": "Member"}])
    for name, members in (
        ("App Admins", [both, two_groups, via_group]),
        ("ops admins", [two_groups]),
    ):
        r = api.scim(
            "POST",
            "/Groups",
            {
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": name,
                "members": [{"value": u["id"]} for u in members],
            },
        )
        assert r.status_code == 201
    assert seats(api)["by_role"] == {"administrator": 3, "member": 2}


def test_ledger_since_filters_and_rejects_bad_dates(make_api, clock):
    api = make_api(seats=10)
    create(api, "a")
    clock.advance(days=1)
    cut = clock.now.isoformat()
    create(api, "b")
    entries = api.admin("GET", "/ledger", query_string={"since": cut}).get_json()["entries"]
    assert [e["userName"] for e in entries] == ["b"]
    assert api.admin("GET", "/ledger?since=yesterday").status_code == 400


def test_ledger_gives_past_seats_and_the_period_high_water_mark(make_api, clock):
    api = make_api(seats=5)
    a = create(api, "a")
    b = create(api, "b")
    c = create(api, "c")
    clock.advance(hours=1)
    moment = clock.now.isoformat()
    clock.advance(hours=1)
    for u in (a, b, c):
        deactivate(api, u["id"])
    r = api.admin("GET", "/seats", query_string={"at": moment}).get_json()
    assert (r["licensed"], r["consumed"]) == (5, 3)
    assert seats(api)["consumed"] == 0
    billing = api.admin("GET", "/billing").get_json()
    assert (billing["peak_seats"], billing["peak_consumed"]) == (5, 3)
    assert api.admin("GET", "/seats", query_string={"at": "2001-01-01"}).status_code == 404
    assert api.admin("GET", "/seats", query_string={"at": "soon"}).status_code == 400


def test_admin_reevaluate_is_one_more_path_through_the_same_decision(make_api):
    api = make_api(seats=1, on_full="fallback", fallback_role="Assistant", free_roles=["Assistant"])
    a = create(api, "a")
    b = create(api, "b")
    assert b[SEAT]["fallbackRole"] == "Assistant"
    r = api.admin("POST", f"/users/{b['id']}/reevaluate")
    assert r.status_code == 200
    assert r.get_json()["licenseState"] == "free"  # still full: the same outcome, fallback
    deactivate(api, a["id"])
    r = api.admin("POST", f"/users/{b['id']}/reevaluate")
    assert r.get_json()["licenseState"] == "licensed"
    assert seat_of(api, b["id"]) == {"licenseState": "licensed", "appStatus": "Active"}
    assert api.admin("POST", "/users/nope/reevaluate").status_code == 404


def test_admin_reevaluate_refuses_at_the_limit(make_api):
    api = make_api(seats=1)
    create(api, "a")
    b = create(api, "b", active=False)
    with api.agent.store.write() as tx:  # the directory activated b while seats were full...
        rec = tx.users.get(b["id"])
        rec.resource["active"] = True
        tx.users.update(rec, dict(rec.resource), rec.seat, api.agent.clock())
    r = api.admin("POST", f"/users/{b['id']}/reevaluate")
    assert r.status_code == 403
    assert r.get_json()["error"].startswith("Seat limit reached")
    assert seats(api)["consumed"] == 1


# -- reductions and the queue ------------------------------------------------------------------


def test_reduction_frees_seats_without_the_queue_refilling_them(make_api, clock):
    """10 seats, 10 consuming, 2 queued, target 8: the workflow deactivates exactly 2 users;
    the seats they free are not handed to the queue while it reduces consumption, so
    consumption reaches 8 and licenses are lowered to 8 with both users still queued."""
    from test_reductions import invariant
    from test_reductions import setup as reduction_setup

    api, service, _alerts = reduction_setup(make_api, clock, seats=10, on_full="queue")
    for i in range(10):
        clock.advance(days=1)
        create(api, f"u{i}")
    clock.advance(days=30)
    queued = [create(api, f"q{i}")["id"] for i in range(2)]
    assert (seats(api)["consumed"], seats(api)["queued"]) == (10, 2)

    r = api.admin("POST", "/reductions", {"target": 8})
    assert r.status_code == 201, r.get_json()
    rid = r.get_json()["id"]
    assert api.admin("POST", f"/reductions/{rid}/approve").status_code == 200
    done = service.advance(rid)
    assert done.state in ("cleanup", "done"), done.history

    deactivated = [
        c for c in done.as_dict()["plan"]["candidates"] if c.get("outcome") == "deactivated"
    ]
    assert len(deactivated) == 2
    report = seats(api)
    assert (report["licensed"], report["consumed"], report["queued"]) == (8, 8, 2)
    assert [seat_of(api, q)["queuePosition"] for q in queued] == [1, 2]
    assert invariant(api) == (8, 8)
    with api.agent.store.read() as tx:
        kinds = [e.kind for e in tx.ledger.entries(limit=10_000)]
    assert kinds.count("release") == 2 and "promote" not in kinds

    # the workflow over, a license increase serves the queue again
    assert api.admin("PUT", "/licenses", {"seats": 9}).status_code == 200
    assert seat_of(api, queued[0])["licenseState"] == "licensed"


@pytest.mark.parametrize("on_full", ["refuse", "queue", "expand"])
def test_an_approved_reduction_holds_the_seats_above_its_target(make_api, clock, on_full):
    """Between approval and the license change, a new activation may not take a seat the
    workflow is about to remove: every path gives the outcome of a full license (expand
    refuses rather than growing against the workflow); cancelling gives the seats back."""
    from test_reductions import invariant
    from test_reductions import setup as reduction_setup

    extra = {"max_seats": 20} if on_full == "expand" else {}
    api, _service, _alerts = reduction_setup(make_api, clock, seats=10, on_full=on_full, **extra)
    for i in range(6):
        clock.advance(days=1)
        create(api, f"u{i}")
    clock.advance(days=30)
    assert seats(api)["consumed"] == 6
    rid = api.admin("POST", "/reductions", {"target": 6}).get_json()["id"]
    create(api, "before-approval")  # a plan alone holds nothing
    assert seats(api)["consumed"] == 7
    api.admin("POST", "/reductions", {"target": 6})  # a second plan, never approved
    assert api.admin("POST", f"/reductions/{rid}/approve").status_code == 200

    body = user("new-hire", True)
    r = api.scim("POST", "/Users", body)
    if on_full == "queue":
        assert r.status_code == 201
        assert r.get_json()[SEAT]["licenseState"] == "queued"
    else:
        assert r.status_code == 403
        assert "license reduction to 6 seats is in progress" in r.get_json()["detail"]
        assert (
            api.scim("GET", '/Users?filter=userName eq "new-hire"').get_json()["totalResults"] == 0
        )
    report = seats(api)
    assert (report["licensed"], report["consumed"]) == (10, 7)
    assert invariant(api) == (10, 7)

    assert api.admin("POST", f"/reductions/{rid}/cancel", {"reason": "test"}).status_code == 200
    if on_full == "queue":  # the seats it held go to the queue in the cancelling transaction
        assert seats(api)["queued"] == 0
    else:
        assert api.scim("POST", "/Users", body).status_code == 201
    assert seats(api)["consumed"] == 8


# -- reports and causes --------------------------------------------------------------------


def test_reevaluate_that_releases_a_seat_serves_the_queue_at_once(make_api):
    """After Assistant became a free role in the config, re-deciding a user still holding a
    seat for it frees the seat, and the queue gets it in the same transaction."""
    api = make_api(seats=1, on_full="queue")
    asst = create(api, "asst", roles=[{"value": "Assistant"}])
    waiting = create(api, "waiting")
    assert seat_of(api, waiting["id"])["licenseState"] == "queued"
    api = make_api(seats=1, on_full="queue", free_roles=["Assistant"])  # same database
    r = api.admin("POST", f"/users/{asst['id']}/reevaluate")
    assert r.status_code == 200
    assert r.get_json()["licenseState"] == "free"
    assert seat_of(api, waiting["id"])["licenseState"] == "licensed"
    report = seats(api)
    assert (report["consumed"], report["queued"]) == (1, 0)
    with api.agent.store.read() as tx:
        last = tx.ledger.entries(limit=2, newest_first=True)
    assert [(e.kind, e.user_name, e.cause) for e in last] == [
        ("promote", "waiting", "admin"),
        ("release", "asst", "admin"),
    ]


def test_put_without_active_keeps_the_stored_value(make_api):
    """RFC 7643 gives ``active`` no default: a PUT resending the profile without it must not
    reactivate a deactivated user (and hand it a seat)."""
    api = make_api(seats=1)
    gone = create(api, "gone")
    deactivate(api, gone["id"])
    create(api, "b")
    body = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "gone"}
    r = api.scim("PUT", f"/Users/{gone['id']}", {**body, "displayName": "Gone"})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["active"] is False
    assert r.get_json()[SEAT]["licenseState"] == "inactive"
    with api.agent.store.read() as tx:
        stored = tx.users.get(gone["id"])
    assert stored.resource["active"] is False and stored.resource["displayName"] == "Gone"
    assert seats(api)["consumed"] == 1
    r = api.scim("PUT", f"/Users/{gone['id']}", {**body, "Active": True})
    assert r.status_code == 403  # an explicit activation still goes through the decision


def test_ledger_entries_carry_the_request_id(make_api):
    api = make_api(seats=5)
    r = api.scim("POST", "/Users", user("a"), headers={"X-Request-Id": "okta-task-42"})
    assert r.status_code == 201
    assert r.headers["X-Request-Id"] == "okta-task-42"
    r = api.client.put(
        "/admin/licenses",
        json={"seats": 6},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Request-Id": "admin-7"},
    )
    assert r.status_code == 200
    entries = api.admin("GET", "/ledger?limit=2").get_json()["entries"]
    assert [(e["kind"], e["requestId"], e["detail"]) for e in entries] == [
        ("grant", "okta-task-42", "status Active"),
        ("licenses", "admin-7", "licenses 5 -> 6"),
    ]
    with api.agent.store.read() as tx:
        first = tx.ledger.entries(limit=1)[0]
    assert (first.cause, first.request) == ("config", None)  # first start: no request


def test_every_release_in_the_ledger_says_why(make_api):
    """A seat given back says why in the ledger: deactivated, no longer needing one (a free
    role), or deleted (a free role's release said nothing; found by trying the product)."""
    api = make_api(seats=5, free_roles=["Assistant"])
    a, b, c = (create(api, n)["id"] for n in ("a", "b", "c"))
    api.scim("PATCH", f"/Users/{a}", patch({"op": "replace", "value": {"active": False}}))
    api.scim(
        "PATCH",
        f"/Users/{b}",
        patch({"op": "add", "path": "roles", "value": [{"value": "Assistant"}]}),
    )
    assert api.scim("DELETE", f"/Users/{c}").status_code == 204
    entries = api.admin("GET", "/ledger").get_json()["entries"]
    details = {e["userName"]: e["detail"] for e in entries if e["kind"] == "release"}
    assert details == {
        "a": "deactivated",
        "b": "needs no seat now (a free role, status or user type)",
        "c": "user deleted",
    }
