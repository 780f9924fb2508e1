"""The status page's panels, rendered by the server (Flask test client, SQLite and PostgreSQL):
seats per day from the ledger and the period's peak, the near-full colour and threshold, the
health panel, and the page's freshness (updated at, auto-refresh, bad parameters).
The same page in a real browser is in test_status_page_browser.py."""

from __future__ import annotations

import html
import re
from datetime import UTC, date, datetime, timedelta

import pytest

from tests.conftest import ADMIN_TOKEN, SCIM_TOKEN, Api
from tests.test_status_page import BEARER, HTML, new_user

AMBER, RED, PURPLE = "#d97706", "#dc2626", "#7c3aed"


def page(api: Api, query: str = "") -> str:
    resp = api.client.get(f"/admin/{query}", headers=BEARER)
    assert resp.status_code == 200, resp.text
    return resp.text


def points(text: str, cls: str) -> dict[str, int]:
    """``data-day`` -> ``data-value`` of the chart elements of class ``cls``."""
    found = re.findall(rf'class="{cls}"[^>]*data-day="([\d-]+)" data-value="(\d+)"', text)
    return {day: int(value) for day, value in found}


def history_rows(text: str) -> dict[str, list[str]]:
    rows = re.findall(r'<tr class="history-row" data-day="([\d-]+)">(.*?)</tr>', text)
    return {day: re.findall(r"<td>([^<]*)</td>", cells)[1:] for day, cells in rows}


def create(api: Api, name: str, **extra) -> dict:
    resp = api.scim("POST", "/Users", new_user(name, **extra))
    assert resp.status_code == 201, resp.json
    return resp.json


def deactivate(api: Api, user_id: str) -> None:
    body = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "value": {"active": False}}],
    }
    assert api.scim("PATCH", f"/Users/{user_id}", body).status_code == 200


# -- seats over time -------------------------------------------------------------------------


def test_chart_shows_seats_per_day_from_the_ledger(make_api, clock):
    """Each day's highest licensed and consumed, users queued that day; a day without
    entries carries the day before on; the range's peak is marked."""
    api = make_api(seats=3, on_full="queue")
    day0 = clock.now.date()
    a = create(api, "a@x")
    create(api, "b@x")
    clock.advance(days=1)  # day 1: full, two wait
    create(api, "c@x")
    create(api, "d@x")
    create(api, "e@x")
    clock.advance(days=2)  # day 3 (day 2 has no entry): one leaves, the first in line moves up
    deactivate(api, a["id"])
    assert api.admin("PUT", "/licenses", {"seats": 5}).status_code == 200

    text = page(api, "?days=7")
    days = [(day0 + timedelta(days=i)).isoformat() for i in range(4)]
    consumed = points(text, "point-consumed")
    licensed = points(text, "point-licensed")
    assert [consumed.get(d) for d in days] == [2, 3, 3, 4]
    assert [licensed.get(d) for d in days] == [3, 3, 3, 5]
    assert points(text, "bar-queued") == {days[1]: 2}
    # The first 3 days of the range are before the ledger began: no point, empty table cells.
    assert len(consumed) == 4 and min(consumed) == days[0]
    rows = history_rows(text)
    assert len(rows) == 7
    assert rows[days[2]] == ["3", "3", "0", "0"]
    assert rows[(day0 - timedelta(days=1)).isoformat()] == ["", "", "0", "0"]
    assert re.search(rf'id="peak-marker"[^>]*data-day="{days[3]}" data-value="4"', text)
    assert '<strong id="range-peak">4</strong> consumed on ' + days[3] in text


def test_chart_and_figures_show_the_activations_refused(make_api, clock):
    """A refusal changes no seat (the ledger has none): the refusals table counts them per
    day, and the figures say how many in the last 24 hours."""
    api = make_api(seats=2, on_full="refuse")
    day0 = clock.now.date().isoformat()
    create(api, "a@x")
    create(api, "b@x")
    assert api.scim("POST", "/Users", new_user("c@x")).status_code == 403
    clock.advance(days=1)
    for name in ("d@x", "e@x"):
        assert api.scim("POST", "/Users", new_user(name)).status_code == 403
    day1 = clock.now.date().isoformat()
    text = page(api, "?days=7")
    assert points(text, "bar-refused") == {day0: 1, day1: 2}
    assert points(text, "bar-queued") == {}
    assert history_rows(text)[day1] == ["2", "2", "0", "2"]
    assert '<dd id="refused">2</dd>' in text  # the last 24 hours
    assert "refused that day" in text
    clock.advance(days=1)
    assert '<dd id="refused">0</dd>' in page(api)


def test_the_billing_period_peak_stays_after_seats_are_freed(make_api, clock):
    api = make_api(seats=10, billing_period="monthly")
    ids = [create(api, f"p{i}@x")["id"] for i in range(6)]
    clock.advance(days=1)
    for uid in ids[:4]:
        deactivate(api, uid)
    text = page(api)
    assert '<dd id="consumed">2</dd>' in text
    assert '<strong id="period-peak-consumed">6</strong>' in text
    assert '<strong id="period-peak-licensed">10</strong>' in text
    start = clock.now.date().replace(day=1).isoformat()
    assert f"Billing period {start} to " in text


def test_days_parameter_sets_the_range(api, clock):
    create(api, "x@x")
    for days in (7, 30, 90, 365):
        text = page(api, f"?days={days}")
        assert len(history_rows(text)) == days
        assert f"<strong>{days} days</strong>" in text
    assert len(history_rows(page(api))) == 30  # the default


def test_history_reads_a_past_day_once_per_process(api, clock, monkeypatch):
    """An ended day never changes (the ledger is append-only): later views ask the database
    for today only, and give the same figures."""
    from agent.storage import history

    create(api, "early@x")
    clock.advance(days=2)
    asked: list[tuple[datetime, datetime]] = []
    real = history.ledger_days

    def spy(tx, start, end):
        asked.append((start, end))
        return real(tx, start, end)

    monkeypatch.setattr(history, "ledger_days", spy)
    first = page(api, "?days=7")
    assert min(start for start, _ in asked) <= datetime.combine(
        clock.now.date() - timedelta(days=6), datetime.min.time(), tzinfo=UTC
    )
    asked.clear()
    create(api, "today@x")
    second = page(api, "?days=7")
    today = datetime.combine(clock.now.date(), datetime.min.time(), tzinfo=UTC)
    assert asked and all(start >= today for start, _ in asked)
    before, after = points(first, "point-consumed"), points(second, "point-consumed")
    assert after.pop(clock.now.date().isoformat()) == 2
    assert before.pop(clock.now.date().isoformat()) == 1
    assert before == after


# -- near full -------------------------------------------------------------------------------


def gauge_fill(text: str) -> str:
    found = re.search(r'id="gauge-consumed"[^>]*fill="(#[0-9a-f]{6})"', text)
    assert found, text
    return found.group(1)


def test_gauge_turns_amber_near_full_and_red_when_full(make_api):
    api = make_api(seats=10, on_full="queue")
    for i in range(8):
        create(api, f"n{i}@x")
    text = page(api)
    assert gauge_fill(text) == PURPLE
    assert 'data-state="ok"' in text and "Room to spare: 2 seats free." in text
    assert '<strong id="near-from">9</strong>' in text  # 90% of 10
    assert re.search(r'id="gauge-threshold" x="539"', text)  # 600 * 9/10, 2 px wide

    create(api, "n8@x")
    text = page(api)
    assert gauge_fill(text) == AMBER
    assert 'class="pool-state near-full"' in text
    assert "Near full: 1 seat left." in text and "seat-agent licenses set N" in text

    create(api, "n9@x")
    text = page(api)
    assert gauge_fill(text) == RED
    assert "Full: no seat is free. New users are queued." in text


def test_near_full_threshold_follows_the_configuration(make_api):
    """50% of 20 seats; and the low-seats alert's 5 left when that comes first."""
    api = make_api(seats=20, near_full_percent=50, low_seats_threshold=1)
    for i in range(10):
        create(api, f"h{i}@x")
    text = page(api)
    assert '<strong id="near-from">10</strong>' in text
    assert gauge_fill(text) == AMBER
    other = make_api(seats=20, near_full_percent=100, low_seats_threshold=5)
    text = page(other)
    assert '<strong id="near-from">15</strong>' in text
    assert re.search(r'id="near-full-line" d="M', text)  # the threshold in the chart too


def test_near_full_percent_is_validated():
    from agent.config import ConfigError, settings_from_mapping

    for bad in (0, 101, "ninety"):
        with pytest.raises(ConfigError, match=r"license\.near_full_percent"):
            settings_from_mapping(
                {
                    "database": {"url": "sqlite://"},
                    "license": {"seats": 10, "near_full_percent": bad},
                }
            )


# -- health ----------------------------------------------------------------------------------


def checks(text: str) -> dict[str, tuple[str, str]]:
    """Check name -> (state, summary and advice as plain text)."""
    found = re.findall(
        r'<li class="check [a-z]+" data-check="([^"]+)" data-state="([a-z]+)">(.*?)</li>',
        text,
        re.S,
    )
    return {
        name: (state, html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))).strip())
        for name, state, body in found
    }


def jobs(text: str) -> dict[str, tuple[str, list[str]]]:
    found = re.findall(r'data-job="([a-z_]+)" data-state="([a-z]+)">(.*?)</tr>', text)
    return {
        name: (state, [html.unescape(c) for c in re.findall(r"<td[^>]*>([^<]*)</td>", cells)])
        for name, state, cells in found
    }


def test_health_panel_without_a_scheduler_says_what_to_do(api):
    text = page(api)
    panel = checks(text)
    assert panel["Scheduler"][0] == "bad"
    assert "no scheduler holds the lease" in panel["Scheduler"][1]
    assert "restart seat-agent serve" in panel["Scheduler"][1]
    assert "<code>seat-agent reconcile</code> once" in text  # shown as code, no backticks
    assert panel["Last reconcile"] == (
        "warn",
        "Last reconcile never Run seat-agent reconcile once, or check that the scheduler "
        "is running.",
    )
    assert panel["Application"][0] == "off"
    assert panel["Outbox backlog"] == ("ok", "Outbox backlog nothing waiting")
    assert panel["Delivery failures"] == ("ok", "Delivery failures none")
    table = jobs(text)
    assert {"reconcile", "drain_queue", "deliver_outbox", "advance_workflows"} <= set(table)
    assert table["reconcile"] == ("off", ["reconcile", "every 15 min", "never", "0", "0"])
    assert 'id="health" aria-labelledby="health-title" data-live data-state="bad"' in text


def test_health_panel_shows_the_holder_and_the_last_runs(api, clock):
    from agent.jobs.lease import Lease
    from agent.jobs.scheduler import guarded
    from agent.jobs.tasks import Jobs

    lease = Lease(api.agent.store, "host-a:123:abcdef", 300, clock)
    assert lease.renew()
    guarded(lease, "reconcile", Jobs(api.agent).reconcile)()
    guarded(lease, "drain_queue", lambda: 1 / 0)()  # a failing run is counted as such
    clock.advance(minutes=3)
    text = page(api)
    panel = checks(text)
    assert panel["Scheduler"] == ("ok", "Scheduler running on host-a:123:abcdef")
    assert panel["Last reconcile"][0] == "ok"
    assert "(3 min ago)" in panel["Last reconcile"][1]
    table = jobs(text)
    assert table["reconcile"][0] == "ok"
    assert table["reconcile"][1][2].endswith("UTC (3 min ago)")
    assert table["reconcile"][1][3:] == ["1", "0"]
    assert table["drain_queue"][1][3:] == ["1", "1"]

    clock.advance(minutes=40)  # two 15-minute intervals and the lease have passed
    lease.renew()
    text = page(api)
    assert checks(text)["Last reconcile"][0] == "warn"
    assert "It should run every 15 min" in checks(text)["Last reconcile"][1]
    assert jobs(text)["reconcile"][0] == "warn"


@pytest.fixture
def downstream_app(db_url, clock, tmp_path):
    from agent.app import create_app
    from agent.config import settings_from_mapping
    from tests.downstream import running_downstream

    apps = []
    with running_downstream(tmp_path / "downstream") as server:

        def build(alert_after_attempts: int = 2) -> Api:
            settings = settings_from_mapping(
                {
                    "database": {"url": db_url},
                    "auth": {"scim_token": SCIM_TOKEN, "admin_token": ADMIN_TOKEN},
                    "license": {"seats": 10},
                    "downstream": {
                        "type": "scim",
                        "url": server.base_url,
                        "token": server.token,
                        "timeout_seconds": 5,
                        "alert_after_attempts": alert_after_attempts,
                    },
                }
            )
            app = create_app(settings, clock=clock)
            apps.append(app)
            return Api(app)

        yield build, server
    for app in apps:
        app.extensions["seat_agent"].store.dispose()


def test_health_panel_shows_whether_the_app_answered_and_the_outbox(downstream_app, clock):
    from agent.jobs.tasks import Jobs

    build, server = downstream_app
    api = build(alert_after_attempts=2)
    jobs_ = Jobs(api.agent)
    create(api, "ann@example.com")
    jobs_.deliver_outbox()
    jobs_.reconcile()
    panel = checks(page(api))
    assert panel["Application"] == (
        "ok",
        "Application answered at the last reconcile; 0 differences found",
    )
    assert panel["Outbox backlog"][0] == "ok"

    server.stop()
    create(api, "bob@example.com")
    jobs_.reconcile()
    for _ in range(3):  # each attempt fails; the next one waits for its back-off
        jobs_.deliver_outbox()
        clock.advance(minutes=20)
    panel = checks(page(api))
    assert panel["Application"][0] == "bad"
    assert "did not answer at the last reconcile" in panel["Application"][1]
    assert "Check [downstream] url and its token" in panel["Application"][1]
    assert panel["Outbox backlog"][0] == "warn"
    assert "1 waiting (1 push_user); oldest written" in panel["Outbox backlog"][1]
    state, failures = panel["Delivery failures"]
    assert state == "bad"
    assert "1 change(s) failed 2 or more times; oldest: push_user" in failures
    assert "last error:" in failures and "The agent keeps retrying" in failures

    server.start()
    jobs_.deliver_outbox()
    jobs_.reconcile()
    panel = checks(page(api))
    assert panel["Delivery failures"] == ("ok", "Delivery failures none")
    assert panel["Application"][0] == "ok"


# -- freshness and parameters ----------------------------------------------------------------


def test_page_says_when_it_was_read_and_how_often_it_refreshes(api, clock):
    text = page(api)
    stamp = re.search(r'<time id="updated-at" datetime="([^"]+)">([^<]+)</time>', text)
    assert stamp
    at = datetime.fromisoformat(stamp.group(1))
    assert abs(at - clock.now) < timedelta(seconds=1)
    assert stamp.group(2) == at.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert 'data-refresh="30"' in text and "refreshes every 30 s" in text
    assert 'id="refresh-now"' in text
    off = page(api, "?refresh=0")
    assert 'data-refresh="0"' in off and "auto-refresh off" in off
    assert 'data-refresh="5"' in page(api, "?refresh=5&days=14")
    clock.advance(hours=1)
    later = re.search(r'<time id="updated-at" datetime="([^"]+)">', page(api))
    assert later and datetime.fromisoformat(later.group(1)) - at >= timedelta(hours=1)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?days=3", "'days' must be a number of days from 7 to 366."),
        ("?days=abc", "'days' must be a number of days from 7 to 366."),
        ("?days=400", "'days' must be a number of days from 7 to 366."),
        ("?refresh=-1", "'refresh' must be a number of seconds from 1 to 3600, or 0"),
        ("?refresh=99999", "'refresh' must be a number of seconds from 1 to 3600, or 0"),
        ("?sort=name", "Unknown parameter(s) sort: the page takes days and refresh."),
    ],
)
def test_bad_page_parameters_are_a_400_that_says_what_works(api, query, message):
    browser = api.client.get(f"/admin/{query}", headers={**BEARER, **HTML})
    assert browser.status_code == 400
    assert browser.mimetype == "text/html"
    assert message in html.unescape(browser.text)
    assert 'href="/admin/"' in browser.text
    plain = api.client.get(f"/admin/{query}", headers=BEARER)
    assert plain.status_code == 400
    assert message in plain.json["error"]
    anonymous = api.client.get(f"/admin/{query}")
    assert anonymous.status_code == 401  # parameters are looked at only once signed in


# -- the pieces, one by one ------------------------------------------------------------------


def test_daily_figures_carry_the_state_across_empty_days():
    from agent.domain.seat_history import DayFigures, LedgerDay, busiest_day, daily_figures

    d = date(2026, 11, 1)
    recorded = [
        LedgerDay(d + timedelta(days=1), 10, 7, 10, 5, 1),
        LedgerDay(d + timedelta(days=3), 12, 9, 12, 9, 0),
    ]
    got = daily_figures(d, d + timedelta(days=4), (10, 6), recorded, {d: 2})
    assert [(x.licensed, x.consumed, x.queued, x.refused) for x in got] == [
        (10, 6, 0, 2),
        (10, 7, 1, 0),
        (10, 5, 0, 0),  # carried on from the close of the day before
        (12, 9, 0, 0),
        (12, 9, 0, 0),
    ]
    assert busiest_day(got) == DayFigures(d + timedelta(days=3), 12, 9, 0, 0)
    before = daily_figures(d, d + timedelta(days=1), None, recorded[:1])
    assert [(x.licensed, x.consumed) for x in before] == [(None, None), (10, 7)]
    assert busiest_day(daily_figures(d, d, None, [])) is None


@pytest.mark.parametrize(
    ("licensed", "percent", "low", "expected"),
    [(10, 90, 1, 9), (1000, 90, 1, 900), (1000, 90, 200, 800), (7, 50, 0, 4), (0, 90, 1, 0)],
)
def test_near_full_from(licensed, percent, low, expected):
    from agent.domain.seat_history import near_full_from

    assert near_full_from(licensed, percent, low) == expected


def test_pool_state():
    from agent.domain.seat_history import PoolState, pool_state

    assert pool_state(10, 8, 9) is PoolState.OK
    assert pool_state(10, 9, 9) is PoolState.NEAR_FULL
    assert pool_state(10, 10, 9) is PoolState.FULL
    assert pool_state(0, 0, 0) is PoolState.FULL


@pytest.mark.parametrize(
    ("value", "top", "step"), [(0, 4, 1), (3, 4, 1), (9, 10, 5), (812, 1000, 250), (120, 150, 50)]
)
def test_chart_axis_is_round(value, top, step):
    from agent.web.seat_chart import nice_max

    assert nice_max(value) == (top, step)


def test_ledger_days_are_utc_days_on_both_databases(api, clock):
    """Entries either side of midnight UTC land on their own days, on SQLite and PostgreSQL
    (whatever the session's time zone)."""
    from agent.storage import history

    midnight = datetime(2026, 11, 20, tzinfo=UTC)
    with api.agent.store.write() as tx:
        if tx.is_postgres:
            tx.conn.exec_driver_sql("SET LOCAL TIME ZONE 'America/Los_Angeles'")
        for at, kind, consumed in (
            (midnight - timedelta(minutes=1), "grant", 4),
            (midnight, "queue", 4),
            (midnight + timedelta(hours=23, minutes=59), "release", 3),
        ):
            tx.ledger.append(at=at, kind=kind, cause="test", seats_after=5, consumed_after=consumed)
        got = history.ledger_days(tx, midnight - timedelta(days=1), midnight + timedelta(days=1))
        assert history.state_before(tx, midnight) == (5, 4)
    assert [(d.day.isoformat(), d.consumed_peak, d.consumed_close, d.queued) for d in got] == [
        ("2026-11-19", 4, 4, 0),
        ("2026-11-20", 4, 3, 1),
    ]
