"""Refused demand as data (issue 14): every refusal, queueing and fallback is recorded with
who, when, which path and the pool state; counted in /admin/seats and /metrics; listed."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from test_observability import scrape
from test_seat_engine import create, patch, user

from agent.services.refusals import refusals_per_day


def refusals(api, query: str = "") -> dict:
    r = api.admin("GET", f"/refusals{query}")
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def test_a_refused_create_is_recorded_with_who_when_path_and_pool(make_api, clock):
    api = make_api(seats=1)
    create(api, "holder")
    before = clock.now
    r = api.scim("POST", "/Users", user("late@example.com"))
    assert r.status_code == 403
    [row] = refusals(api)["refusals"]
    assert row["outcome"] == "refused"
    assert row["userName"] == "late@example.com"
    assert row["userId"]  # the id it would have had
    assert row["path"] == "scim POST /Users"
    assert (row["licensed"], row["consumed"], row["queued"]) == (1, 1, 0)
    assert datetime.fromisoformat(row["at"]) > before
    report = api.admin("GET", "/seats").get_json()
    assert report["refused"] == {"total": 1, "last_24h": 1}


def test_refused_patch_and_group_membership_name_their_path(make_api):
    api = make_api(seats=1, free_roles=["Assistant"], group_roles={"App Members": "Member"})
    create(api, "holder")
    off = create(api, "off", active=False)
    r = api.scim(
        "PATCH", f"/Users/{off['id']}", patch({"op": "replace", "value": {"active": True}})
    )
    assert r.status_code == 403
    helper = create(api, "helper", roles=[{"value": "Assistant"}])
    group = api.scim("POST", "/Groups", {"displayName": "App Members"}).get_json()
    r = api.scim(
        "PATCH",
        f"/Groups/{group['id']}",
        patch({"op": "add", "path": "members", "value": [{"value": helper["id"]}]}),
    )
    assert r.status_code == 403
    rows = refusals(api)["refusals"]
    assert [(x["userName"], x["path"]) for x in rows] == [
        ("off", "scim PATCH"),
        ("helper", "group membership"),
    ]


def test_queueing_and_fallback_are_recorded_in_their_transaction(make_api):
    api = make_api(seats=1, on_full="queue")
    create(api, "a")
    create(api, "b")
    create(api, "c")
    rows = refusals(api)["refusals"]
    assert [(x["userName"], x["outcome"], x["queued"]) for x in rows] == [
        ("b", "queued", 0),
        ("c", "queued", 1),
    ]
    fb = make_api(seats=1, on_full="fallback", fallback_role="Assistant", free_roles=["Assistant"])
    # the same database: one more user on a full pool goes to the fallback role
    create(fb, "d")
    assert refusals(fb)["refusals"][-1]["outcome"] == "fallback"
    # queueing and fallback are not 403s: the seat report counts refusals only
    assert fb.admin("GET", "/seats").get_json()["refused"]["total"] == 0


def test_refusals_page_by_cursor_and_since(make_api, clock):
    api = make_api(seats=0)
    for i in range(5):
        assert api.scim("POST", "/Users", user(f"u{i}")).status_code == 403
        clock.advance(hours=1)
    first = refusals(api, "?count=2")
    assert [x["userName"] for x in first["refusals"]] == ["u0", "u1"]
    second = refusals(api, f"?count=2&cursor={first['nextCursor']}")
    assert [x["userName"] for x in second["refusals"]] == ["u2", "u3"]
    third = refusals(api, f"?count=2&cursor={second['nextCursor']}")
    assert [x["userName"] for x in third["refusals"]] == ["u4"]
    assert third["nextCursor"] is None
    since = (clock.now - timedelta(hours=2, minutes=30)).isoformat()
    later = refusals(api, f"?since={since.replace('+', '%2B')}")
    assert [x["userName"] for x in later["refusals"]] == ["u3", "u4"]


@pytest.mark.parametrize("query", ["?cursor=abc", "?count=0", "?count=1001", "?since=yesterday"])
def test_bad_refusal_queries_are_400(api, query):
    r = api.admin("GET", f"/refusals{query}")
    assert r.status_code == 400
    assert r.get_json()["error"]


def test_refused_demand_is_a_prometheus_counter(make_api):
    api = make_api(seats=1, on_full="refuse")
    create(api, "a")
    assert api.scim("POST", "/Users", user("b")).status_code == 403
    assert api.scim("POST", "/Users", user("c")).status_code == 403
    samples = scrape(api)
    assert samples[("seat_agent_refused_demand_total", (("outcome", "refused"),))] == 2
    assert samples[("seat_agent_refused_demand_total", (("outcome", "queued"),))] == 0


def test_refusals_per_day_counts_each_outcome_per_utc_day(make_api, clock):
    api = make_api(seats=0, on_full="queue")
    clock.now = datetime(2026, 11, 2, 23, 0, tzinfo=UTC)
    create(api, "q1")
    clock.advance(hours=2)  # the next UTC day
    create(api, "q2")
    ref = make_api(seats=0, on_full="refuse")
    assert ref.scim("POST", "/Users", user("r1")).status_code == 403
    with api.agent.store.read() as tx:
        days = refusals_per_day(tx, datetime(2026, 11, 1, tzinfo=UTC))
        later = refusals_per_day(tx, datetime(2026, 11, 3, tzinfo=UTC))
    assert days == [
        (date(2026, 11, 2), {"refused": 0, "queued": 1, "fallback": 0}),
        (date(2026, 11, 3), {"refused": 1, "queued": 1, "fallback": 0}),
    ]
    assert later == days[1:]


def test_reconcile_records_the_users_it_cannot_seat(make_api):
    from agent.jobs.tasks import Jobs
    from agent.storage.tables import seat_pool

    api = make_api(seats=2)
    create(api, "a")
    create(api, "b")
    with api.agent.store.write() as tx:  # drift: the license count fell under the holders
        tx.conn.execute(seat_pool.update().values(seats=1, consumed=0))
    from agent.storage.tables import users

    with api.agent.store.write() as tx:
        tx.conn.execute(users.update().values(holds_seat=False, license_state="free"))
    Jobs(api.agent).reconcile()
    rows = refusals(api)["refusals"]
    assert [(x["outcome"], x["path"]) for x in rows] == [("refused", "reconcile")]
