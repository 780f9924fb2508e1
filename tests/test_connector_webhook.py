"""``[downstream] type = "webhook"``: signed events to a real receiver on loopback that
verifies each one with ``standardwebhooks``, over SQLite and PostgreSQL.

Time is the injected FakeClock (backoff, Retry-After and the reduction's waits are passed by
moving it); only the signature's ``webhook-timestamp`` is the host's real time, since the
receiver checks it against its own clock.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Api, FakeClock, make_settings
from standardwebhooks import Webhook
from test_seat_engine import create, patch
from webhook_receiver import Answer, WebhookReceiver, new_secret, running_receiver
from werkzeug.serving import make_server

from agent.app import create_app
from agent.config import AlertSettings, ConfigError, DownstreamSettings, settings_from_mapping
from agent.connectors import build_connector
from agent.connectors.base import DeliveryError, EffectiveUser
from agent.connectors.webhook import WebhookConnector
from agent.jobs.tasks import Jobs
from agent.services.delivery import deliver_due
from agent.services.webhook_events import WEBHOOK, WebhookHandlers
from agent.storage import outbox
from agent.storage.tables import outbox as outbox_table

SECRET = new_secret()
ROOT = Path(__file__).resolve().parent.parent
BACKOFF_MAX = 600.0


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with running_receiver(SECRET) as server:
        yield server


def webhook_settings(receiver: WebhookReceiver, *, count_url: bool = True, **extra: Any):
    return DownstreamSettings(
        type="webhook",
        url=receiver.url,
        secret=SECRET,
        count_url=receiver.count_url if count_url else None,
        backoff_base_seconds=2,
        backoff_max_seconds=BACKOFF_MAX,
        **extra,
    )


@pytest.fixture
def make_app(db_url: str, clock: FakeClock, receiver: WebhookReceiver) -> Iterator:
    made: list[Api] = []

    def factory(
        count_url: bool = True,
        reductions: dict | None = None,
        alerts: bool = False,
        **license: Any,
    ) -> Api:
        settings = make_settings(db_url, **license)
        update: dict[str, Any] = {"downstream": webhook_settings(receiver, count_url=count_url)}
        if alerts:  # mail is queued in the outbox; no SMTP server answers (port 9)
            update["alerts"] = AlertSettings(
                enabled=True, recipients=["admin@example.com"], smtp_port=9
            )
        if reductions:
            update["reductions"] = settings.reductions.model_copy(update=reductions)
        app = create_app(settings.model_copy(update=update), clock=clock)
        made.append(Api(app))
        return made[-1]

    yield factory
    for api in made:
        api.agent.store.dispose()


def pending(api: Api) -> int:
    with api.agent.store.read() as tx:
        return outbox.depth(tx).get(WEBHOOK, 0)


def drain(api: Api, clock: FakeClock, rounds: int = 20) -> None:
    """Run the outbox job until nothing waits, moving the clock past each backoff."""
    for _ in range(rounds):
        api.agent.delivery()
        if not pending(api):
            return
        clock.advance(seconds=BACKOFF_MAX)
    raise AssertionError(f"{pending(api)} events still waiting")


def deactivate(api: Api, user_id: str) -> None:
    r = api.scim(
        "PATCH", f"/Users/{user_id}", patch({"op": "replace", "path": "active", "value": False})
    )
    assert r.status_code == 200, r.get_json()


def activate(api: Api, user_id: str) -> None:
    r = api.scim(
        "PATCH", f"/Users/{user_id}", patch({"op": "replace", "path": "active", "value": True})
    )
    assert r.status_code == 200, r.get_json()


def assert_clean(receiver: WebhookReceiver) -> None:
    assert receiver.rejected == []
    assert receiver.changed_on_redelivery == []


# -- events through the outbox ---------------------------------------------------------------


def test_users_created_through_scim_arrive_once_each(make_app, clock, receiver):
    api = make_app()
    ids = [create(api, f"user{i}@example.com", displayName=f"User {i}")["id"] for i in range(5)]
    assert receiver.events() == []  # nothing is sent inside the SCIM request
    drain(api, clock)
    created = receiver.events("user.created")
    assert sorted(e["data"]["id"] for e in created) == sorted(ids)
    assert all(e["data"]["active"] is True and e["data"]["appStatus"] for e in created)
    assert created[0]["data"]["userName"] == "user0@example.com"
    assert created[0]["data"]["displayName"] == "User 0"
    granted = receiver.events("seat.granted")
    assert [e["data"]["userId"] for e in granted] == ids
    assert [e["data"]["consumed"] for e in granted] == [1, 2, 3, 4, 5]
    for user_id in ids:  # the user before its seat
        assert receiver.types_of(user_id) == ["user.created", "seat.granted"]
    assert len(receiver.attempts) == 10  # each event sent once: nothing failed
    api.agent.delivery()
    assert len(receiver.attempts) == 10
    assert_clean(receiver)


def test_changes_arrive_as_typed_events_in_order(make_app, clock, receiver):
    api = make_app()
    uid = create(api, "ann@example.com")["id"]
    r = api.scim(
        "PATCH", f"/Users/{uid}", patch({"op": "replace", "path": "displayName", "value": "Ann"})
    )
    assert r.status_code == 200
    # a change the application cannot see (not in the event's data) sends nothing
    r = api.scim(
        "PATCH", f"/Users/{uid}", patch({"op": "replace", "path": "title", "value": "CFO"})
    )
    assert r.status_code == 200
    deactivate(api, uid)
    activate(api, uid)
    assert api.scim("DELETE", f"/Users/{uid}").status_code == 204
    drain(api, clock)
    assert receiver.types_of(uid) == [
        "user.created",
        "seat.granted",
        "user.updated",
        "user.deactivated",
        "seat.released",
        "user.activated",
        "seat.granted",
        "user.deleted",
        "seat.released",
    ]
    assert uid not in receiver.users
    updated = receiver.events("user.updated")[0]
    assert updated["data"]["displayName"] == "Ann"
    deactivated = receiver.events("user.deactivated")[0]["data"]
    assert deactivated["active"] is False and deactivated["licenseState"] == "inactive"
    assert_clean(receiver)


def test_seat_queue_and_license_changes_are_events(make_app, clock, receiver):
    api = make_app(seats=1, on_full="queue")
    first = create(api, "first")["id"]
    second = create(api, "second")["id"]
    drain(api, clock)
    assert receiver.types_of(second) == ["user.created", "seat.queued"]
    assert receiver.users[second]["active"] is False  # queued: no access yet
    r = api.admin("PUT", "/licenses", {"seats": 2})
    assert r.status_code == 200, r.get_json()
    drain(api, clock)
    changed = receiver.events("licenses.changed")
    assert [e["data"]["change"] for e in changed] == ["1 -> 2"]
    assert changed[0]["data"]["seats"] == 2 and changed[0]["data"]["automatic"] is False
    promoted = receiver.events("seat.granted")[-1]["data"]
    assert promoted["userId"] == second and promoted["fromQueue"] is True
    assert receiver.types_of(second)[-2:] == ["user.activated", "seat.granted"]
    assert receiver.users[first]["active"] and receiver.users[second]["active"]
    assert_clean(receiver)


def test_reconcile_resettling_in_bulk_announces_the_committed_state(make_app, clock, receiver):
    """Reconcile re-decides users with deferred seat writes; the events carry the state as
    committed (not the one before the bulk write)."""
    api = make_app(seats=10)
    uid = create(api, "member", roles=[{"value": "Viewer"}])["id"]
    drain(api, clock)
    assert receiver.users[uid]["licenseState"] == "licensed"
    # the policy now makes Viewer free: reconcile re-decides the user
    api2 = make_app(seats=10, free_roles=["Viewer"])
    report = Jobs(api2.agent).reconcile()
    assert report.resettled == ["member"], report.as_dict()
    drain(api2, clock)
    assert receiver.users[uid]["licenseState"] == "free"
    assert receiver.types_of(uid)[-2:] == ["user.updated", "seat.released"]
    assert_clean(receiver)


# -- down, then up ---------------------------------------------------------------------------


def test_downstream_down_then_up_every_change_arrives_exactly_once(make_app, clock, receiver):
    api = make_app()
    receiver.stop()
    ids = [create(api, f"u{i}")["id"] for i in range(4)]
    deactivate(api, ids[0])
    activate(api, ids[0])
    r = api.scim(
        "PATCH", f"/Users/{ids[1]}", patch({"op": "replace", "path": "displayName", "value": "B"})
    )
    assert r.status_code == 200
    assert api.scim("DELETE", f"/Users/{ids[2]}").status_code == 204
    with api.agent.store.read() as tx:
        written = [(m.payload["id"], m.key, m.payload["body"]) for m in outbox.failing(tx, 0)]
    report = api.agent.delivery()
    assert report.delivered == 0 and report.broken == [WEBHOOK]  # the circuit breaker
    clock.advance(seconds=BACKOFF_MAX)
    api.agent.delivery()

    receiver.start()  # back, but some answers are lost on the way back: redeliveries
    receiver.lose_answers = 3
    receiver.answer_next(Answer(503, {"Retry-After": "30"}))
    drain(api, clock)

    assert sorted(receiver.order) == sorted(w[0] for w in written)  # every event, once
    for key in {w[1] for w in written}:  # in the order written, per user
        ours = [w[0] for w in written if w[1] == key]
        assert [i for i in receiver.order if i in ours] == ours
    assert len(receiver.attempts) > len(written)  # some were sent more than once ...
    for webhook_id, _key, body in written:  # ... always the same bytes
        assert receiver.bodies[webhook_id] == body
        sent = {a.body for a in receiver.attempts if a.webhook_id == webhook_id}
        assert sent == {body}
    assert receiver.types_of(ids[0]) == [
        "user.created",
        "seat.granted",
        "user.deactivated",
        "seat.released",
        "user.activated",
        "seat.granted",
    ]
    assert receiver.types_of(ids[2])[-2:] == ["user.deleted", "seat.released"]
    assert set(receiver.users) == {ids[0], ids[1], ids[3]}
    assert receiver.users[ids[1]]["displayName"] == "B"
    assert_clean(receiver)


def test_redelivery_signs_again_with_the_same_id_and_body(receiver, tmp_path):
    """Spec "Webhook metadata": the attempt's timestamp changes, the id and body do not."""
    now = [datetime.now(UTC) - timedelta(minutes=4)]
    connector = WebhookConnector(receiver.url, SECRET, 5, signing_clock=lambda: now[0])
    body = json.dumps({"type": "user.updated", "timestamp": "x", "data": {"id": "u1"}})
    receiver.answer_next(Answer(503))
    with pytest.raises(DeliveryError):
        connector.send("msg_1", body)
    now[0] += timedelta(minutes=3)  # the first signature would now be 7 minutes old
    connector.send("msg_1", body)
    first, second = receiver.attempts
    assert (first.webhook_id, first.body) == (second.webhook_id, second.body)
    assert int(second.timestamp) - int(first.timestamp) == 180
    assert receiver.order == ["msg_1"]
    assert_clean(receiver)
    stale = WebhookConnector(
        receiver.url, SECRET, 5, signing_clock=lambda: datetime.now(UTC) - timedelta(minutes=6)
    )
    with pytest.raises(DeliveryError) as err:
        stale.send("msg_2", body)  # the receiver refuses a stale signature
    assert err.value.permanent
    assert receiver.rejected == ["POST: Message timestamp too old"]


@pytest.mark.parametrize(
    "answer, permanent, delay",
    [
        (Answer(429, {"Retry-After": "120"}), False, 120),
        (Answer(503, {"Retry-After": "45"}), False, 45),
        (Answer(500), False, 2),
        (Answer(400), True, BACKOFF_MAX),
        (Answer(410), True, BACKOFF_MAX),
        (Answer(302, {"Location": "http://elsewhere.example/"}), True, BACKOFF_MAX),
    ],
)
def test_answers_set_the_retry(make_app, clock, receiver, answer, permanent, delay):
    api = make_app()
    create(api, "one")
    receiver.answer_next(answer)
    before = clock.now
    report = api.agent.delivery()
    assert report.delivered == 0  # the seat event waits behind the user's first event
    with api.agent.store.read() as tx:
        (message,) = outbox.failing(tx, 1)
    assert message.last_error.startswith("permanent: ") is permanent
    assert timedelta(seconds=delay) <= message.available_at - before < timedelta(seconds=delay + 1)
    if answer.status == 302:
        assert "set [downstream] url" in message.last_error
    drain(api, clock)
    assert len(receiver.events()) == 2
    assert_clean(receiver)


def test_failing_deliveries_raise_one_alert(make_app, clock, receiver):
    api = make_app()
    create(api, "one")
    outages = []
    handlers = WebhookHandlers(WebhookConnector(receiver.url, SECRET, 5)).handlers()
    for _ in range(3):
        receiver.answer_next(Answer(400), Answer(400))
        deliver_due(
            api.agent.store,
            handlers,
            clock,
            2,
            BACKOFF_MAX,
            alert_after_attempts=2,
            on_failing=lambda tx, outage: outages.append(outage),
        )
        clock.advance(seconds=BACKOFF_MAX)
    assert outages and outages[0].oldest.kind == WEBHOOK
    assert "HTTP 400" in outages[0].oldest.last_error


# -- reconcile -------------------------------------------------------------------------------


def test_reconcile_reports_a_count_mismatch(make_app, clock, receiver):
    api = make_app()
    ids = [create(api, f"u{i}")["id"] for i in range(3)]
    deactivate(api, ids[2])
    jobs = Jobs(api.agent)
    report = jobs.reconcile()
    assert report.drift == [] and "still on their way" in report.downstream_note
    assert receiver.count_requests == 0  # not asked while events wait
    drain(api, clock)
    report = jobs.reconcile()
    assert report.drift == [], report.as_dict()
    assert report.downstream_note == "the application reports 2 active users"
    receiver.users[ids[0]]["active"] = False  # deactivated in the application itself
    report = jobs.reconcile()
    assert [(d.problem, d.expected, d.found) for d in report.drift] == [
        ("active count differs", "2 active", "1 active")
    ]
    with api.agent.store.read() as tx:
        last = json.loads(tx.state.get("last_reconcile"))
    assert last["drift"][0]["problem"] == "active count differs"
    receiver.stop()
    report = jobs.reconcile()
    assert report.downstream_error and "cannot connect" in report.downstream_error
    assert_clean(receiver)


def mails(api: Api) -> list[str]:
    with api.agent.store.read() as tx:
        return [m.payload["subject"] for m in outbox.failing(tx, 0) if m.kind == "email"]


def test_count_drift_and_an_unreachable_count_are_mailed_once(make_app, clock, receiver):
    api = make_app(alerts=True)
    ids = [create(api, f"u{i}")["id"] for i in range(2)]
    drain(api, clock)
    jobs = Jobs(api.agent)
    jobs.reconcile()
    assert mails(api) == []
    receiver.users[ids[0]]["active"] = False
    jobs.reconcile()
    jobs.reconcile()
    assert [m for m in mails(api) if "Drift" in m] == [
        "[seat-agent] Drift with the application: 1 new differences"
    ]
    receiver.stop()
    jobs.reconcile()
    jobs.reconcile()
    assert [m for m in mails(api) if "cannot read" in m] == [
        "[seat-agent] Reconcile cannot read the application's users"
    ]


def test_reconcile_without_count_url_says_it_skips(make_app, clock, receiver):
    api = make_app(count_url=False)
    create(api, "one")
    drain(api, clock)
    report = Jobs(api.agent).reconcile()
    assert report.drift == [] and report.downstream_error is None
    assert "count_url is not set" in report.downstream_note
    assert receiver.count_requests == 0


def test_bad_count_answer_is_a_finding(receiver):
    connector = WebhookConnector(receiver.url, SECRET, 5, count_url=receiver.url)
    with pytest.raises(DeliveryError, match="HTTP 405"):
        connector.active_count()  # GET on the hook itself
    with pytest.raises(DeliveryError, match="count_url is not set"):
        WebhookConnector(receiver.url, SECRET, 5).active_count()


# -- the reduce workflow ---------------------------------------------------------------------


def test_reduce_fifty_users_to_forty_licenses(make_app, clock, receiver):
    api = make_app(seats=50)
    service = api.agent.reductions
    ids = {"owner": create(api, "owner", roles=[{"value": "Owner"}])["id"]}
    for i in range(49):
        clock.advance(days=1)
        ids[f"r{i:02d}"] = create(api, f"r{i:02d}")["id"]
    clock.advance(days=30)
    drain(api, clock)
    assert receiver.active() == 50

    r = api.admin("POST", "/reductions", {"target": 40})
    assert r.status_code == 201, r.get_json()
    rid = r.get_json()["id"]
    planned = {c["user_id"] for c in r.get_json()["plan"]["candidates"]}
    assert len(planned) == 10
    assert api.admin("POST", f"/reductions/{rid}/approve").status_code == 200
    step = service.advance(rid)
    assert step.state == "verifying"  # deactivated here, not yet at the application
    assert "10 of 10 deactivations" in step.reason
    drain(api, clock)
    done = service.advance(rid)
    assert done.state == "done", done.history
    seats = api.admin("GET", "/seats").get_json()
    assert (seats["licensed"], seats["consumed"]) == (40, 40)
    deactivated = {e["data"]["id"] for e in receiver.events("user.deactivated")}
    assert deactivated == planned
    assert receiver.active() == 40
    drain(api, clock)
    assert receiver.events("licenses.changed")[-1]["data"]["change"] == "50 -> 40"
    assert_clean(receiver)


def test_reduction_waits_until_the_application_count_agrees(make_app, clock, receiver):
    api = make_app(seats=12, reductions={"verify_timeout_hours": 1})
    for i in range(12):
        clock.advance(days=1)
        create(api, f"r{i:02d}")
    clock.advance(days=30)
    receiver.users["stranger"] = {"id": "stranger", "active": True}  # made in the app itself
    r = api.admin("POST", "/reductions", {"target": 10})
    rid = r.get_json()["id"]
    api.admin("POST", f"/reductions/{rid}/approve")
    api.agent.reductions.advance(rid)
    drain(api, clock)
    waiting = api.agent.reductions.advance(rid)
    assert waiting.state == "verifying"
    assert "the application still shows 11 active users, target 10" in waiting.reason
    del receiver.users["stranger"]
    assert api.agent.reductions.advance(rid).state == "done"


# -- configuration and the downstream check --------------------------------------------------


@pytest.mark.parametrize(
    "downstream, key",
    [
        ({"type": "webhook", "secret": SECRET}, "needs url"),
        ({"type": "webhook", "url": "mailto:x@example.com", "secret": SECRET}, "url must be"),
        ({"type": "webhook", "url": "http://127.0.0.1/h"}, "needs secret"),
        (
            {"type": "webhook", "url": "http://127.0.0.1/h", "secret": "hunter2"},
            "downstream.secret",
        ),
        (
            {"type": "webhook", "url": "http://127.0.0.1/h", "secret": new_secret(16)},
            "downstream.secret: secret must decode to 24 to 64 bytes",
        ),
        (
            {"type": "webhook", "url": "http://h/", "secret": SECRET, "count_url": "/count"},
            "downstream.count_url",
        ),
        ({"type": "scim", "url": "http://h/scim/v2", "count_url": "http://h/c"}, "count_url"),
        ({"type": "hook"}, "downstream.type"),
    ],
)
def test_bad_config_is_refused_naming_the_key(downstream, key, monkeypatch):
    monkeypatch.delenv("SEAT_AGENT_WEBHOOK_SECRET", raising=False)
    with pytest.raises(ConfigError) as err:
        settings_from_mapping({"downstream": downstream})
    assert key in str(err.value)
    assert "hunter2" not in str(err.value)  # a secret is never echoed


def test_secret_from_the_environment(monkeypatch):
    base = {"type": "webhook", "url": "http://127.0.0.1/h", "secret_env": "MY_HOOK_SECRET"}
    monkeypatch.setenv("MY_HOOK_SECRET", "whsec_c2hvcnQ=")
    with pytest.raises(ConfigError, match=r"secret from the environment \(MY_HOOK_SECRET\)"):
        settings_from_mapping({"downstream": base})
    monkeypatch.setenv("MY_HOOK_SECRET", SECRET)
    settings = settings_from_mapping({"downstream": base})
    assert isinstance(build_connector(settings.downstream), WebhookConnector)


def test_bad_config_loses_nothing_accepted(make_app, db_url, clock, receiver, monkeypatch):
    """Events written before a bad configuration are kept and sent once it is fixed."""
    monkeypatch.delenv("SEAT_AGENT_WEBHOOK_SECRET", raising=False)
    api = make_app()
    uid = create(api, "kept")["id"]
    receiver.stop()
    api.agent.delivery()
    with pytest.raises(ConfigError):
        settings_from_mapping(
            {"database": {"url": db_url}, "downstream": {"type": "webhook", "url": receiver.url}}
        )
    receiver.start()
    fixed = make_app()
    drain(fixed, clock)
    assert receiver.types_of(uid) == ["user.created", "seat.granted"]


def test_describe_and_dry_run_send_no_event(receiver):
    connector = WebhookConnector(receiver.url, SECRET, 5, count_url=receiver.count_url)
    receiver.users["a"] = {"id": "a", "active": True}
    facts = connector.describe()
    assert facts["type"] == "webhook" and facts["reachable"] is True and facts["error"] is None
    assert facts["active"] == 1 and "user.deactivated" in facts["events"]
    state = EffectiveUser("u1", "ann", False, "Inactive", None, "Ann")
    plan = connector.dry_run(state)
    assert plan["problems"] == []
    (request,) = plan["requests"]
    assert request["method"] == "POST" and request["url"] == receiver.url
    assert request["body"]["data"]["active"] is False
    assert receiver.attempts == []  # nothing was sent
    receiver.stop()
    facts = connector.describe()
    assert facts["reachable"] is False and "cannot connect" in facts["error"]


def test_direct_push_carries_the_whole_state(receiver):
    """The Connector port: a push is an event with the whole state (a repeat is harmless)."""
    connector = WebhookConnector(receiver.url, SECRET, 5)
    state = EffectiveUser("u1", "ann", True, "Active", "Member", "Ann")
    assert connector.push_user(state, None) == "u1"
    assert connector.push_user(state, "u1") == "u1"
    assert receiver.users["u1"]["role"] == "Member"
    connector.delete_user("u1", "u1")
    assert [e["type"] for e in receiver.events()] == [
        "user.created",
        "user.updated",
        "user.deleted",
    ]
    assert receiver.users == {}
    with pytest.raises(DeliveryError, match="count_url"):
        list(connector.list_users())


# -- the receiver example of docs/webhooks.md ------------------------------------------------


def _docs_example() -> str:
    text = (ROOT / "docs" / "webhooks.md").read_text()
    start = text.index("```python\n", text.index("## A receiver")) + len("```python\n")
    return text[start : text.index("```", start)]


def test_the_documented_receiver_verifies_and_dedupes(make_app, clock, monkeypatch, receiver):
    code = _docs_example()
    assert len(code.strip().splitlines()) <= 25
    monkeypatch.setenv("SEAT_AGENT_WEBHOOK_SECRET", SECRET)
    scope: dict[str, Any] = {"__name__": "receiver_example"}
    exec(compile(code, "docs/webhooks.md", "exec"), scope)  # noqa: S102
    receiver.stop()  # the documented receiver takes its port
    server = make_server("127.0.0.1", receiver.port, scope["app"], threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        api = make_app()
        ids = [create(api, f"u{i}")["id"] for i in range(3)]
        deactivate(api, ids[0])
        drain(api, clock)
        connector = WebhookConnector(receiver.url, SECRET, 5)
        with api.agent.store.read() as tx:
            first = tx.conn.execute(
                outbox_table.select().order_by(outbox_table.c.seq).limit(1)
            ).first()
        connector.send(json.loads(first.payload)["id"], json.loads(first.payload)["body"])
        forged = WebhookConnector(receiver.url, new_secret(), 5)
        with pytest.raises(DeliveryError, match="HTTP 400"):
            forged.send("msg_forged", '{"type":"user.deleted","data":{"id":"x"}}')
    finally:
        server.shutdown()
        server.server_close()
    users = scope["users"]
    assert {u: users[u]["active"] for u in ids} == {ids[0]: False, ids[1]: True, ids[2]: True}
    assert len(scope["seen"]) == 8  # 3 created + 3 granted + deactivated + released, once each
    assert Webhook(SECRET)  # the documented secret format is the library's
