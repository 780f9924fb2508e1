"""Alert mail end to end: real seat changes through the SCIM and admin API, the outbox rows they
write, delivered by EmailHandler to a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

import re
import smtplib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from conftest import Api, FakeClock, free_port
from smtp_server import SmtpServer
from sqlalchemy import func, select
from test_seat_engine import create, deactivate, patch, user

from agent.config import AlertSettings
from agent.notify.mail import Mail, SmtpMailer, render_table
from agent.services.alerts import Alerts, EmailHandler, digest_stamp, send_digest
from agent.services.events import SeatEvent
from agent.services.outbox_notifier import OutboxNotifier
from agent.storage import outbox
from agent.storage.tables import alert_state
from agent.storage.tables import outbox as outbox_table

ADMINS = ["it-admins@example.test", "cfo@example.test"]
SENDER = "seat-agent@example.test"


@pytest.fixture
def smtp():
    server = SmtpServer(free_port())
    server.start()
    yield server
    server.stop()


def alert_settings(smtp: SmtpServer, **kw: Any) -> AlertSettings:
    return AlertSettings(
        enabled=kw.pop("enabled", True),
        smtp_host=smtp.host,
        smtp_port=smtp.port,
        sender=SENDER,
        recipients=ADMINS,
        **kw,
    )


@dataclass
class Rig:
    """An app whose seat engine writes alerts to the outbox, and a tiny outbox worker."""

    api: Api
    alerts: Alerts
    handler: EmailHandler
    clock: FakeClock
    smtp: SmtpServer

    @property
    def store(self):
        return self.api.agent.store

    def deliver(self) -> int:
        """Send due mail one at a time, oldest first (so the inbox is in outbox order)."""
        sent = 0
        while True:
            with self.store.read() as tx:
                due = outbox.due(tx, self.clock(), limit=1, kinds=("email",))
            if not due:
                return sent
            self.handler(due[0])
            with self.store.write() as tx:
                outbox.mark_delivered(tx, due[0].seq, self.clock())
            sent += 1

    def undelivered(self) -> int:
        with self.store.read() as tx:
            return outbox.depth(tx).get("email", 0)

    def subjects(self) -> list[str]:
        return self.smtp.inbox.subjects()

    def mail(self, contains: str):
        found = [r for r in self.smtp.received if contains in r.subject]
        assert len(found) == 1, (contains, self.subjects())
        return found[0]


@pytest.fixture
def rig(make_api, clock: FakeClock, smtp: SmtpServer):
    def build(alerts: dict | None = None, **license: Any) -> Rig:
        api = make_api(**license)
        lic = api.agent.settings.license
        settings = alert_settings(smtp, **(alerts or {}))
        engine_alerts = Alerts(
            settings,
            lic.low_seats_threshold,
            clock,
            currency=lic.currency,
            on_full=lic.on_full,
        )
        api.agent.seats.notifier = OutboxNotifier(push=False, alerts=engine_alerts, clock=clock)
        return Rig(api, engine_alerts, EmailHandler(SmtpMailer(settings)), clock, smtp)

    return build


def post(api: Api, name: str, active: bool = True):
    return api.scim("POST", "/Users", user(name, active))


def activate(api: Api, user_id: str):
    return api.scim(
        "PATCH", f"/Users/{user_id}", patch({"op": "replace", "path": "active", "value": True})
    )


# -- seats low / exhausted --------------------------------------------------------------------


def test_filling_seats_mails_low_once_and_exhausted_once(rig):
    r = rig(seats=3, on_full="refuse", low_seats_threshold=1)
    a = create(r.api, "alice")
    create(r.api, "bob")  # 1 left: low
    create(r.api, "carol")  # 0 left: exhausted
    for _ in range(3):
        assert post(r.api, "dave").status_code == 403
    assert r.deliver() == 3
    assert r.subjects() == [
        "[seat-agent] Seats running low: 1 of 3 left",
        "[seat-agent] Seat limit reached: 3 of 3 in use",
        "[seat-agent] Activation refused for dave: 3 of 3 in use",
    ]
    full = r.mail("Seat limit reached")
    assert full.message["From"] == SENDER
    assert sorted(full.rcpt_tos) == sorted(ADMINS)
    assert "it is refused until a seat is free" in full.text
    assert "on_full" not in full.text and "seat-agent licenses set N" in full.text
    lines = full.text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("User"))
    assert lines[header].split() == ["User", "Status", "Seats", "Consumed", "Available"]
    assert set(lines[header + 1]) == {"-", " "}
    assert lines[header + 2].split() == ["carol", "granted", "3", "3", "0"]

    # One seat freed: still at the limit for alerting purposes (no "low" after "exhausted").
    deactivate(r.api, a["id"])
    assert r.deliver() == 0
    # Back above the threshold: recorded silently ...
    bob = r.api.scim("GET", "/Users?filter=" + 'userName eq "bob"').get_json()["Resources"][0]
    deactivate(r.api, bob["id"])
    assert r.deliver() == 0
    # ... so the next drop alerts again.
    create(r.api, "erin")
    assert r.deliver() == 1
    assert r.subjects()[-1] == "[seat-agent] Seats running low: 1 of 3 left"


def test_license_change_mails_and_clears_exhausted_silently(rig):
    r = rig(seats=2, on_full="refuse", low_seats_threshold=1)
    create(r.api, "a")
    create(r.api, "b")
    res = r.api.admin("PUT", "/licenses", {"seats": 5})
    assert res.status_code == 200, res.get_json()
    assert r.deliver() == 3
    assert r.subjects()[-1] == "[seat-agent] License count changed: 2 -> 5"
    assert "2 of 5 in use" in r.mail("License count changed").text
    with r.store.read() as tx:
        state = tx.conn.execute(
            select(alert_state.c.state).where(alert_state.c.key == "seats")
        ).scalar()
    assert state == "ok"
    # The same count again changes nothing and mails nothing.
    assert r.api.admin("PUT", "/licenses", {"seats": 5}).status_code == 200
    assert r.deliver() == 0


# -- refused ----------------------------------------------------------------------------------


def test_refused_mailed_once_per_user_however_often_the_idp_retries(rig):
    r = rig(seats=1, on_full="refuse", low_seats_threshold=0)
    holder = create(r.api, "holder")
    for _ in range(3):  # Okta retries a failed create: a new id each time, the same userName
        res = post(r.api, "Newcomer")
        assert res.status_code == 403
    frank = create(r.api, "frank", active=False)
    for _ in range(3):  # Entra retries the activation PATCH
        assert activate(r.api, frank["id"]).status_code == 403
    assert post(r.api, "NEWCOMER").status_code == 403  # userName is case-insensitive
    r.deliver()
    refused = [s for s in r.subjects() if "refused" in s]
    assert refused == [
        "[seat-agent] Activation refused for Newcomer: 1 of 1 in use",
        "[seat-agent] Activation refused for frank: 1 of 1 in use",
    ]
    text = r.mail("refused for frank").text
    assert "Seat limit reached: 1 of 1 seat in use" in text
    assert "seat-agent licenses set" in text  # what the admin can do
    assert re.search(r"^frank\s+refused\s+1\s+1\s+0$", text, re.M), text

    # frank gets a seat: its refusal is reset, so a later refusal mails again.
    deactivate(r.api, holder["id"])
    assert activate(r.api, frank["id"]).status_code == 200
    deactivate(r.api, frank["id"])
    assert activate(r.api, holder["id"]).status_code == 200
    assert activate(r.api, frank["id"]).status_code == 403
    r.deliver()
    assert [s for s in r.subjects() if "refused for frank" in s] == [
        "[seat-agent] Activation refused for frank: 1 of 1 in use"
    ] * 2


# -- queue ------------------------------------------------------------------------------------


def test_queued_and_promoted_mails(rig):
    # Threshold 0: a release that the queue takes at once must not look like "seats free".
    r = rig(seats=1, on_full="queue", low_seats_threshold=0)
    a = create(r.api, "ann")
    b = create(r.api, "ben")
    create(r.api, "cat")
    deactivate(r.api, a["id"])  # ben gets ann's seat
    r.deliver()
    assert r.subjects() == [
        "[seat-agent] Seat limit reached: 1 of 1 in use",
        "[seat-agent] ben queued for a seat: 1 of 1 in use",
        "[seat-agent] cat queued for a seat: 1 of 1 in use",
        "[seat-agent] ben got a seat from the queue: 1 of 1 in use",
    ]
    assert "position 1" in r.mail("ben queued").text
    assert "position 2" in r.mail("cat queued").text
    promoted = r.mail("ben got a seat").text
    assert "1 user(s) still waiting" in promoted
    assert re.search(r"^ben\s+promoted\s+1\s+1\s+0$", promoted, re.M), promoted

    # Queued again later: a new queueing mails again.
    deactivate(r.api, b["id"])  # cat promoted
    assert activate(r.api, b["id"]).status_code == 200  # ben queued again
    r.deliver()
    assert r.subjects()[-2:] == [
        "[seat-agent] cat got a seat from the queue: 1 of 1 in use",
        "[seat-agent] ben queued for a seat: 1 of 1 in use",
    ]
    assert sum("Seat limit reached" in s for s in r.subjects()) == 1


# -- expand -----------------------------------------------------------------------------------


def test_expand_mail_carries_the_prorated_cost(rig):
    r = rig(
        seats=1,
        on_full="expand",
        max_seats=3,
        price_per_seat="30",
        renewal_date="2026-12-01",
        currency="EUR",
        low_seats_threshold=0,  # 1 -> 2 with 1 in use must not read as "seats free again"
    )
    for name in ("a", "b", "c"):
        create(r.api, name)
    assert post(r.api, "d").status_code == 403  # at the ceiling
    with r.store.read() as tx:
        costs = [e.cost for e in tx.ledger.entries(kinds=["expand"])]
    assert len(costs) == 2 and all(c is not None and c > 0 for c in costs)
    r.deliver()
    assert r.subjects() == [
        "[seat-agent] Seat limit reached: 1 of 1 in use",
        f"[seat-agent] Licenses increased automatically: 1 -> 2, cost {costs[0]} EUR",
        f"[seat-agent] Licenses increased automatically: 2 -> 3, cost {costs[1]} EUR",
        "[seat-agent] Activation refused for d: 3 of 3 in use",
    ]
    text = r.mail("2 -> 3").text
    assert f"Prorated cost for the rest of the billing period: {costs[1]} EUR" in text
    assert re.search(rf"^c\s+expanded\s+3\s+2\s+1\s+{re.escape(str(costs[1]))} EUR$", text, re.M)
    assert "only up to 3 (max_seats in the configuration file)" in r.mail("refused for d").text


# -- delivery ---------------------------------------------------------------------------------


def test_smtp_down_delays_mail_and_loses_none(rig):
    r = rig(seats=1, on_full="refuse")
    r.smtp.stop()
    assert create(r.api, "a")["userName"] == "a"  # the SCIM request does not wait for SMTP
    with r.store.read() as tx:
        (message,) = outbox.due(tx, r.clock(), kinds=("email",))
    with pytest.raises(OSError):
        r.handler(message)
    with r.store.write() as tx:  # what the worker does with a failure
        outbox.mark_failed(tx, message.seq, "connection refused", r.clock() + timedelta(minutes=1))
    assert r.undelivered() == 1
    assert r.deliver() == 0  # not due yet

    r.smtp.start()
    r.clock.advance(minutes=2)
    assert r.deliver() == 1
    assert r.undelivered() == 0
    assert r.subjects() == ["[seat-agent] Seat limit reached: 1 of 1 in use"]
    # Date is when the alert happened, not when the retry got through.
    assert r.smtp.received[0].message["Date"].datetime == message.created.replace(microsecond=0)


@pytest.mark.parametrize("html", [False, True])
def test_html_part_only_when_configured(rig, html: bool):
    r = rig(alerts={"html": html}, seats=1)
    create(r.api, "<script>x</script>")
    r.deliver()
    (got,) = r.smtp.received
    assert re.search(r"^<script>x</script>\s+granted\s+1\s+1\s+0$", got.text, re.M), got.text
    if html:
        assert got.message.get_content_type() == "multipart/alternative"
        body = got.part("html")
        assert body is not None
        assert "<th>Available</th>" in body
        assert "<td>&lt;script&gt;x&lt;/script&gt;</td>" in body
    else:
        assert got.message.get_content_type() == "text/plain"
        assert got.part("html") is None


def test_disabled_alerts_write_nothing(rig):
    r = rig(alerts={"enabled": False}, seats=1, on_full="queue")
    create(r.api, "a")
    create(r.api, "b")  # queued
    with r.store.write() as tx:
        r.alerts.on_seat_event(tx, SeatEvent("refused", 1, 1, user_name="c", detail="full"))
    with r.store.read() as tx:
        assert tx.conn.execute(select(func.count()).select_from(outbox_table)).scalar_one() == 0
        assert tx.conn.execute(select(func.count()).select_from(alert_state)).scalar_one() == 0
        assert not r.alerts.raise_alert(tx, "drift", "found", "Drift", ["x"])


def test_granted_users_leave_no_alert_rows(rig):
    r = rig(seats=100)
    for i in range(5):
        create(r.api, f"u{i}")
    with r.store.read() as tx:
        keys = [row[0] for row in tx.conn.execute(select(alert_state.c.key))]
    assert keys == []


# -- the general entry point ------------------------------------------------------------------


def test_raise_alert_mails_each_change_of_state_once(rig):
    r = rig()
    table = (["User", "Field", "Here", "Downstream"], [["alice", "active", "true", "false"]])
    with r.store.write() as tx:
        assert r.alerts.raise_alert(tx, "drift", "found:1", "Drift found: 1 user", ["x"], table)
        assert not r.alerts.raise_alert(tx, "drift", "found:1", "Drift found: 1 user", ["x"])
    with r.store.write() as tx:
        assert r.alerts.clear(tx, "drift")
        assert not r.alerts.clear(tx, "drift")
        assert not r.alerts.clear(tx, "never-raised")
        assert r.alerts.raise_alert(tx, "drift", "found:1", "Drift found: 1 user", ["again"])
    assert r.deliver() == 2
    assert r.subjects() == ["[seat-agent] Drift found: 1 user"] * 2
    assert re.search(r"^alice\s+active\s+true\s+false$", r.smtp.received[0].text, re.M)


def test_an_alert_written_in_a_rolled_back_transaction_is_never_sent(rig):
    r = rig()
    with pytest.raises(RuntimeError), r.store.write() as tx:
        r.alerts.on_seat_event(tx, SeatEvent("refused", 1, 1, user_name="ghost", detail="full"))
        raise RuntimeError("the change failed")
    assert r.undelivered() == 0
    with r.store.write() as tx:  # and its dedup state rolled back with it
        r.alerts.on_seat_event(tx, SeatEvent("refused", 1, 1, user_name="ghost", detail="full"))
    assert r.deliver() == 2  # seat limit reached + refused
    assert "[seat-agent] Activation refused for ghost: 1 of 1 in use" in r.subjects()


# -- digest -----------------------------------------------------------------------------------


def test_digest_lists_seats_queue_and_recent_changes_once_per_day(rig):
    r = rig(alerts={"digest": True}, seats=2, on_full="queue", low_seats_threshold=0)
    for name in ("a", "b", "c", "d"):
        create(r.api, name)
    r.deliver()
    before = len(r.smtp.received)
    now = r.clock()
    assert send_digest(r.store, r.alerts, now)
    assert not send_digest(r.store, r.alerts, now + timedelta(hours=1))  # same day
    assert r.deliver() == 1
    (digest,) = r.smtp.received[before:]
    assert digest.subject == "[seat-agent] Digest 2026-11-02: 2 of 2 seats in use, 2 queued"
    text = digest.text
    assert re.search(r"^2\s+2\s+0\s+2$", text, re.M), text  # seats, consumed, available, queued
    assert re.search(r"^1\s+c\s+2026-11-02 09:00 UTC$", text, re.M), text
    assert re.search(r"^2\s+d\s+2026-11-02 09:00 UTC$", text, re.M), text
    assert "Seat changes: 2 grant, 1 licenses, 2 queue." in text
    assert re.search(r"^2026-11-02 09:00 UTC\s+grant\s+b\s+2\s+2\s+-\s+status Active$", text, re.M)

    r.clock.advance(days=1)
    assert send_digest(r.store, r.alerts, r.clock())
    r.deliver()
    assert r.subjects()[-1] == "[seat-agent] Digest 2026-11-03: 2 of 2 seats in use, 2 queued"
    assert "Seat changes: none." in r.smtp.received[-1].text


def test_no_digest_unless_configured(rig):
    r = rig(alerts={"digest": False})
    assert not send_digest(r.store, r.alerts, r.clock())
    assert r.undelivered() == 0


def test_digest_stamp_follows_the_period(clock: FakeClock):
    now = clock()
    assert digest_stamp(now, timedelta(hours=24)) == "2026-11-02"
    assert digest_stamp(now, timedelta(hours=6)) == "2026-11-02T06:00Z"
    assert digest_stamp(now + timedelta(hours=3), timedelta(hours=6)) == "2026-11-02T12:00Z"


# -- the mailer -------------------------------------------------------------------------------


def test_render_table_aligns_columns():
    assert render_table(["User", "Seats"], [["alexandra", 10], ["bo", None]]) == (
        "User       Seats\n---------  -----\nalexandra  10\nbo"
    )


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_mailer_logs_in_when_a_username_is_set():
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword
    from smtp_server import Inbox

    logins: list[tuple[bytes, bytes]] = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        assert isinstance(auth_data, LoginPassword)
        logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"s3cret")

    inbox = Inbox()
    port = free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    try:
        settings = AlertSettings(
            enabled=True,
            smtp_host="127.0.0.1",
            smtp_port=port,
            recipients=["a@example.test"],
            username="agent",
        )
        SmtpMailer(settings, "s3cret").send(Mail("hello", "body"))
        # The server really requires it: without a login the mail is refused, and raises.
        with pytest.raises(smtplib.SMTPException):
            SmtpMailer(settings.model_copy(update={"username": None})).send(Mail("x", "y"))
    finally:
        controller.stop()
    assert logins[0] == (b"agent", b"s3cret")
    assert [r.subject for r in inbox.received] == ["hello"]
