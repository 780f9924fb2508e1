"""The reduction workflow through real SCIM and admin requests, on SQLite and PostgreSQL.

Seed 000: reduce the users first, then the licenses, and only when the plan allows the change.
After every step the invariant holds: licenses never below the users consuming a seat.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import click
import pytest
from click.testing import CliRunner
from conftest import write_config
from sqlalchemy import func, select
from test_seat_engine import SEAT, create, patch, seat_of

from agent.config import ReductionSettings
from agent.jobs.tasks import Jobs
from agent.services.reductions import Reductions
from agent.storage.store import StoreTx
from agent.storage.tables import seat_ledger, users
from agent.web import reductions as reductions_web


class Alerts:
    """Records raise_alert calls (the real alerts service is another module)."""

    def __init__(self) -> None:
        self.raised: list[dict[str, Any]] = []

    def raise_alert(self, tx, key, state, subject, lines, table=None) -> None:
        assert isinstance(tx, StoreTx)
        self.raised.append(
            {"key": key, "state": state, "subject": subject, "lines": lines, "table": table}
        )

    def states(self) -> list[str]:
        return [a["state"] for a in self.raised]


def setup(make_api, clock, reductions: dict | None = None, last_login=None, **license):
    """An app whose reductions service is built here (recording alerts; the app factory
    registers the blueprint)."""
    api = make_api(**license)
    alerts = Alerts()
    service = build(api, clock, reductions, alerts, last_login)
    api.app.extensions[reductions_web.EXTENSION] = service
    return api, service, alerts


def build(api, clock, reductions=None, alerts=None, last_login=None, provisioning=None):
    a = api.agent
    return Reductions(
        a.store,
        provisioning or a.provisioning,
        a.admin,
        ReductionSettings(**{"grace_days": 14, **(reductions or {})}),
        a.settings.license,
        clock,
        alerts=alerts,
        last_login=last_login,
    )


def invariant(api) -> tuple[int, int]:
    """Seed 000: licenses never below consuming users; the counter matches the users."""
    with api.agent.store.read() as tx:
        pool = tx.pool.current()
        holding = tx.users.count_holding_seats()
    assert pool.consumed == holding
    assert pool.seats >= pool.consumed
    return pool.seats, pool.consumed


def names(reduction: dict) -> list[str]:
    return [c["user_name"] for c in reduction["plan"]["candidates"]]


def consuming(api) -> set[str]:
    with api.agent.store.read() as tx:
        return {r[0] for r in tx.conn.execute(select(users.c.user_name).where(users.c.holds_seat))}


def admin_releases(api) -> int:
    with api.agent.store.read() as tx:
        return tx.conn.execute(
            select(func.count())
            .select_from(seat_ledger)
            .where(seat_ledger.c.kind == "release", seat_ledger.c.cause == "admin")
        ).scalar_one()


def populate(api, clock, regular: int, new: int = 0, owner: bool = True) -> dict[str, str]:
    """Users created one day apart (oldest first), then ``new`` ones inside the grace period."""
    ids = {}
    if owner:
        ids["owner"] = create(api, "owner", roles=[{"value": "Owner"}])["id"]
    for i in range(regular):
        clock.advance(days=1)
        ids[f"r{i:02d}"] = create(api, f"r{i:02d}")["id"]
    clock.advance(days=30)
    for i in range(new):
        clock.advance(hours=1)
        ids[f"new{i}"] = create(api, f"new{i}")["id"]
    return ids


# -- seed 000's example --------------------------------------------------------------------


def test_seed_000_fifty_users_to_forty_licenses(make_api, clock):
    """50 users on 50 licenses, target 40: a plan of 10, approved, carried out step by step."""
    rule = {"status": "Suspended", "active": False, "user_types": ["Contractor"]}
    old_login = datetime(2025, 1, 1, tzinfo=UTC)
    logins: dict[str, datetime] = {}
    api, service, alerts = setup(
        make_api,
        clock,
        {"break_glass": ["breakglass"], "cleanup": True, "cleanup_after_days": 30},
        last_login=lambda: logins,
        seats=50,
        rules=[rule],
    )
    ids = {"owner": create(api, "owner", roles=[{"value": "Owner"}])["id"]}
    ids["breakglass"] = create(api, "breakglass")["id"]
    for i in range(3):  # contractors the IdP deactivates: still consuming (a Suspended rule)
        clock.advance(days=1)
        ids[f"c{i}"] = create(api, f"c{i}", userType="Contractor")["id"]
    for i in range(40):
        clock.advance(days=1)
        ids[f"r{i:02d}"] = create(api, f"r{i:02d}")["id"]
    clock.advance(days=20)
    for i in range(3):
        clock.advance(hours=1)
        r = api.scim(
            "PATCH",
            f"/Users/{ids[f'c{i}']}",
            patch({"op": "replace", "path": "active", "value": False}),
        )
        assert r.get_json()[SEAT]["licenseState"] == "licensed"  # suspended, still consuming
    for i in range(5):  # recently active in the directory
        api.scim(
            "PATCH",
            f"/Users/{ids[f'r{i:02d}']}",
            patch({"op": "replace", "path": "displayName", "value": "x"}),
        )
    logins[ids["r05"]] = clock.now  # recently logged in at the application
    logins[ids["r39"]] = old_login  # the newest regular user never logs in
    for i in range(5):
        clock.advance(hours=1)
        ids[f"new{i}"] = create(api, f"new{i}")["id"]
    assert invariant(api) == (50, 50)

    r = api.admin("POST", "/reductions", {"target": 40})
    assert r.status_code == 201, r.get_json()
    red = r.get_json()
    rid = red["id"]
    assert red["state"] == "planned" and red["proposed_by"] == "admin"
    assert red["plan"]["needed"] == 10 and red["plan"]["window"]["kind"] == "now"
    expected = ["c0", "c1", "c2", "r39", "r06", "r07", "r08", "r09", "r10", "r11"]
    assert names(red) == expected
    actions = [c["action"] for c in red["plan"]["candidates"]]
    assert actions == ["delete"] * 3 + ["deactivate"] * 7
    assert red["plan"]["candidates"][3]["activity_source"] == "last login at the application"
    excluded = {e["user_name"]: e["reason"] for e in red["plan"]["excluded"]}
    assert "Owner" in excluded["owner"]
    assert "break-glass" in excluded["breakglass"]
    assert all("grace" in excluded[f"new{i}"] for i in range(5))
    assert alerts.states() == ["awaiting_approval"]
    headers, rows = alerts.raised[0]["table"]
    assert list(headers) == ["userName", "action", "reason", "last activity"]
    assert [r[0] for r in rows] == expected

    # nothing happens before approval
    assert service.advance(rid).state == "planned"
    assert invariant(api) == (50, 50)

    r = api.admin("POST", f"/reductions/{rid}/approve")
    assert r.status_code == 200 and r.get_json()["state"] == "approved"
    assert api.admin("POST", f"/reductions/{rid}/approve").status_code == 409

    assert service.step(rid).state == "deactivating"
    assert invariant(api) == (50, 50)
    step = service.step(rid)
    assert step.state == "verifying"
    assert invariant(api) == (50, 40)
    assert consuming(api).isdisjoint(expected)
    for n in ("c0", "c1", "c2"):
        assert api.scim("GET", f"/Users/{ids[n]}").status_code == 404
    for n in expected[3:]:
        u = api.scim("GET", f"/Users/{ids[n]}").get_json()
        assert u["active"] is False and u[SEAT]["licenseState"] == "inactive"
    assert {"owner", "breakglass", "r05", "new0"} <= consuming(api)

    assert service.step(rid).state == "reducing_licenses"
    assert invariant(api) == (50, 40)
    assert service.step(rid).state == "cleanup"
    assert invariant(api) == (40, 40)
    assert api.admin("GET", "/seats").get_json()["licensed"] == 40
    # the cleanup grace period: deactivated users are kept for now
    assert service.advance(rid).state == "cleanup"
    assert api.scim("GET", f"/Users/{ids['r39']}").status_code == 200
    clock.advance(days=30)
    done = service.advance(rid)
    assert done.state == "done", done.history
    assert invariant(api) == (40, 40)
    for n in expected[3:]:
        assert api.scim("GET", f"/Users/{ids[n]}").status_code == 404
    assert alerts.states() == ["awaiting_approval", "done"]

    # idempotent: advancing again changes nothing
    assert service.advance(rid).state == "done"
    assert service.advance_all() == []
    assert invariant(api) == (40, 40)

    got = api.admin("GET", f"/reductions/{rid}").get_json()
    assert [h["state"] for h in got["history"]] == [
        "planned",
        "approved",
        "deactivating",
        "verifying",
        "reducing_licenses",
        "cleanup",
        "done",
    ]
    listed = api.admin("GET", "/reductions").get_json()["reductions"]
    assert [(x["id"], x["state"], x["users"], x["deactivated"]) for x in listed] == [
        (rid, "done", 10, 10)
    ]


# -- restart and idempotency ---------------------------------------------------------------


class Crashing:
    """A provisioning service that dies right after its n-th change was committed."""

    def __init__(self, real, after: int):
        self.real = real
        self.after = after
        self.calls = 0

    def patch_user(self, *args, **kwargs):
        record = self.real.patch_user(*args, **kwargs)
        self.calls += 1
        if self.calls == self.after:
            raise RuntimeError("process killed")
        return record

    def delete_user(self, *args, **kwargs):
        return self.real.delete_user(*args, **kwargs)


def test_restart_mid_deactivation_never_deactivates_extra_users(make_api, clock):
    api, _, _ = setup(make_api, clock, seats=20)
    populate(api, clock, regular=19)
    crashing = build(api, clock, provisioning=Crashing(api.agent.provisioning, after=4))
    rid = crashing.create(15).id
    crashing.approve(rid)
    with pytest.raises(RuntimeError):
        crashing.advance(rid)
    assert invariant(api) == (20, 16)
    assert crashing.get(rid).state == "deactivating"

    # a new process: a new service object on the same store
    restarted = build(api, clock)
    assert restarted.advance(rid).state == "done"
    assert invariant(api) == (15, 15)
    assert admin_releases(api) == 5
    assert restarted.advance(rid).state == "done"
    assert restarted.advance_all() == []
    assert admin_releases(api) == 5
    outcomes = [c["outcome"] for c in restarted.get(rid).plan["candidates"]]
    # the 4th was deactivated by this reduction just before the crash: the ledger says so
    assert outcomes == ["deactivated"] * 5


def test_user_deactivated_just_before_a_crash_is_cleaned_up(make_api, clock):
    api, _, _ = setup(make_api, clock, seats=12)
    ids = populate(api, clock, regular=11)
    settings = {"cleanup": True, "cleanup_after_days": 30}
    crashing = build(api, clock, settings, provisioning=Crashing(api.agent.provisioning, after=1))
    rid = crashing.create(10).id
    crashing.approve(rid)
    with pytest.raises(RuntimeError):
        crashing.advance(rid)
    off = patch({"op": "replace", "path": "active", "value": False})
    api.scim("PATCH", f"/Users/{ids['r05']}", off)  # the IdP itself frees another seat meanwhile
    restarted = build(api, clock, settings)
    assert restarted.advance(rid).state == "cleanup"
    clock.advance(days=31)
    done = restarted.advance(rid)
    assert done.state == "done", done.history
    by_name = {c["user_name"]: c for c in done.plan["candidates"]}
    assert by_name["r00"]["outcome"] == "deactivated"  # the crash victim, recognised as ours
    assert by_name["r00"]["cleanup"] == "deleted"
    assert api.scim("GET", f"/Users/{ids['r00']}").status_code == 404
    assert by_name["r01"]["outcome"] == "not needed"  # r05's own deactivation sufficed
    # a user the IdP deactivated is never taken for one of ours
    assert api.scim("GET", f"/Users/{ids['r05']}").status_code == 200


def test_repeated_steps_do_not_repeat_work(make_api, clock):
    api, service, _ = setup(make_api, clock, seats=12)
    populate(api, clock, regular=11)
    rid = service.create(10).id
    service.approve(rid)
    for _ in range(3):
        service.step(rid)  # approved -> deactivating -> verifying -> reducing_licenses
    assert service.get(rid).state == "reducing_licenses"
    assert admin_releases(api) == 2
    service.step(rid)
    service.step(rid)
    assert invariant(api) == (10, 10)
    assert admin_releases(api) == 2
    with api.agent.store.read() as tx:
        licenses = tx.conn.execute(
            select(func.count()).select_from(seat_ledger).where(seat_ledger.c.kind == "licenses")
        ).scalar_one()
    assert licenses == 2  # the initial count and one reduction


def test_users_the_idp_deactivates_meanwhile_spare_planned_users(make_api, clock):
    api, service, _ = setup(make_api, clock, seats=14)
    ids = populate(api, clock, regular=13)
    rid = service.create(10).id
    assert names(service.get(rid).as_dict()) == ["r00", "r01", "r02", "r03"]
    off = patch({"op": "replace", "path": "active", "value": False})
    api.scim("PATCH", f"/Users/{ids['r10']}", off)  # the IdP frees a seat itself
    service.approve(rid)
    done = service.advance(rid)
    assert done.state == "done"
    assert [c["outcome"] for c in done.plan["candidates"]] == ["deactivated"] * 3 + ["not needed"]
    assert seat_of(api, ids["r03"])["licenseState"] == "licensed"
    assert admin_releases(api) == 3
    assert invariant(api) == (10, 10)


def test_advance_all_is_the_scheduler_job(make_api, clock):
    api, service, _ = setup(make_api, clock, seats=12)
    populate(api, clock, regular=11)
    rid = service.create(10).id
    api.agent.reductions = service
    assert Jobs(api.agent).advance_workflows() == [service.get(rid)]  # planned: waits
    service.approve(rid)
    [after] = Jobs(api.agent).advance_workflows()
    assert after.state == "done"
    assert invariant(api) == (10, 10)


# -- windows -------------------------------------------------------------------------------


def test_renewal_window_closed_waits_then_reduces(make_api, clock):
    renewal = (clock.now + timedelta(days=60 + 12 + 30)).date()
    api, service, _ = setup(
        make_api,
        clock,
        seats=12,
        decrease="renewal",
        renewal_date=renewal.isoformat(),
        renewal_window_days=30,
    )
    populate(api, clock, regular=11)
    opens = renewal - timedelta(days=30)
    red = api.admin("POST", "/reductions", {"target": 10}).get_json()
    assert red["plan"]["window"] == {
        "kind": "from",
        "opens": opens.isoformat(),
        "detail": red["plan"]["window"]["detail"],
    }
    service.approve(red["id"])
    waiting = service.advance(red["id"])
    assert waiting.state == "reducing_licenses"
    assert opens.isoformat() in (waiting.reason or "")
    assert invariant(api) == (12, 10)
    assert service.advance(red["id"]).state == "reducing_licenses"
    assert invariant(api) == (12, 10)
    clock.now = datetime.combine(opens, datetime.min.time(), tzinfo=UTC) + timedelta(hours=1)
    assert service.advance(red["id"]).state == "done"
    assert invariant(api) == (10, 10)


def test_manual_decrease_waits_for_the_admin_to_record_the_vendor_change(make_api, clock):
    api, service, alerts = setup(make_api, clock, seats=12, decrease="manual")
    populate(api, clock, regular=11)
    red = api.admin("POST", "/reductions", {"target": 10}).get_json()
    assert red["plan"]["window"]["kind"] == "manual"
    api.admin("POST", f"/reductions/{red['id']}/approve")
    waiting = service.advance(red["id"])
    assert waiting.state == "awaiting_manual_license_change"
    steps = waiting.plan["manual_steps"]
    assert steps[0].startswith("1. Check the number of application users")
    assert "account manager" in steps[1] and "from 12 to 10" in steps[1]
    assert 'PUT /admin/licenses {"seats": 10}' in steps[2]
    assert alerts.raised[-1]["state"] == "awaiting_manual_license_change"
    assert alerts.raised[-1]["lines"] == steps
    assert invariant(api) == (12, 10)
    assert service.advance(red["id"]).state == "awaiting_manual_license_change"
    assert invariant(api) == (12, 10)
    r = api.admin("PUT", "/licenses", {"seats": 10})
    assert r.status_code == 200, r.get_json()
    assert service.advance(red["id"]).state == "done"
    assert invariant(api) == (10, 10)
    assert alerts.states() == ["awaiting_approval", "awaiting_manual_license_change", "done"]


# -- cancel --------------------------------------------------------------------------------


class CancelsMidway:
    """Cancels the reduction through the admin API after the n-th deactivation."""

    def __init__(self, real, api, after: int):
        self.real, self.api, self.after, self.calls = real, api, after, 0
        self.rid = ""

    def patch_user(self, *args, **kwargs):
        record = self.real.patch_user(*args, **kwargs)
        self.calls += 1
        if self.calls == self.after:
            r = self.api.admin("POST", f"/reductions/{self.rid}/cancel", {"reason": "wrong target"})
            assert r.status_code == 200
        return record

    def delete_user(self, *args, **kwargs):  # pragma: no cover - not reached
        return self.real.delete_user(*args, **kwargs)


@pytest.mark.parametrize(
    "point",
    ["planned", "approved", "deactivating", "reducing_licenses", "awaiting_manual", "cleanup"],
)
def test_cancel_at_any_point_stops_the_workflow(make_api, clock, point):
    license: dict[str, Any] = {"seats": 14}
    settings: dict[str, Any] = {}
    if point == "reducing_licenses":
        renewal = (clock.now + timedelta(days=200)).date().isoformat()
        license.update(decrease="renewal", renewal_date=renewal)
    if point == "awaiting_manual":
        license["decrease"] = "manual"
    if point == "cleanup":
        settings = {"cleanup": True, "cleanup_after_days": 30}
    api, service, _ = setup(make_api, clock, settings, **license)
    populate(api, clock, regular=13)
    rid = service.create(10).id
    if point != "planned":
        service.approve(rid)
    if point == "deactivating":
        midway = CancelsMidway(api.agent.provisioning, api, after=2)
        midway.rid = rid
        service = build(api, clock, settings, provisioning=midway)
    if point in ("deactivating", "reducing_licenses", "awaiting_manual", "cleanup"):
        service.advance(rid)
    before = invariant(api)
    expected_state = {
        "planned": "planned",
        "approved": "approved",
        "deactivating": "cancelled",
        "reducing_licenses": "reducing_licenses",
        "awaiting_manual": "awaiting_manual_license_change",
        "cleanup": "cleanup",
    }[point]
    assert service.get(rid).state == expected_state
    if point != "deactivating":
        r = api.admin("POST", f"/reductions/{rid}/cancel", {"reason": "wrong target"})
        assert r.status_code == 200
    got = api.admin("GET", f"/reductions/{rid}").get_json()
    assert got["state"] == "cancelled"
    assert got["reason"] == "cancelled by admin: wrong target"
    clock.advance(days=400)  # past every window and grace period
    assert service.advance(rid).state == "cancelled"
    assert service.advance_all() == []
    assert invariant(api) == before
    if point == "deactivating":
        assert before == (14, 12)  # stopped after two of four
    assert api.admin("POST", f"/reductions/{rid}/cancel").status_code == 409
    assert api.admin("POST", f"/reductions/{rid}/approve").status_code == 409
    with api.agent.store.read() as tx:
        assert tx.conn.execute(select(func.count()).select_from(users)).scalar_one() == 14


# -- the IdP re-activates a user -----------------------------------------------------------


def test_idp_reactivation_during_the_workflow_is_refused_and_the_plan_stands(make_api, clock):
    """Once approved, the seats above the target are held: an IdP re-activating a planned user
    (or activating anyone) gets the full-license answer with the reason, and the workflow
    finishes with exactly the users the admin approved, not fresh ones chosen without asking."""
    api, service, _ = setup(make_api, clock, seats=14)
    ids = populate(api, clock, regular=13)
    rid = service.create(10).id
    service.approve(rid)
    service.step(rid)
    assert service.step(rid).state == "verifying"
    assert invariant(api) == (14, 10)
    first = names(service.get(rid).as_dict())
    assert first == ["r00", "r01", "r02", "r03"]
    on = patch({"op": "replace", "path": "active", "value": True})
    r = api.scim("PATCH", f"/Users/{ids['r01']}", on)
    assert r.status_code == 403
    assert "license reduction to 10 seats is in progress" in r.get_json()["detail"]
    assert seat_of(api, ids["r01"])["licenseState"] == "inactive"  # nothing changed
    assert invariant(api) == (14, 10)

    assert service.advance(rid).state == "done"
    assert names(service.get(rid).as_dict()) == first
    assert invariant(api) == (10, 10)
    assert seat_of(api, ids["r04"])["licenseState"] == "licensed"
    # the workflow over, the same request is an ordinary one at a full license
    r = api.scim("PATCH", f"/Users/{ids['r01']}", on)
    assert r.status_code == 403 and "10 of 10 seats in use" in r.get_json()["detail"]


# -- dry run, impossible plans, bad input --------------------------------------------------


def test_dry_run_creates_nothing(make_api, clock):
    api, service, alerts = setup(make_api, clock, seats=12)
    populate(api, clock, regular=11)
    r = api.admin("POST", "/reductions", {"target": 10, "dry_run": True})
    assert r.status_code == 200
    assert names(r.get_json()) == ["r00", "r01"]
    assert api.admin("GET", "/reductions").get_json() == {"reductions": []}
    assert alerts.raised == []
    assert invariant(api) == (12, 12)


def test_not_enough_candidates_is_409_and_creates_nothing(make_api, clock):
    api, service, _ = setup(make_api, clock, seats=6)
    populate(api, clock, regular=2, new=3)
    r = api.admin("POST", "/reductions", {"target": 1})
    assert r.status_code == 409
    body = r.get_json()
    assert body["error"].startswith("Not enough users can stop consuming: 5 must")
    assert "only 2 are eligible" in body["error"]
    assert body["plan"]["shortfall"] == 3
    assert api.admin("GET", "/reductions").get_json() == {"reductions": []}
    dry = api.admin("POST", "/reductions", {"target": 1, "dry_run": True}).get_json()
    assert dry["plan"]["feasible"] is False


def test_only_one_open_reduction_and_nothing_to_reduce(make_api, clock):
    api, service, _ = setup(make_api, clock, seats=12)
    populate(api, clock, regular=11)
    assert api.admin("POST", "/reductions", {"target": 12}).status_code == 409
    first = api.admin("POST", "/reductions", {"target": 11})
    assert first.status_code == 201
    second = api.admin("POST", "/reductions", {"target": 10})
    assert second.status_code == 409
    assert first.get_json()["id"] in second.get_json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"target": "10"},
        {"target": True},
        {"target": -1},
        {"target": 1_000_001},
        {"target": 99999999999999999999999},  # was a 409 advising an impossible license count
        {"target": 1, "extra": 1},
        [1],
        {"target": 1, "dry_run": "yes"},
    ],
)
def test_bad_input_is_400(make_api, clock, body):
    api, _, _ = setup(make_api, clock, seats=3)
    r = api.admin("POST", "/reductions", body)
    assert r.status_code == 400, r.get_json()
    assert "error" in r.get_json()


def test_an_unknown_query_parameter_is_a_400(make_api, clock):
    """As everywhere under /admin (README): never silently ignored."""
    api, _, _ = setup(make_api, clock, seats=3)
    for method, path in (("GET", "/reductions?x=1"), ("POST", "/reductions?dry_run=true")):
        r = api.admin(method, path, {"target": 1} if method == "POST" else None)
        assert r.status_code == 400 and "unknown query parameter" in r.get_json()["error"]
    assert api.admin("GET", "/reductions").get_json() == {"reductions": []}


def test_unknown_id_is_404_and_token_is_required(make_api, clock):
    api, _, _ = setup(make_api, clock, seats=3)
    for method, path in (("GET", "/nope"), ("POST", "/nope/approve"), ("POST", "/nope/cancel")):
        assert api.admin(method, "/reductions" + path).status_code == 404
    assert api.client.get("/admin/reductions").status_code == 401
    r = api.client.post(
        "/admin/reductions", json={"target": 1}, headers={"Authorization": "Bearer wrong"}
    )
    assert r.status_code == 401


# -- cleanup -------------------------------------------------------------------------------


def test_cleanup_disabled_never_deletes(make_api, clock):
    api, service, _ = setup(make_api, clock, {"cleanup": False}, seats=12)
    ids = populate(api, clock, regular=11)
    rid = service.create(10).id
    service.approve(rid)
    assert service.advance(rid).state == "done"
    clock.advance(days=365)
    service.advance_all()
    for n in ("r00", "r01"):
        assert api.scim("GET", f"/Users/{ids[n]}").status_code == 200


def test_cleanup_waits_for_grace_and_keeps_users_the_idp_reactivated(make_api, clock):
    api, service, _ = setup(make_api, clock, {"cleanup": True, "cleanup_after_days": 10}, seats=13)
    ids = populate(api, clock, regular=12)
    rid = service.create(10).id
    service.approve(rid)
    assert service.advance(rid).state == "cleanup"
    assert invariant(api) == (10, 10)
    clock.advance(days=9)
    assert service.advance(rid).state == "cleanup"
    for n in ("r00", "r01", "r02"):
        assert api.scim("GET", f"/Users/{ids[n]}").status_code == 200
    # the IdP tries to re-activate r01, but no seat is free: r01 stays inactive
    r = api.scim(
        "PATCH", f"/Users/{ids['r01']}", patch({"op": "replace", "path": "active", "value": True})
    )
    assert r.status_code == 403  # no seat free (on_full = refuse): still inactive
    clock.advance(days=2)
    done = service.advance(rid)
    assert done.state == "done"
    assert [c["cleanup"] for c in done.plan["candidates"]] == ["deleted"] * 3
    for n in ("r00", "r01", "r02"):
        assert api.scim("GET", f"/Users/{ids[n]}").status_code == 404
    assert invariant(api) == (10, 10)


def test_cleanup_keeps_a_user_the_idp_reactivated(make_api, clock):
    api, service, _ = setup(
        make_api,
        clock,
        {"cleanup": True, "cleanup_after_days": 10},
        seats=13,
        free_roles=["Assistant"],
    )
    ids = populate(api, clock, regular=12)
    rid = service.create(10).id
    service.approve(rid)
    assert service.advance(rid).state == "cleanup"
    r = api.scim(
        "PATCH",
        f"/Users/{ids['r01']}",
        patch(
            {"op": "replace", "path": "active", "value": True},
            {"op": "add", "path": "roles", "value": [{"value": "Assistant"}]},
        ),
    )
    assert r.status_code == 200 and r.get_json()["active"] is True
    clock.advance(days=11)
    done = service.advance(rid)
    assert done.state == "done"
    cleanup = {c["user_name"]: c["cleanup"] for c in done.plan["candidates"]}
    assert cleanup == {
        "r00": "deleted",
        "r01": "kept: re-activated by the directory",
        "r02": "deleted",
    }
    assert api.scim("GET", f"/Users/{ids['r01']}").status_code == 200


# -- proposals -----------------------------------------------------------------------------


def test_propose_after_seats_stay_unused(make_api, clock):
    settings = {"propose_unused_above": 5, "propose_after_days": 7}
    api, service, alerts = setup(make_api, clock, settings, seats=20)
    for i in range(10):  # 10 consume, 10 free
        clock.advance(hours=1)
        create(api, f"u{i}")
    assert service.propose_if_due(clock()) is None  # the pool exists for less than 7 days
    # a dip below the threshold restarts the count
    clock.advance(days=3)
    extra = [create(api, f"x{i}")["id"] for i in range(6)]
    for user_id in extra:
        assert api.scim("DELETE", f"/Users/{user_id}").status_code == 204
    clock.advance(days=6)
    assert service.propose_if_due(clock()) is None
    clock.advance(days=2)
    proposed = service.propose_if_due(clock())
    assert proposed is not None
    assert (proposed.proposed_by, proposed.state, proposed.target) == ("reconcile", "planned", 10)
    assert proposed.plan["trigger"] == "unused" and proposed.plan["needed"] == 0
    assert alerts.states() == ["awaiting_approval"]
    assert service.propose_if_due(clock()) is None  # never two open
    service.cancel(proposed.id, "not now")
    assert service.propose_if_due(clock()) is None  # not repeated at once
    clock.advance(days=8)
    again = service.propose_if_due(clock())
    assert again is not None and again.id != proposed.id


def test_reconcile_job_proposes_and_auto_approve_completes(make_api, clock):
    settings = {"propose_unused_above": 3, "propose_after_days": 1, "auto_approve": True}
    api, service, alerts = setup(make_api, clock, settings, seats=10)
    populate(api, clock, regular=4)  # 5 consume
    api.agent.reductions = service
    clock.advance(days=2)
    Jobs(api.agent).reconcile()
    [proposed] = service.list_all()
    assert (proposed.state, proposed.target, proposed.proposed_by) == ("approved", 5, "reconcile")
    assert alerts.states() == ["proposed"]
    Jobs(api.agent).advance_workflows()
    assert service.get(proposed.id).state == "done"
    assert invariant(api) == (5, 5)


def test_propose_at_renewal_once_per_renewal(make_api, clock):
    renewal = (clock.now + timedelta(days=70)).date()  # the window opens on day 40
    api, service, _ = setup(
        make_api,
        clock,
        {"propose_at_renewal": True},
        seats=10,
        decrease="renewal",
        renewal_date=renewal.isoformat(),
        renewal_window_days=30,
    )
    populate(api, clock, regular=5)  # 6 consume; the clock is now 35 days on
    assert service.propose_if_due(clock()) is None  # window opens 30 days before renewal
    clock.advance(days=5)
    proposed = service.propose_if_due(clock())
    assert proposed is not None
    assert (proposed.target, proposed.plan["trigger"], proposed.plan["window"]["kind"]) == (
        6,
        "renewal",
        "now",
    )
    service.cancel(proposed.id)
    assert service.propose_if_due(clock()) is None  # once per renewal date


# -- the command line ----------------------------------------------------------------------


def cli_group() -> click.Group:
    from agent.cli_reductions import register

    @click.group()
    def main() -> None:
        pass

    register(main)
    return main


def test_cli_reduce_dry_run_create_approve_cancel(make_api, clock, db_url, tmp_path):
    clock.now = datetime.now(UTC) - timedelta(days=90)  # the CLI runs on the real clock
    api = make_api(seats=12)
    populate(api, clock, regular=11)
    config = tmp_path / "agent.toml"
    write_config(config, db_url, 8080, seats=12)
    main = cli_group()

    def run(*args: str, input: str | None = None):
        return CliRunner().invoke(main, [*args, "--config", str(config)], input=input)

    r = run("reduce", "--to", "10", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "dry run: nothing was created" in r.output
    assert "r00" in r.output and "r01" in r.output and "userName" in r.output
    r = run("reductions", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"reductions": []}

    r = run("reduce", "--to", "10", input="n\n")
    assert r.exit_code == 1 and "not created" in r.output
    r = run("reduce", "--to", "0", "--yes")
    assert r.exit_code == 1 and "Not enough users" in r.output

    r = run("reduce", "--to", "10", "--yes", "--json")
    assert r.exit_code == 0, r.output
    created = json.loads(r.output)
    rid = created["id"]
    assert created["state"] == "planned"
    r = run("reductions", "show", rid)
    assert r.exit_code == 0 and "planned" in r.output and "r01" in r.output
    r = run("reductions", "approve", rid, "--json")
    assert r.exit_code == 0 and json.loads(r.output)["state"] == "approved"
    r = run("reductions", "approve", rid)
    assert r.exit_code == 1 and "cannot become approved" in r.output
    r = run("reductions", "cancel", rid, "--reason", "testing")
    assert r.exit_code == 0 and "cancelled by cli: testing" in r.output
    r = run("reductions", "show", "nope")
    assert r.exit_code == 1 and "not found" in r.output
    r = run("reductions", "list")
    assert r.exit_code == 0 and rid in r.output and "cancelled" in r.output
    assert invariant(api) == (12, 12)


def test_real_alerts_mail_the_manual_steps(make_api, clock):
    """With the alerts service, each state change is one email in the outbox."""
    from agent.config import AlertSettings
    from agent.services.alerts import Alerts as AlertService
    from agent.storage.tables import outbox as outbox_table

    api = make_api(seats=12, decrease="manual")
    alerts = AlertService(AlertSettings(enabled=True, recipients=["admin@example.com"]), 1, clock)
    service = build(api, clock, alerts=alerts)
    populate(api, clock, regular=11)
    rid = service.create(10).id
    service.approve(rid)
    assert service.advance(rid).state == "awaiting_manual_license_change"
    assert service.advance(rid).state == "awaiting_manual_license_change"  # mailed once
    with api.agent.store.read() as tx:
        rows = tx.conn.execute(
            select(outbox_table.c.payload)
            .where(outbox_table.c.kind == "email")
            .order_by(outbox_table.c.seq)
        ).all()
    mails = [json.loads(r[0]) for r in rows]
    texts = [
        m["text"]
        for m in mails
        if "reduction" in m["subject"].lower() or "licenses" in m["subject"]
    ]
    assert len(texts) == 2, [m["subject"] for m in mails]
    assert "r00" in texts[0] and "r01" in texts[0]  # the plan table
    assert "1. Check the number of application users" in texts[1]
    assert "account manager at the vendor and ask them to reduce the licences from 12" in texts[1]
    assert 'PUT /admin/licenses {"seats": 10}' in texts[1]
