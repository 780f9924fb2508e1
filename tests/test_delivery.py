"""Outbox delivery against a real downstream SCIM server, over SQLite and PostgreSQL.

Time is the injected FakeClock: backoff is checked on ``available_at`` and passed by moving
the clock, never by sleeping.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import FakeClock, make_settings
from downstream import Downstream, running_downstream

from agent.bootstrap import open_store
from agent.config import billing_terms, license_policy
from agent.connectors.base import DeliveryError
from agent.connectors.scim import ScimConnector
from agent.services.delivery import (
    RETRY_AFTER_MAX,
    DeliveryReport,
    Outage,
    PushHandlers,
    backoff_seconds,
    deliver_due,
    delivery_status,
)
from agent.services.outbox_notifier import OutboxNotifier
from agent.services.provisioning import Provisioning
from agent.services.seats import SeatEngine
from agent.storage import outbox
from agent.storage.outbox import OutboxMessage
from agent.storage.store import Store

BASE, MAX = 2.0, 10.0
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@dataclass
class Source:
    """The seat-agent whose changes are delivered: provisioning writes the outbox rows."""

    store: Store
    provisioning: Provisioning
    clock: FakeClock
    fallback_role: str | None

    def create(self, user_name: str, active: bool = True) -> str:
        body = {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": user_name,
            "active": active,
            "displayName": user_name.split("@")[0].title(),
            "emails": [{"value": user_name, "type": "work", "primary": True}],
        }
        return self.provisioning.create_user(body).id

    def set_active(self, user_id: str, active: bool) -> None:
        body = {
            "schemas": [PATCH_OP],
            "Operations": [{"op": "replace", "path": "active", "value": active}],
        }
        self.provisioning.patch_user(user_id, body, None)

    def delete(self, user_id: str) -> None:
        self.provisioning.delete_user(user_id)

    def deliver(self, handlers, **kw) -> DeliveryReport:
        return deliver_due(self.store, handlers, self.clock, BASE, MAX, **kw)

    def pending(self) -> list[OutboxMessage]:
        with self.store.read() as tx:
            return outbox.failing(tx, 0)  # every undelivered row

    def remote_id(self, user_id: str) -> str | None:
        with self.store.read() as tx:
            return outbox.remote_id(tx, user_id)

    def enqueue(self, kind: str, key: str, **payload) -> None:
        with self.store.write() as tx:
            outbox.enqueue(tx, kind, key, payload, self.clock())


@pytest.fixture
def make_source(db_url: str, clock: FakeClock) -> Iterator:
    stores: list[Store] = []

    def factory(**license) -> Source:
        settings = make_settings(db_url, **license)
        store = open_store(settings, clock)
        stores.append(store)
        notifier = OutboxNotifier(push=True, alerts=None, clock=clock)
        seats = SeatEngine(
            license_policy(settings.license), billing_terms(settings.license), clock, notifier
        )
        return Source(
            store, Provisioning(store, seats, clock), clock, settings.license.fallback_role
        )

    yield factory
    for store in stores:
        store.dispose()


@pytest.fixture
def source(make_source) -> Source:
    return make_source()


@pytest.fixture
def downstream(any_downstream):
    """Each delivery test runs against a second seat-agent and against stock scim2-server."""
    return any_downstream


@pytest.fixture
def own_downstream(tmp_path) -> Iterator[Downstream]:
    """A seat-agent downstream, for tests that hold one of its answers (``hold``)."""
    with running_downstream(tmp_path / "downstream") as server:
        yield server


@pytest.fixture
def connector(downstream: Downstream) -> Iterator[ScimConnector]:
    with ScimConnector(downstream.base_url, downstream.token, timeout=5) as c:
        yield c


@pytest.fixture
def handlers(source: Source, connector: ScimConnector):
    return PushHandlers(connector, source.store, source.fallback_role).handlers()


def assert_next_attempt(message: OutboxMessage, before: datetime, after: datetime, delay: float):
    """``available_at`` is the failure time (between before and after) plus ``delay``."""
    step = timedelta(seconds=delay)
    assert before + step <= message.available_at <= after + step


# -- changes reach the downstream ------------------------------------------------------------


def test_create_deactivate_delete_reach_the_downstream(source, downstream, handlers):
    user_id = source.create("ada@example.com")
    report = source.deliver(handlers)
    assert (report.delivered, report.failed, report.retry_later) == (1, 0, 0)
    [remote] = downstream.users()
    assert remote["externalId"] == user_id
    assert remote["userName"] == "ada@example.com"
    assert remote["active"] is True
    assert remote["displayName"] == "Ada"
    assert source.remote_id(user_id) == remote["id"]

    source.set_active(user_id, False)
    assert source.deliver(handlers).delivered == 1
    [remote] = downstream.users()
    assert remote["active"] is False

    source.delete(user_id)
    assert source.deliver(handlers).delivered == 1
    assert downstream.users() == []
    assert source.remote_id(user_id) is None
    assert source.pending() == []


def test_queued_user_is_inactive_downstream_until_promoted(make_source, downstream, connector):
    source = make_source(seats=1, on_full="queue")
    handlers = PushHandlers(connector, source.store, None).handlers()
    ada = source.create("ada@example.com")
    bob = source.create("bob@example.com")  # no seat free: queued
    assert source.deliver(handlers).delivered == 2
    by_ext = {u["externalId"]: u for u in downstream.users()}
    assert by_ext[ada]["active"] is True
    assert by_ext[bob]["active"] is False

    source.delete(ada)  # frees the seat: bob is promoted in the same transaction
    assert source.deliver(handlers).delivered == 2
    [remote] = downstream.users()
    assert remote["externalId"] == bob and remote["active"] is True


def test_user_deleted_before_delivery_is_removed_downstream(source, downstream, handlers):
    user_id = source.create("ada@example.com")
    source.deliver(handlers)
    source.set_active(user_id, False)
    source.delete(user_id)  # the pending push finds no user: it deletes downstream
    report = source.deliver(handlers)
    assert report.delivered == 2
    assert downstream.users() == []
    assert source.pending() == []


# -- downstream down: retries with backoff, then exactly one user ----------------------------


def test_downstream_down_backs_off_then_delivers_once(source, downstream, handlers):
    downstream.stop()
    user_id = source.create("ada@example.com")
    for attempts, delay in enumerate([2, 4, 8, 10, 10], start=1):
        before = source.clock.now
        report = source.deliver(handlers)
        after = source.clock.now
        assert (report.delivered, report.retry_later) == (0, 1)
        [message] = source.pending()
        assert message.attempts == attempts
        assert "cannot connect" in (message.last_error or "")
        assert_next_attempt(message, before, after, delay)
        # Not yet due: nothing is tried before the delay has passed.
        source.clock.advance(seconds=delay - 0.5)
        assert source.deliver(handlers) == DeliveryReport()
        assert source.pending()[0].attempts == attempts
        source.clock.advance(seconds=0.5)

    downstream.start()
    assert source.deliver(handlers).delivered == 1
    assert source.pending() == []
    [remote] = downstream.users_named("ada@example.com")
    assert remote["externalId"] == user_id
    assert source.remote_id(user_id) == remote["id"]
    source.clock.advance(seconds=60)
    assert source.deliver(handlers) == DeliveryReport()
    assert len(downstream.users()) == 1


def test_one_key_is_delivered_in_order_and_a_failure_blocks_only_its_key(source):
    calls: list[tuple[str, int]] = []
    fail_once = {("A", 1)}

    def note(message: OutboxMessage) -> None:
        step = (message.key, message.payload["n"])
        calls.append(step)
        if step in fail_once:
            fail_once.discard(step)
            raise DeliveryError("downstream busy")

    source.enqueue("note", "A", n=1)
    source.enqueue("note", "B", n=1)
    source.enqueue("note", "A", n=2)
    source.enqueue("note", "A", n=3)
    report = source.deliver({"note": note})
    assert (report.delivered, report.retry_later) == (1, 1)
    assert calls == [("A", 1), ("B", 1)]
    assert [(m.key, m.payload["n"], m.attempts) for m in source.pending()] == [
        ("A", 1, 1),
        ("A", 2, 0),
        ("A", 3, 0),
    ]
    source.clock.advance(seconds=BASE)
    assert source.deliver({"note": note}).delivered == 3
    assert calls[2:] == [("A", 1), ("A", 2), ("A", 3)]


def test_activate_then_deactivate_arrive_in_order(source, downstream, connector):
    pushed: list[tuple[int, str]] = []
    real = PushHandlers(connector, source.store, None).handlers()

    def recording(kind):
        def handle(message: OutboxMessage):
            pushed.append((message.seq, kind))
            return real[kind](message)

        return handle

    handlers = {kind: recording(kind) for kind in real}
    downstream.stop()
    user_id = source.create("ada@example.com")  # activate
    source.deliver(handlers)  # fails: downstream down
    source.set_active(user_id, False)  # deactivate, while the activation is still pending
    first, second = source.pending()
    assert (first.attempts, second.attempts) == (1, 0)  # the later change waited its turn
    downstream.start()
    source.clock.advance(seconds=BASE)
    assert source.deliver(handlers).delivered == 2
    assert [seq for seq, _ in pushed] == [first.seq, first.seq, second.seq]
    [remote] = downstream.users()
    assert remote["active"] is False


# -- crash between the remote write and the mark ---------------------------------------------


def test_kill_after_the_remote_write_resends_without_duplicate(source, downstream, handlers):
    user_id = source.create("ada@example.com")

    def push_then_die(message: OutboxMessage):
        handlers["push_user"](message)
        raise RuntimeError("killed before the delivery was recorded")

    report = source.deliver({**handlers, "push_user": push_then_die})
    assert report.retry_later == 1
    assert len(downstream.users()) == 1  # the remote write happened
    assert source.remote_id(user_id) is None  # ... but nothing was recorded
    [message] = source.pending()
    assert "RuntimeError: killed" in (message.last_error or "")

    source.clock.advance(seconds=BASE)
    assert source.deliver(handlers).delivered == 1
    [remote] = downstream.users_named("ada@example.com")
    assert source.remote_id(user_id) == remote["id"]
    assert source.pending() == []


DELIVER_SCRIPT = """
import sys
from datetime import datetime, timedelta

from agent.connectors.scim import ScimConnector
from agent.services.delivery import PushHandlers, deliver_due
from agent.storage.store import Store

url, base_url, token, start = sys.argv[1:5]
now = [datetime.fromisoformat(start)]


def clock():
    now[0] += timedelta(microseconds=1)
    return now[0]


store = Store.from_url(url)
with ScimConnector(base_url, token, timeout=120) as connector:
    report = deliver_due(store, PushHandlers(connector, store, None).handlers(), clock, 2, 10)
print(report.as_dict(), flush=True)
store.dispose()
"""


def _delivery_process(db_url: str, downstream: Downstream, clock: FakeClock) -> subprocess.Popen:
    """A separate process delivering the outbox against the real downstream."""
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            DELIVER_SCRIPT,
            db_url,
            downstream.base_url,
            downstream.token,
            clock.now.isoformat(),
        ],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_sigkill_mid_delivery_then_restart_delivers_each_user_once(db_url, source, own_downstream):
    ada = source.create("ada@example.com")
    bob = source.create("bob@example.com")
    cat = source.create("cat@example.com")
    source.set_active(bob, False)  # bob's final state: inactive (waits behind his creation)
    # bob's POST is carried out own_downstream, then the answer hangs: the process is killed there
    hold = own_downstream.hold("POST", "/Users", nth=2)
    worker = _delivery_process(db_url, own_downstream, source.clock)
    try:
        assert hold.reached.wait(timeout=60), worker.communicate(timeout=5)[0]
        worker.send_signal(signal.SIGKILL)
        worker.communicate(timeout=30)
    finally:
        hold.release.set()
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == -signal.SIGKILL
    assert len(own_downstream.users_named("bob@example.com")) == 1  # the write happened ...
    assert source.remote_id(bob) is None  # ... but its delivery was never recorded
    assert source.remote_id(ada) is not None
    assert len(source.pending()) == 3  # bob's two changes and cat's creation

    restarted = _delivery_process(db_url, own_downstream, source.clock)
    output, _ = restarted.communicate(timeout=120)
    assert restarted.returncode == 0, output
    assert source.pending() == []
    remote = own_downstream.users()
    assert sorted(u["userName"] for u in remote) == [
        "ada@example.com",
        "bob@example.com",
        "cat@example.com",
    ]  # each exactly once
    by_ext = {u["externalId"]: u for u in remote}
    assert (by_ext[ada]["active"], by_ext[bob]["active"], by_ext[cat]["active"]) == (
        True,
        False,
        True,
    )
    assert {source.remote_id(u) for u in (ada, bob, cat)} == set(by_ext[u]["id"] for u in by_ext)


def test_kill_after_the_remote_delete_resend_succeeds(source, downstream, handlers):
    user_id = source.create("ada@example.com")
    source.deliver(handlers)
    source.delete(user_id)

    def delete_then_die(message: OutboxMessage):
        handlers["delete_user"](message)
        raise RuntimeError("killed")

    assert source.deliver({**handlers, "delete_user": delete_then_die}).retry_later == 1
    assert downstream.users() == []
    source.clock.advance(seconds=BASE)
    assert source.deliver(handlers).delivered == 1  # the 404 is success
    assert source.pending() == []
    assert source.remote_id(user_id) is None


# -- failures, unknown kinds, status ---------------------------------------------------------


def test_retry_after_and_permanent_errors_set_the_next_attempt(source):
    errors = {
        "perm": DeliveryError("HTTP 400", permanent=True),
        "slow": DeliveryError("HTTP 503", retry_after=7),
        "beyond-max": DeliveryError("HTTP 429", retry_after=300),
        "very-slow": DeliveryError("HTTP 429", retry_after=10_000),
        "bug": ValueError("bad payload"),
    }

    def fail(message: OutboxMessage) -> None:
        raise errors[message.key]

    for key in errors:
        source.enqueue("note", key)
    before = source.clock.now
    report = source.deliver({"note": fail}, breaker_after=10)
    after = source.clock.now
    assert (report.delivered, report.failed, report.retry_later) == (0, 1, 4)
    by_key = {m.key: m for m in source.pending()}
    assert_next_attempt(by_key["perm"], before, after, MAX)
    assert_next_attempt(by_key["slow"], before, after, 7)
    # Retry-After is honoured beyond backoff_max, up to RETRY_AFTER_MAX (one hour)
    assert_next_attempt(by_key["beyond-max"], before, after, 300)
    assert_next_attempt(by_key["very-slow"], before, after, RETRY_AFTER_MAX)
    assert_next_attempt(by_key["bug"], before, after, BASE)
    assert by_key["perm"].last_error == "permanent: HTTP 400"
    assert by_key["bug"].last_error == "ValueError: bad payload"
    # A permanent error is never dropped: it is tried again at backoff_max.
    source.clock.advance(seconds=MAX)
    assert source.deliver({"note": fail}, breaker_after=10).failed == 1
    assert {m.key: m.attempts for m in source.pending()}["perm"] == 2


def test_unknown_kind_stays_undelivered_and_is_logged_once(source, caplog):
    kind = f"fax-{uuid.uuid4().hex[:8]}"
    source.enqueue(kind, "k1")
    source.enqueue(kind, "k2")
    delivered: list[str] = []
    source.enqueue("note", "k3")
    with caplog.at_level(logging.WARNING, logger="seat_agent.delivery"):
        for _ in range(3):
            source.deliver({"note": lambda m: delivered.append(m.key)})
            source.clock.advance(seconds=MAX)
    assert delivered == ["k3"]
    assert [(m.kind, m.attempts) for m in source.pending()] == [(kind, 0), (kind, 0)]
    assert [r.getMessage() for r in caplog.records if kind in r.getMessage()] == [
        f"outbox has 2 '{kind}' messages and no handler for them"
    ]


def test_outage_hook_summarises_failing_messages_and_recovery_re_arms(source):
    outages: list[Outage] = []
    recovered: list[bool] = []
    down = {"yes": True}

    def push(message: OutboxMessage) -> None:
        if down["yes"]:
            raise DeliveryError("HTTP 500: down")

    def fail(message: OutboxMessage) -> None:
        raise DeliveryError("SMTP down")

    hooks = {
        "alert_after_attempts": 2,
        "on_failing": lambda tx, outage: outages.append(outage),
        "on_recovered": lambda tx: recovered.append(True),
    }
    for i in range(3):
        source.enqueue("push_user", f"u-{i}", user_id=f"u-{i}")
    source.enqueue("email", "alert:low-seats")
    source.deliver({"push_user": push, "email": fail}, **hooks)
    assert outages == []  # one failure each: below the threshold
    for _ in range(2):
        source.clock.advance(seconds=MAX)
        source.deliver({"push_user": push, "email": fail}, **hooks)
    # one summary per run once the threshold is reached (the alerts service mails it once)
    assert [(o.failing, o.pending, o.oldest.key) for o in outages] == [(3, 3, "u-0")] * 2
    assert outages[0].oldest.last_error == "HTTP 500: down"  # never the email row
    assert recovered == []

    status = delivery_status(source.store, alert_after_attempts=2)
    assert status["depth"] == {"push_user": 3, "email": 1}
    assert status["pending"] == 4
    assert status["oldest_pending"] is not None
    assert [(f["kind"], f["attempts"]) for f in status["failing"]] == [("push_user", 3)] * 3 + [
        ("email", 3)
    ]

    down["yes"] = False
    source.clock.advance(seconds=MAX)
    source.deliver({"push_user": push, "email": fail}, **hooks)
    assert recovered == [True]  # the outage is over: the next one alerts again
    assert len(outages) == 2
    assert delivery_status(source.store, alert_after_attempts=2)["depth"] == {"email": 1}


def test_circuit_breaker_stops_a_run_against_a_dead_downstream(source):
    calls: list[str] = []

    def dead(message: OutboxMessage) -> None:
        calls.append(message.key)
        raise DeliveryError("GET /Users: timed out")

    for i in range(10):
        source.enqueue("push_user", f"u-{i}", user_id=f"u-{i}")
    source.enqueue("note", "other")
    noted: list[str] = []
    report = source.deliver({"push_user": dead, "note": lambda m: noted.append(m.key)})
    assert calls == ["u-0", "u-1", "u-2"]  # three timeouts, not ten
    assert report.broken == ["push_user"] and report.retry_later == 3
    assert noted == ["other"]  # other kinds are still delivered
    attempts = {m.key: m.attempts for m in source.pending()}
    assert attempts == {f"u-{i}": (1 if i < 3 else 0) for i in range(10)}


def test_keep_going_false_stops_between_messages(source):
    for i in range(4):
        source.enqueue("note", f"k{i}")
    done: list[str] = []
    report = source.deliver(
        {"note": lambda m: done.append(m.key)}, keep_going=lambda: len(done) < 2
    )
    assert done == ["k0", "k1"] and report.stopped
    assert [m.key for m in source.pending()] == ["k2", "k3"]


def test_limit_bounds_one_run(source):
    for i in range(5):
        source.enqueue("note", f"k{i}")
    assert source.deliver({"note": lambda m: None}, limit=3).delivered == 3
    assert len(source.pending()) == 2


def test_backoff_doubles_up_to_the_cap():
    assert [backoff_seconds(a, 2, 600) for a in range(4)] == [2, 4, 8, 16]
    assert backoff_seconds(9, 2, 600) == 600
    assert backoff_seconds(10_000, 2, 600) == 600
    assert backoff_seconds(0, 2, 600, retry_after=7) == 7
    assert backoff_seconds(0, 2, 600, retry_after=1800) == 1800  # Retry-After beats the cap
    assert backoff_seconds(0, 2, 600, retry_after=7200) == RETRY_AFTER_MAX == 3600
    assert backoff_seconds(0, 2, 7200, retry_after=7200) == 7200
    assert backoff_seconds(0, 2, 600, permanent=True) == 600
