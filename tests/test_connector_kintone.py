"""The Kintone connector against a real stand-in of the cybozu.com User API on loopback
(tests/vendor_kintone.py), then end to end through the app on SQLite and PostgreSQL: SCIM
provisioning arrives once, deactivations arrive, seed 000's reduction 50 -> 40 finishes with
exactly the planned 10 users inactive in Kintone, drift is found and repaired, and a Kintone
that is down then up gets every change exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import ADMIN_TOKEN, SCIM_TOKEN, Api, FakeClock
from test_seat_engine import create, patch
from vendor_kintone import (
    API_TOKEN,
    LOGIN,
    PASSWORD,
    SERVICES,
    KintoneServer,
    running_kintone,
)

from agent.app import create_app
from agent.cli import main
from agent.config import ConfigError, settings_from_mapping
from agent.connectors import build_connector
from agent.connectors.base import DeliveryError, EffectiveUser
from agent.connectors.kintone import KintoneConnector
from agent.jobs.tasks import Jobs
from agent.services.delivery import PushHandlers, deliver_due
from agent.storage import outbox
from agent.storage.outbox import OutboxMessage


@pytest.fixture
def kintone() -> Iterator[KintoneServer]:
    with running_kintone() as server:
        yield server


def connect(server: KintoneServer, **kw: Any) -> KintoneConnector:
    kw.setdefault("login_name", LOGIN)
    secret = kw.pop("secret", PASSWORD)
    return KintoneConnector(server.base_url, secret, timeout=5, **kw)


@pytest.fixture
def connector(kintone: KintoneServer) -> Iterator[KintoneConnector]:
    with connect(kintone) as c:
        yield c


def state(name: str = "ada", active: bool = True, role: str | None = None, **kw) -> EffectiveUser:
    return EffectiveUser(
        user_id=kw.pop("user_id", f"id-{name}"),
        user_name=name,
        active=active,
        app_status="active" if active else "inactive",
        role=role,
        display_name=kw.pop("display_name", name.title()),
        emails=kw.pop("emails", [{"value": f"{name}@example.com", "primary": True}]),
    )


# -- the connector -----------------------------------------------------------------------------


def test_push_creates_once_then_updates_only_what_changed(kintone, connector):
    remote = connector.push_user(state("ada"), None)
    user = kintone.by_code("ada")
    assert user is not None and remote == user["id"]
    assert (user["name"], user["email"], user["valid"]) == ("Ada", "ada@example.com", True)
    add = next(r for r in kintone.requests if r.method == "POST")
    assert len(add.body["users"][0]["password"]) >= 16  # generated: add-users requires one

    # a resend (crash before the id was recorded) finds the user by login name: no second add
    assert connector.push_user(state("ada"), None) == remote
    assert connector.push_user(state("ada"), remote) == remote
    assert kintone.writes_for("ada") == {"POST": 1}

    connector.push_user(state("ada", active=False), remote)
    assert kintone.by_code("ada")["valid"] is False
    connector.push_user(state("ada", display_name="Ada L."), remote)
    assert kintone.by_code("ada")["name"] == "Ada L."
    assert kintone.by_code("ada")["valid"] is True
    assert kintone.writes_for("ada") == {"POST": 1, "PUT": 2}
    assert len(kintone.users) == 1


def test_an_active_user_gets_the_kintone_service_and_keeps_its_others(kintone, connector):
    remote = connector.push_user(state("ada"), None)
    assert kintone.services["ada"] == ["kintone"]
    assert kintone.application_users() == {"ada"}
    kintone.services["ada"] = ["garoon"]  # the Kintone administrator took kintone away
    [listed] = list(connector.list_users())
    assert listed.active is False  # valid, but not an application user
    connector.push_user(state("ada"), remote)
    assert kintone.services["ada"] == ["garoon", "kintone"]
    connector.push_user(state("ada"), remote)
    assert kintone.count("PUT", SERVICES) == 2  # nothing to grant the third time
    connector.push_user(state("ada", active=False), remote)
    assert kintone.services["ada"] == ["garoon", "kintone"]  # deactivation: valid false only
    assert kintone.application_users() == set()


def test_a_user_the_admin_created_in_kintone_is_adopted(kintone, connector):
    existing = kintone.add("bob", valid=False, name="Robert")
    assert connector.push_user(state("bob"), None) == existing["id"]
    assert kintone.count("POST") == 0
    assert (existing["valid"], existing["name"]) == (True, "Bob")


def test_an_add_refused_because_the_login_name_exists_adopts_that_user(kintone, connector):
    def admin_adds_it_first(request) -> None:
        if request.method == "POST" and kintone.by_code("ada") is None:
            kintone.add("ada", valid=False)  # between our lookup and our add

    kintone.before = admin_adds_it_first
    remote = connector.push_user(state("ada"), None)
    assert remote == kintone.by_code("ada")["id"]
    assert kintone.by_code("ada")["valid"] is True  # adopted, then updated
    assert len(kintone.users) == 1
    assert kintone.writes_for("ada") == {"POST": 1, "PUT": 1}


def test_a_login_name_changed_in_the_idp_is_renamed(kintone, connector):
    remote = connector.push_user(state("ada"), None)
    assert connector.push_user(state("ada.lovelace", user_id="id-ada"), remote) == remote
    assert kintone.by_code("ada") is None
    assert kintone.by_code("ada.lovelace")["id"] == remote
    assert kintone.count("PUT", "/v1/users/codes.json") == 1
    assert len(kintone.users) == 1


def test_delete_and_a_delete_of_a_user_already_gone(kintone, connector):
    remote = connector.push_user(state("ada"), None)
    connector.delete_user("id-ada", remote)
    assert kintone.users == {}
    connector.delete_user("id-ada", remote)  # a resend: already gone is success
    connector.delete_user("id-never", None)  # never delivered: nothing to do
    assert kintone.count("DELETE") == 1


def test_on_delete_disable_keeps_the_user_inactive(kintone):
    with connect(kintone, on_delete="disable") as c:
        remote = c.push_user(state("ada"), None)
        c.delete_user("id-ada", remote)
        c.delete_user("id-ada", remote)
    assert kintone.by_code("ada")["valid"] is False
    assert kintone.count("DELETE") == 0
    assert kintone.writes_for("ada") == {"POST": 1, "PUT": 1}


def test_roles_move_between_the_mapped_groups_and_keep_other_groups(kintone):
    roles = {"Editor": "editors", "Viewer": "viewers"}
    with connect(kintone, role_groups=roles) as c:
        remote = c.push_user(state("ada", role="Editor"), None)
        assert kintone.memberships["ada"] == ["everyone", "editors"]
        kintone.memberships["ada"].append("hr")  # a group the admin manages in Kintone
        kintone.groups.add("hr")
        c.push_user(state("ada", role="Viewer"), remote)
        assert sorted(kintone.memberships["ada"]) == ["everyone", "hr", "viewers"]
        [listed] = list(c.list_users())
        assert listed.role == "Viewer"
        plan = c.dry_run(state("ada", role="Editor"))
        assert plan["requests"] == [
            {
                "method": "PUT",
                "url": kintone.base_url + "/v1/user/groups.json",
                "body": {"code": "ada", "groups": ["hr", "editors"]},
            }
        ]
        assert c.dry_run(state("ada", role="Owner"))["problems"] == [
            "role 'Owner' has no Kintone group in [downstream] role_groups: the user would be"
            " in none of the groups listed there"
        ]
        c.push_user(state("ada", role=None), remote)
        assert sorted(kintone.memberships["ada"]) == ["everyone", "hr"]
        puts = kintone.count("PUT", "/v1/user/groups.json")
        c.push_user(state("ada", role=None), remote)  # nothing to change: nothing written
        assert kintone.count("PUT", "/v1/user/groups.json") == puts == 3


def test_list_users_pages_by_offset_and_size(kintone):
    for i in range(5):
        kintone.add(f"u{i}", valid=i % 2 == 0)
    with connect(kintone, page_size=2) as c:
        listed = list(c.list_users())
    assert [u.user_name for u in listed] == [f"u{i}" for i in range(5)]
    assert [u.active for u in listed] == [True, False, True, False, True]
    assert all(u.external_id is None and u.role is None for u in listed)
    assert kintone.count("GET") == 3  # 2 + 2 + 1: the short page is the last
    assert kintone.count("GET", SERVICES) == 3  # the same windows of get-user-services


def test_list_users_with_an_exact_multiple_reads_one_empty_page(kintone):
    for i in range(4):
        kintone.add(f"u{i}")
    with connect(kintone, page_size=2) as c:
        assert len(list(c.list_users())) == 4
    assert kintone.count("GET") == 3


@pytest.mark.parametrize("status", [401, 520])
def test_wrong_password_is_permanent_and_names_the_setting(kintone, status):
    kintone.auth_failure_status = status
    with connect(kintone, secret="wrong") as c, pytest.raises(DeliveryError) as err:
        c.push_user(state("ada"), None)
    assert err.value.permanent
    assert f"HTTP {status} CB_WA01" in str(err.value) and "login_name" in str(err.value)
    assert kintone.users == {}


def test_an_api_token_is_sent_as_bearer(kintone):
    with connect(kintone, login_name=None, secret=API_TOKEN) as c:
        c.push_user(state("ada"), None)
    assert kintone.by_code("ada") is not None
    with connect(kintone, login_name=None, secret="bad") as c, pytest.raises(DeliveryError) as e:
        c.push_user(state("bob"), None)
    assert e.value.permanent and "API token" in str(e.value)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"display_name": "x" * 129}, "name (display name, from the SCIM displayName"),
        ({"emails": [{"value": "a" * 250 + "@example.com"}]}, "email (email, from"),
    ],
)
def test_a_refused_field_is_permanent_and_named(kintone, connector, kw, field):
    with pytest.raises(DeliveryError) as err:
        connector.push_user(state("ada", **kw), None)
    assert err.value.permanent
    assert field in str(err.value) and "identity provider" in str(err.value)
    assert kintone.users == {}
    plan = connector.dry_run(state("ada", **kw))
    assert [p for p in plan["problems"] if p.startswith(field.split(" ")[0])]


def test_a_login_name_too_long_is_named(kintone, connector):
    with pytest.raises(DeliveryError) as err:
        connector.push_user(state("x" * 129), None)
    assert err.value.permanent and "code (login name, from the SCIM userName)" in str(err.value)


def test_429_honours_retry_after_and_5xx_is_temporary(kintone, connector):
    kintone.fail_next(429, retry_after="7")
    with pytest.raises(DeliveryError) as err:
        connector.push_user(state("ada"), None)
    assert (err.value.permanent, err.value.retry_after) == (False, 7.0)
    kintone.fail_next(503, retry_after="Thu, 01 Jan 2099 00:00:00 GMT")
    with pytest.raises(DeliveryError) as err:
        connector.push_user(state("ada"), None)
    assert not err.value.permanent and err.value.retry_after > 0
    kintone.fail_next(500)
    with pytest.raises(DeliveryError) as err:
        connector.push_user(state("ada"), None)
    assert (err.value.permanent, err.value.retry_after) == (False, None)
    assert kintone.users == {}
    connector.push_user(state("ada"), None)
    assert kintone.writes_for("ada") == {"POST": 1}


def test_describe_and_dry_run_send_no_write(kintone, connector):
    facts = connector.describe()
    assert facts["type"] == "kintone" and facts["reachable"] and facts["error"] is None
    assert facts["paging"]["max_size"] == 100 and "X-Cybozu-Authorization" in facts["auth"]
    plan = connector.dry_run(state("ada"))
    assert plan["problems"] == []
    add, grant = plan["requests"]
    assert add["method"] == "POST" and add["body"]["users"][0]["code"] == "ada"
    assert "never stored" in add["body"]["users"][0]["password"]
    assert grant["url"].endswith(SERVICES)
    assert grant["body"] == {"users": [{"code": "ada", "services": ["kintone"]}]}
    connector.push_user(state("ada"), None)
    writes = len([r for r in kintone.requests if r.method != "GET"])
    assert connector.dry_run(state("ada"))["requests"] == []
    [put] = connector.dry_run(state("ada", active=False))["requests"]
    assert put["method"] == "PUT" and put["body"]["users"][0]["valid"] is False
    assert len([r for r in kintone.requests if r.method != "GET"]) == writes  # no write
    kintone.stop()
    down = connector.describe()
    assert down["reachable"] is False and "cannot connect" in down["error"]


def test_config_builds_the_connector_and_refuses_a_missing_password(kintone, monkeypatch):
    monkeypatch.delenv("SEAT_AGENT_DOWNSTREAM_TOKEN", raising=False)
    ds = {"type": "kintone", "url": kintone.base_url, "login_name": LOGIN}
    with pytest.raises(ConfigError, match="password of login_name 'seat-admin'") as err:
        settings_from_mapping({"downstream": ds})  # refused at start, before any request
    assert "SEAT_AGENT_DOWNSTREAM_TOKEN" in str(err.value)
    with pytest.raises(ConfigError, match="a cybozu.com API token"):
        settings_from_mapping({"downstream": {**ds, "login_name": None}})
    monkeypatch.setenv("SEAT_AGENT_DOWNSTREAM_TOKEN", PASSWORD)
    built = build_connector(settings_from_mapping({"downstream": ds}).downstream)
    assert isinstance(built, KintoneConnector) and built.describe()["reachable"]
    with pytest.raises(ConfigError, match="role_groups is a setting of type 'kintone' only"):
        settings_from_mapping(
            {"downstream": {"type": "scim", "url": "http://x", "role_groups": {"a": "b"}}}
        )
    with pytest.raises(ConfigError, match="on_delete is a setting of type 'kintone' only"):
        settings_from_mapping({"downstream": {"type": "none", "on_delete": "disable"}})
    with pytest.raises(ConfigError, match="downstream.on_delete"):
        settings_from_mapping({"downstream": {**ds, "on_delete": "archive"}})
    with pytest.raises(ConfigError, match="role_groups: 'Editor' = ''"):
        settings_from_mapping({"downstream": {**ds, "role_groups": {"Editor": ""}}})


# -- end to end through the app ----------------------------------------------------------------


def make_app(db_url: str, clock: FakeClock, server: KintoneServer, **license: Any) -> Api:
    settings = settings_from_mapping(
        {
            "database": {"url": db_url},
            "auth": {"scim_token": SCIM_TOKEN, "admin_token": ADMIN_TOKEN},
            "scim": {"seat_extension": True},
            "license": {"seats": 1000, **license},
            "downstream": {
                "type": "kintone",
                "url": server.base_url,
                "login_name": LOGIN,
                "token": PASSWORD,
                "backoff_base_seconds": 2,
                "backoff_max_seconds": 10,
            },
        }
    )
    return Api(create_app(settings, clock=clock))


@pytest.fixture
def app_api(db_url, clock, kintone) -> Iterator[Api]:
    api = make_app(db_url, clock, kintone, seats=50)
    yield api
    api.agent.store.dispose()


def deliver(api: Api) -> Any:
    return Jobs(api.agent).deliver_outbox()


def deactivate(api: Api, user_id: str) -> None:
    r = api.scim(
        "PATCH", f"/Users/{user_id}", patch({"op": "replace", "path": "active", "value": False})
    )
    assert r.status_code == 200, r.get_json()


def test_scim_users_arrive_once_and_deactivations_arrive(app_api, kintone):
    ids = {n: create(app_api, n, displayName=n.title())["id"] for n in ("ada", "bob", "cat")}
    report = deliver(app_api)
    assert (report.delivered, report.failed, report.retry_later) == (3, 0, 0)
    assert sorted(u["code"] for u in kintone.users.values()) == ["ada", "bob", "cat"]
    deactivate(app_api, ids["bob"])
    assert deliver(app_api).delivered == 1
    assert kintone.by_code("bob")["valid"] is False
    assert app_api.scim("DELETE", f"/Users/{ids['cat']}").status_code == 204
    assert deliver(app_api).delivered == 1
    assert kintone.by_code("cat") is None
    for n in ("ada", "bob", "cat"):
        assert kintone.writes_for(n)["POST"] == 1
    assert deliver(app_api).delivered == 0


def test_kintone_down_then_up_gets_each_change_exactly_once(app_api, kintone, clock):
    kintone.stop()
    ids = {n: create(app_api, n)["id"] for n in ("ada", "bob")}
    deactivate(app_api, ids["bob"])
    for _ in range(3):
        report = deliver(app_api)
        assert report.delivered == 0 and report.retry_later >= 1
        clock.advance(seconds=10)
    kintone.start()
    report = deliver(app_api)
    assert (report.delivered, report.failed) == (3, 0)
    assert kintone.by_code("ada")["valid"] is True
    assert kintone.by_code("bob")["valid"] is False
    assert kintone.writes_for("ada") == {"POST": 1}
    # a push sends the state at delivery time: bob is added inactive, and his second
    # change (the deactivation) finds nothing left to write
    assert kintone.writes_for("bob") == {"POST": 1}
    [added] = [r for r in kintone.requests if r.method == "POST" and "bob" in str(r.body)]
    assert added.body["users"][0]["valid"] is False
    clock.advance(seconds=60)
    assert deliver(app_api).delivered == 0
    assert len(kintone.users) == 2


def test_killed_after_the_add_a_resend_adds_no_second_user(app_api, kintone, clock):
    uid = create(app_api, "ada")["id"]
    store = app_api.agent.store
    with connect(kintone) as c:
        handlers = PushHandlers(c, store, None).handlers()

        def push_then_die(message: OutboxMessage):
            handlers["push_user"](message)
            raise RuntimeError("killed before the delivery was recorded")

        died = deliver_due(store, {**handlers, "push_user": push_then_die}, clock, 2, 10)
        assert died.retry_later == 1 and kintone.by_code("ada") is not None
        with store.read() as tx:
            assert outbox.remote_id(tx, uid) is None  # the add happened, unrecorded
        clock.advance(seconds=2)
        assert deliver_due(store, handlers, clock, 2, 10).delivered == 1
    with store.read() as tx:
        assert outbox.remote_id(tx, uid) == kintone.by_code("ada")["id"]
    assert kintone.writes_for("ada") == {"POST": 1}
    assert len(kintone.users) == 1


def test_a_refused_field_waits_in_the_outbox_and_is_delivered_once_fixed(app_api, kintone, clock):
    uid = create(app_api, "ada", displayName="x" * 200)["id"]
    report = deliver(app_api)
    assert report.failed == 1 and "name (display name" in report.errors[0]
    assert kintone.users == {}
    r = app_api.scim(
        "PATCH", f"/Users/{uid}", patch({"op": "replace", "path": "displayName", "value": "Ada"})
    )
    assert r.status_code == 200
    clock.advance(seconds=10)
    assert deliver(app_api).delivered == 2  # the first push (now valid) and the second
    assert kintone.by_code("ada")["name"] == "Ada"
    assert kintone.writes_for("ada")["POST"] == 2  # the refused add, then the accepted one
    assert len(kintone.users) == 1


def test_drift_is_reported_and_repaired(app_api, kintone):
    ids = {n: create(app_api, n)["id"] for n in ("ada", "bob", "cat")}
    deliver(app_api)
    assert Jobs(app_api.agent).reconcile().drift == []  # linked: every user is recognised
    kintone.by_code("ada")["valid"] = False  # changed by hand in Kintone
    del kintone.users[int(kintone.by_code("bob")["id"])]  # deleted by hand
    kintone.add("intruder")  # created in Kintone, unknown to seat-agent
    report = Jobs(app_api.agent).reconcile()
    found = {(d.user_name, d.problem) for d in report.drift}
    assert found == {
        ("ada", "active differs"),
        ("bob", "missing downstream"),
        ("intruder", "unknown downstream user"),
    }
    assert report.repaired
    assert deliver(app_api).delivered == 2
    assert kintone.by_code("ada")["valid"] is True
    assert kintone.by_code("bob") is not None
    again = Jobs(app_api.agent).reconcile()
    assert {(d.user_name, d.problem) for d in again.drift} == {
        ("intruder", "unknown downstream user")
    }
    assert kintone.by_code("intruder") is not None  # reported, never deleted
    assert set(ids) <= {u["code"] for u in kintone.users.values()}


def test_seed_000_reduction_fifty_to_forty_reaches_kintone(app_api, kintone, clock):
    """50 users on 50 licenses, target 40: done with 40 licensed, 40 consuming, and in Kintone
    exactly the 10 planned users inactive."""
    for i in range(50):
        clock.advance(days=1)
        create(app_api, f"u{i:02d}")
    clock.advance(days=30)
    assert deliver(app_api).delivered == 50
    assert sum(u["valid"] for u in kintone.users.values()) == 50

    r = app_api.admin("POST", "/reductions", {"target": 40})
    assert r.status_code == 201, r.get_json()
    reduction = r.get_json()
    planned = {c["user_name"] for c in reduction["plan"]["candidates"]}
    assert len(planned) == 10
    r = app_api.admin("POST", f"/reductions/{reduction['id']}/approve")
    assert r.status_code == 200, r.get_json()
    jobs = Jobs(app_api.agent)
    for _ in range(10):
        jobs.advance_workflows()
        deliver(app_api)
        got = app_api.admin("GET", f"/reductions/{reduction['id']}").get_json()
        if got["state"] == "done":
            break
    assert got["state"] == "done", got["history"]
    seats = app_api.admin("GET", "/seats").get_json()
    assert (seats["licensed"], seats["consumed"]) == (40, 40)
    inactive = {u["code"] for u in kintone.users.values() if not u["valid"]}
    assert inactive == planned
    assert len(kintone.users) == 50
    assert kintone.application_users() == {f"u{i:02d}" for i in range(50)} - planned  # 40
    assert all(kintone.writes_for(f"u{i:02d}")["POST"] == 1 for i in range(50))
    assert sum(kintone.writes_for(n)["PUT"] for n in planned) == 10
    assert Jobs(app_api.agent).reconcile().drift == []


def test_cli_refuses_a_kintone_config_without_its_password(tmp_path, monkeypatch):
    monkeypatch.delenv("SEAT_AGENT_DOWNSTREAM_TOKEN", raising=False)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path}/agent.db"\n'
        '[downstream]\ntype = "kintone"\nurl = "https://example.cybozu.com"\n'
        'login_name = "seat-agent"\n'
    )
    r = CliRunner().invoke(main, ["status", "--config", str(config)])
    assert r.exit_code == 2  # a one-line refusal on stderr (the CLI's bad-input exit), no traceback
    assert r.stderr.strip().splitlines() == [
        "seat-agent: invalid configuration: downstream: type 'kintone' needs the"
        " password of login_name 'seat-agent' in token or in the environment variable"
        " SEAT_AGENT_DOWNSTREAM_TOKEN"
    ]
    assert not (tmp_path / "agent.db").exists()  # refused before any database is touched
