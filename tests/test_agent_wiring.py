"""The whole agent as wired by create_app: SCIM changes reach a real downstream SCIM server
through the outbox, alerts reach a real SMTP server, reconcile finds and repairs drift, and
the scheduler's job functions drive it all."""

from __future__ import annotations

import json

import pytest
from conftest import ADMIN_TOKEN, SCIM_TOKEN, Api, free_port
from smtp_server import SmtpServer
from test_seat_engine import create, deactivate

from agent.app import create_app
from agent.config import settings_from_mapping
from agent.connectors.scim import ScimConnector
from agent.jobs.tasks import Jobs
from agent.services.delivery import deliver_due
from agent.services.group_delivery import GroupHandlers


@pytest.fixture
def smtp():
    server = SmtpServer(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def downstream(any_downstream):
    return any_downstream


@pytest.fixture
def wired(db_url, clock, smtp, downstream):
    apps = []

    def build(
        reductions: dict | None = None,
        alert_after_attempts: int = 5,
        push_groups: bool = False,
        **license,
    ) -> Api:
        settings = settings_from_mapping(
            {
                "database": {"url": db_url},
                "auth": {"scim_token": SCIM_TOKEN, "admin_token": ADMIN_TOKEN},
                "license": {"seats": 2, "on_full": "queue", **license},
                "reductions": reductions or {},
                "downstream": {
                    "type": "scim",
                    "url": downstream.base_url,
                    "token": downstream.token,
                    "timeout_seconds": 5,
                    "alert_after_attempts": alert_after_attempts,
                    "push_groups": push_groups,
                },
                "alerts": {
                    "enabled": True,
                    "smtp_host": smtp.host,
                    "smtp_port": smtp.port,
                    "sender": "seat-agent@example.com",
                    "recipients": ["admins@example.com"],
                },
            }
        )
        app = create_app(settings, clock=clock)
        apps.append(app)
        return Api(app)

    yield build
    for app in apps:
        app.extensions["seat_agent"].store.dispose()


def test_changes_reach_the_downstream_and_alerts_reach_admins(wired, downstream, smtp, clock):
    api = wired()
    jobs = Jobs(api.agent)
    a = create(api, "ann@example.com")
    create(api, "bob@example.com")
    queued = create(api, "cat@example.com")
    # The default configuration keeps seat state off the SCIM resource; the admin API has it.
    assert "urn:ietf:params:scim:schemas:extension:seatagent:2.0:User" not in queued
    seat = api.admin("GET", f"/users/{queued['id']}").get_json()
    assert (seat["licenseState"], seat["queuePosition"], seat["holdsSeat"]) == ("queued", 1, False)
    jobs.deliver_outbox()

    remote = {u["userName"]: u for u in downstream.users()}
    assert set(remote) == {"ann@example.com", "bob@example.com", "cat@example.com"}
    assert remote["ann@example.com"]["active"] is True
    assert remote["cat@example.com"]["active"] is False  # queued: no seat in the app
    assert remote["ann@example.com"]["externalId"] == a["id"]
    subjects = [m.subject for m in smtp.received]
    assert any("exhausted" in s.lower() or "limit" in s.lower() for s in subjects), subjects
    assert any("queued" in s.lower() for s in subjects), subjects

    deactivate(api, a["id"])  # frees a seat: cat is promoted in the same transaction
    jobs.deliver_outbox()
    remote = {u["userName"]: u for u in downstream.users()}
    assert remote["ann@example.com"]["active"] is False
    assert remote["cat@example.com"]["active"] is True
    assert len(downstream.users()) == 3  # pushes are idempotent: no duplicates


def test_reconcile_finds_and_repairs_downstream_drift(wired, downstream, smtp):
    api = wired()
    jobs = Jobs(api.agent)
    create(api, "ann@example.com")
    jobs.deliver_outbox()
    [remote] = downstream.users()
    downstream.delete(remote["id"])  # someone deleted the account in the app
    downstream.create({"userName": "stranger@example.com", "externalId": "not-ours"})

    report = jobs.reconcile(dry_run=True)
    problems = sorted(d.problem for d in report.drift)
    assert problems == ["missing downstream", "unknown downstream user"]
    jobs.deliver_outbox()
    assert [u["userName"] for u in downstream.users()] == ["stranger@example.com"]

    report = jobs.reconcile()
    assert report.repaired
    jobs.deliver_outbox()
    names = sorted(u["userName"] for u in downstream.users())
    assert names == ["ann@example.com", "stranger@example.com"]  # never deleted the stranger
    assert any("drift" in m.subject.lower() for m in smtp.received)
    drift_mails = [m for m in smtp.received if "drift" in m.subject.lower()]
    jobs.reconcile()  # the same drift again (the stranger) alerts only once
    jobs.deliver_outbox()
    assert len([m for m in smtp.received if "drift" in m.subject.lower()]) == len(drift_mails)


def test_downstream_down_then_back_delivers_everything_once(wired, downstream, clock):
    api = wired()
    jobs = Jobs(api.agent)
    downstream.stop()
    for n in ("a", "b", "c"):
        create(api, n)
    report = jobs.deliver_outbox()
    assert report.retry_later == 3  # the three pushes; alert mails still went out
    with api.agent.store.read() as tx:
        from agent.storage import outbox

        assert outbox.depth(tx).get("push_user") == 3
    downstream.start()
    clock.advance(minutes=10)
    jobs.deliver_outbox()
    assert sorted(u["userName"] for u in downstream.users()) == ["a", "b", "c"]
    with api.agent.store.read() as tx:
        assert outbox.depth(tx).get("push_user", 0) == 0


# -- reductions against the real application (seed 000: users first, check, then licences) -----


def _active_downstream(downstream) -> int:
    return sum(1 for u in downstream.users() if u["active"])


def test_reduction_waits_until_the_application_shows_the_deactivations(wired, downstream, clock):
    api = wired(reductions={"grace_days": 0}, seats=6)
    jobs = Jobs(api.agent)
    for i in range(6):
        clock.advance(hours=1)
        create(api, f"u{i}")
    jobs.deliver_outbox()
    assert _active_downstream(downstream) == 6

    downstream.stop()
    # the plan is made without the application's last logins, and says so (no 500)
    r = api.admin("POST", "/reductions", {"target": 3})
    assert r.status_code == 201, r.get_json()
    planned = r.get_json()
    assert any("last-login data could not be read" in n for n in planned["plan"]["notes"])
    assert {c["activity_source"] for c in planned["plan"]["candidates"]} == {
        "last directory activity"
    }
    rid = planned["id"]
    api.admin("POST", f"/reductions/{rid}/approve")
    jobs.advance_workflows()
    got = api.admin("GET", f"/reductions/{rid}").get_json()
    # the agent counts 3, but the application still shows 6 active users: no licence change
    assert got["state"] == "verifying"
    assert "waiting for 3 of 3 deactivations to reach the application" in got["reason"]
    assert api.admin("GET", "/seats").get_json()["licensed"] == 6
    jobs.advance_workflows()  # waiting again records nothing new
    again = api.admin("GET", f"/reductions/{rid}").get_json()
    assert len(again["history"]) == len(got["history"])

    downstream.start()
    clock.advance(minutes=10)
    jobs.deliver_outbox()
    assert _active_downstream(downstream) == 3
    jobs.advance_workflows()
    done = api.admin("GET", f"/reductions/{rid}").get_json()
    assert done["state"] == "done", done["history"]
    assert api.admin("GET", "/seats").get_json()["licensed"] == 3
    notes = [h["note"] for h in done["history"]]
    assert any("the application agrees" in n for n in notes)


def test_reduction_counts_application_users_unknown_to_the_agent(wired, downstream, clock):
    api = wired(reductions={"grace_days": 0, "verify_timeout_hours": 2}, seats=4)
    jobs = Jobs(api.agent)
    for i in range(4):
        clock.advance(hours=1)
        create(api, f"u{i}")
    jobs.deliver_outbox()
    local = downstream.create({"userName": "app-local-admin"})  # made in the app itself
    rid = api.admin("POST", "/reductions", {"target": 2}).get_json()["id"]
    api.admin("POST", f"/reductions/{rid}/approve")
    jobs.advance_workflows()
    jobs.deliver_outbox()
    jobs.advance_workflows()
    got = api.admin("GET", f"/reductions/{rid}").get_json()
    assert got["state"] == "verifying"
    assert "the application still shows 3 active users, target 2" in got["reason"]
    assert api.admin("GET", "/seats").get_json()["licensed"] == 4

    clock.advance(hours=2)
    jobs.advance_workflows()
    failed = api.admin("GET", f"/reductions/{rid}").get_json()
    assert failed["state"] == "failed"
    assert failed["reason"].startswith("verification timed out after 2 hours: the application")
    assert api.admin("GET", "/seats").get_json()["licensed"] == 4  # never lowered
    assert local["id"] in {u["id"] for u in downstream.users()}  # never deleted


def test_reduction_proceeds_once_the_unknown_user_is_gone(wired, downstream, clock):
    api = wired(reductions={"grace_days": 0}, seats=3)
    jobs = Jobs(api.agent)
    for i in range(3):
        clock.advance(hours=1)
        create(api, f"u{i}")
    jobs.deliver_outbox()
    local = downstream.create({"userName": "app-local-admin"})
    rid = api.admin("POST", "/reductions", {"target": 2}).get_json()["id"]
    api.admin("POST", f"/reductions/{rid}/approve")
    jobs.advance_workflows()
    jobs.deliver_outbox()
    jobs.advance_workflows()
    assert api.admin("GET", f"/reductions/{rid}").get_json()["state"] == "verifying"
    downstream.delete(local["id"])  # the admin removes the stray account in the app
    jobs.advance_workflows()
    assert api.admin("GET", f"/reductions/{rid}").get_json()["state"] == "done"
    assert api.admin("GET", "/seats").get_json()["licensed"] == 2


# -- the downstream down: reconcile still recounts; one alert per outage ----------------------


def test_reconcile_with_the_downstream_down_recounts_and_reports_it(wired, downstream, smtp, clock):
    api = wired(seats=10)
    jobs = Jobs(api.agent)
    create(api, "ann@example.com")
    jobs.deliver_outbox()
    with api.agent.store.write() as tx:  # a counter that drifted
        pool = tx.pool.current()
        tx.pool.update(pool.seats, 5, clock())
    downstream.stop()
    proposals = []
    real_propose = api.agent.reductions.propose_if_due
    api.agent.reductions.propose_if_due = lambda now: proposals.append(now) or real_propose(now)
    report = jobs.reconcile()
    assert len(proposals) == 1  # reductions are still proposed when due
    assert (report.counter_before, report.counter_after) == (5, 1)
    assert api.admin("GET", "/seats").get_json()["consumed"] == 1
    assert [d.problem for d in report.drift] == ["downstream unreachable"]
    assert report.downstream_error and "cannot connect" in report.downstream_error
    with api.agent.store.read() as tx:
        last = json.loads(tx.state.get("last_reconcile"))
    assert last["downstream_error"] == report.downstream_error
    jobs.reconcile()  # still down: no second mail
    jobs.deliver_outbox()
    unreachable = [m for m in smtp.received if "cannot read the application" in m.subject]
    assert len(unreachable) == 1
    assert "Seats were recounted" in unreachable[0].text

    downstream.start()
    assert jobs.reconcile().downstream_error is None  # back: the alert re-arms
    downstream.stop()
    jobs.reconcile()
    downstream.start()
    jobs.deliver_outbox()
    assert len([m for m in smtp.received if "cannot read the application" in m.subject]) == 2


def test_cli_reconcile_with_the_downstream_down_prints_the_finding(
    wired, downstream, db_url, tmp_path
):
    from click.testing import CliRunner

    from agent.cli import main

    api = wired(seats=10)
    create(api, "ann@example.com")
    config = _cli_config(tmp_path, db_url, downstream)
    downstream.stop()
    result = CliRunner().invoke(main, ["reconcile", "--config", str(config)])
    # The recount is done and reported; the comparison is not: exit 1 for scripts and timers.
    assert result.exit_code == 1, result.output
    assert "downstream unreachable" in result.output
    assert "users: 1" in result.output
    assert "Traceback" not in result.output
    as_json = CliRunner().invoke(main, ["reconcile", "--config", str(config), "--json"])
    assert as_json.exit_code == 1, as_json.output
    assert "cannot connect" in json.loads(as_json.stdout)["downstream_error"]
    with api.agent.store.read() as tx:
        assert tx.state.get("last_reconcile") is not None
    status = CliRunner().invoke(main, ["status", "--config", str(config), "--json"])
    assert status.exit_code == 0, status.output
    assert "cannot connect" in json.loads(status.stdout)["downstream_error"]


def test_cli_reconcile_shows_progress_for_the_downstream_pass_too(
    wired, downstream, db_url, tmp_path, monkeypatch
):
    from click.testing import CliRunner

    from agent.cli import main

    api = wired(seats=10)
    create(api, "ann@example.com")
    config = _cli_config(tmp_path, db_url, downstream)
    monkeypatch.setattr("agent.cli._stderr_is_terminal", lambda: True)
    result = CliRunner().invoke(main, ["reconcile", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "seats" in result.stderr and "downstream" in result.stderr
    assert "downstream drift: 1" in result.stdout  # ann was never delivered: missing
    # Not on a terminal (a script, a timer, 2>&1): no bars, so nothing but the report.
    monkeypatch.setattr("agent.cli._stderr_is_terminal", lambda: False)
    result = CliRunner().invoke(main, ["reconcile", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert len(json.loads(result.stdout)["drift"]) == 1


def _cli_config(tmp_path, db_url, downstream):
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""[database]
url = "{db_url}"
[auth]
scim_token = "{SCIM_TOKEN}"
admin_token = "{ADMIN_TOKEN}"
[license]
seats = 10
[downstream]
type = "scim"
url = "{downstream.base_url}"
token = "{downstream.token}"
timeout_seconds = 5
"""
    )
    return config


def test_one_delivery_alert_per_outage_with_the_count_and_the_oldest(
    wired, downstream, smtp, clock
):
    api = wired(alert_after_attempts=2, seats=100)
    jobs = Jobs(api.agent)
    downstream.stop()
    names = [f"user{i}@example.com" for i in range(8)]
    for n in names:
        create(api, n)
    for _ in range(6):  # the breaker tries three per run: all eight reach the threshold
        jobs.deliver_outbox()
        clock.advance(minutes=15)
    failing = [m for m in smtp.received if "Delivery to the application failing" in m.subject]
    assert len(failing) == 1, [m.subject for m in smtp.received]
    assert "8 changes waiting" in failing[0].subject
    text = failing[0].text
    with api.agent.store.read() as tx:
        from agent.storage import outbox

        [oldest] = outbox.failing(tx, 0)[:1]
    assert f"Oldest failing: push_user {oldest.key}" in text
    assert "cannot connect" in text

    downstream.start()
    jobs.deliver_outbox()
    jobs.deliver_outbox()
    jobs.deliver_outbox()
    assert sorted(u["userName"] for u in downstream.users()) == sorted(names)
    downstream.stop()  # a second outage alerts again, once
    create(api, "late@example.com")
    for _ in range(3):
        clock.advance(minutes=15)
        jobs.deliver_outbox()
    failing = [m for m in smtp.received if "Delivery to the application failing" in m.subject]
    assert len(failing) == 2
    assert "1 changes waiting" in failing[1].subject


def test_reconcile_compares_roles_and_reports_app_users_without_external_id(
    wired, downstream, smtp
):
    api = wired(seats=10)
    jobs = Jobs(api.agent)
    create(api, "ann@example.com", roles=[{"value": "Editor"}])
    create(api, "bob@example.com", roles=[{"value": "Viewer"}])
    jobs.deliver_outbox()
    remote = {u["userName"]: u for u in downstream.users()}
    assert remote["ann@example.com"]["roles"][0]["value"] == "Editor"
    downstream.replace(remote["ann@example.com"]["id"], roles=[{"value": "Admin"}])
    downstream.replace(remote["bob@example.com"]["id"], roles=[{"value": "viewer"}])  # case only
    local = downstream.create({"userName": "app-only@example.com"})  # no externalId

    report = jobs.reconcile()
    found = sorted((d.user_name, d.problem, d.expected, d.found) for d in report.drift)
    assert found == [
        ("ann@example.com", "role differs", "Editor", "Admin"),
        ("app-only@example.com", "unknown downstream user", "absent", "present, no externalId"),
    ]
    [unknown] = [d for d in report.drift if d.problem == "unknown downstream user"]
    assert unknown.remote_id == local["id"] and unknown.user_id is None
    jobs.deliver_outbox()
    remote = {u["userName"]: u for u in downstream.users()}
    assert remote["ann@example.com"]["roles"][0]["value"] == "Editor"  # repaired
    assert "app-only@example.com" in remote  # reported, never deleted
    drift_mails = [m for m in smtp.received if "drift" in m.subject.lower()]
    assert len(drift_mails) == 1 and "app-only@example.com" in drift_mails[0].text

    again = jobs.reconcile()
    assert [(d.user_name, d.problem) for d in again.drift] == [
        ("app-only@example.com", "unknown downstream user")
    ]
    jobs.deliver_outbox()
    assert len([m for m in smtp.received if "drift" in m.subject.lower()]) == 1  # alerted once


def test_fifty_users_to_forty_licenses_ends_done_at_the_application(wired, downstream, clock):
    """Seed 000's example end to end against the real application: 50 users on 50 licenses,
    target 40; the plan's 10 users are inactive at the app, and the licenses end at 40."""
    api = wired(reductions={"grace_days": 0}, seats=50, on_full="refuse")
    jobs = Jobs(api.agent)
    for i in range(50):
        clock.advance(hours=1)
        create(api, f"u{i:02d}@example.com")
    jobs.deliver_outbox()
    assert _active_downstream(downstream) == 50

    r = api.admin("POST", "/reductions", {"target": 40})
    assert r.status_code == 201, r.get_json()
    planned = r.get_json()
    rid = planned["id"]
    plan = {c["user_name"] for c in planned["plan"]["candidates"]}
    assert len(plan) == 10
    api.admin("POST", f"/reductions/{rid}/approve")
    for _ in range(10):
        jobs.advance_workflows()
        jobs.deliver_outbox()
        clock.advance(minutes=5)
        if api.admin("GET", f"/reductions/{rid}").get_json()["state"] == "done":
            break
    done = api.admin("GET", f"/reductions/{rid}").get_json()
    assert done["state"] == "done", done["history"]
    seats = api.admin("GET", "/seats").get_json()
    assert (seats["licensed"], seats["consumed"]) == (40, 40)
    remote = downstream.users()
    assert len(remote) == 50  # deactivated, not deleted, and no duplicates
    assert {u["userName"] for u in remote if not u["active"]} == plan


def test_groups_reach_the_application_with_their_members(wired, downstream, clock):
    """[downstream] push_groups: a group created before its members reached the application
    waits for them; membership changes and the deletion follow, each exactly once."""
    api = wired(push_groups=True, seats=10)
    jobs = Jobs(api.agent)
    ann = create(api, "ann@example.com")
    bob = create(api, "bob@example.com")
    group_schema = "urn:ietf:params:scim:schemas:core:2.0:Group"
    r = api.scim(
        "POST",
        "/Groups",
        {
            "schemas": [group_schema],
            "displayName": "Engineering",
            "members": [{"value": ann["id"]}, {"value": bob["id"]}],
        },
    )
    assert r.status_code == 201, r.get_json()
    gid = r.get_json()["id"]
    # The group alone first: its members are not in the application yet, so it waits.
    with ScimConnector(downstream.base_url, downstream.token, 5, push_groups=True) as c:
        only_groups = GroupHandlers(c, api.agent.store).handlers()
        report = deliver_due(api.agent.store, only_groups, clock, 1, 10)
    assert report.retry_later == 1
    assert "waiting for 2 members to reach the application" in report.errors[0]
    assert downstream.groups() == []
    jobs.deliver_outbox()  # the members
    clock.advance(minutes=5)
    jobs.deliver_outbox()  # then the group
    remote_users = {u["userName"]: u["id"] for u in downstream.users()}
    [group] = downstream.groups()
    assert group["displayName"] == "Engineering" and group["externalId"] == gid
    assert {m["value"] for m in group["members"]} == {
        remote_users["ann@example.com"],
        remote_users["bob@example.com"],
    }

    patch_op = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
    r = api.scim(
        "PATCH",
        f"/Groups/{gid}",
        {
            "schemas": [patch_op],
            "Operations": [{"op": "remove", "path": f'members[value eq "{ann["id"]}"]'}],
        },
    )
    assert r.status_code in (200, 204), r.get_json()
    jobs.deliver_outbox()
    [group] = downstream.groups()
    assert [m["value"] for m in group["members"]] == [remote_users["bob@example.com"]]

    assert api.scim("DELETE", f"/Groups/{gid}").status_code == 204
    jobs.deliver_outbox()
    assert downstream.groups() == []
    assert len(downstream.users()) == 2
    with api.agent.store.read() as tx:
        from agent.storage import outbox

        assert outbox.failing(tx, 0) == []


def test_groups_are_not_pushed_unless_asked(wired, downstream):
    api = wired(seats=10)
    ann = create(api, "ann@example.com")
    group_schema = "urn:ietf:params:scim:schemas:core:2.0:Group"
    api.scim(
        "POST",
        "/Groups",
        {"schemas": [group_schema], "displayName": "Eng", "members": [{"value": ann["id"]}]},
    )
    Jobs(api.agent).deliver_outbox()
    assert downstream.groups() == [] and len(downstream.users()) == 1
