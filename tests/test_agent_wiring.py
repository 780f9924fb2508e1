"""The whole agent as wired by create_app: SCIM changes reach a real downstream SCIM server
through the outbox, alerts reach a real SMTP server, reconcile finds and repairs drift, and
the scheduler's job functions drive it all."""

from __future__ import annotations

import pytest
from conftest import ADMIN_TOKEN, SCIM_TOKEN, Api, free_port
from downstream import running_downstream
from smtp_server import SmtpServer
from test_seat_engine import create, deactivate

from agent.app import create_app
from agent.config import settings_from_mapping
from agent.jobs.tasks import Jobs


@pytest.fixture
def smtp():
    server = SmtpServer(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def downstream(tmp_path):
    with running_downstream(tmp_path / "downstream") as server:
        yield server


@pytest.fixture
def wired(db_url, clock, smtp, downstream):
    apps = []

    def build(**license) -> Api:
        settings = settings_from_mapping(
            {
                "database": {"url": db_url},
                "auth": {"scim_token": SCIM_TOKEN, "admin_token": ADMIN_TOKEN},
                "license": {"seats": 2, "on_full": "queue", **license},
                "downstream": {
                    "type": "scim",
                    "url": downstream.base_url,
                    "token": downstream.token,
                    "timeout_seconds": 5,
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
    assert (
        queued["urn:ietf:params:scim:schemas:extension:seatagent:2.0:User"]["licenseState"]
        == "queued"
    )
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
