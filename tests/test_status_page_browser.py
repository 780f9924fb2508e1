"""The status page in a real headless Chromium against `seat-agent serve` (gunicorn, two
workers, the embedded scheduler): the chart, the near-full colour, the health panel, finished
workflows, and the auto-refresh that swaps the figures without reloading the page. The run
saves its screenshot to ``$SEAT_AGENT_ARTIFACTS`` (else the test's temporary folder)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from tests.conftest import ADMIN_TOKEN, SCIM_TOKEN
from tests.test_status_page import (
    NEAR_FULL_RGB,
    DevTools,
    gauge_fraction,
    need_chromium,
    new_user,
    run_chromium,
)

HISTORY_DAYS = 20
SEATS = 10


def artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SEAT_AGENT_ARTIFACTS") or tmp_path / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def seed_history(db_url: str) -> list[tuple[str, int, int, int]]:
    """Three weeks of seat changes before today, written to the ledger and the refusals table
    as the seat engine would have (the server's clock is the real one, so the past is written
    directly): the pool fills and refuses, licenses go from 8 to 10, it fills again and users
    queue. Returns (day, licensed, consumed, refused) as each day ended."""
    from agent.storage import refusals
    from agent.storage.store import Store

    store = Store.from_url(db_url)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    days: list[tuple[str, int, int, int]] = []
    try:
        with store.write() as tx:
            for back in range(HISTORY_DAYS, 0, -1):
                day = today - timedelta(days=back)
                licensed = 8 if back > 8 else SEATS
                consumed = min(licensed, 2 + (HISTORY_DAYS - back) * 2 // 3)
                tx.ledger.append(
                    at=day + timedelta(hours=9),
                    kind="grant",
                    cause="scim",
                    user_name=f"history{back}@example.com",
                    seats_after=licensed,
                    consumed_after=consumed,
                )
                refused = back % 3 + 1 if consumed == licensed and licensed == 8 else 0
                for n in range(refused):
                    refusals.record(
                        tx,
                        at=day + timedelta(hours=11, minutes=n),
                        outcome="refused",
                        path="scim POST /Users",
                        licensed=licensed,
                        consumed=consumed,
                        queued=0,
                        user_name=f"turned-away{back}-{n}@example.com",
                    )
                if consumed == licensed and licensed == SEATS:
                    for n in range(back % 3 + 1):
                        tx.ledger.append(
                            at=day + timedelta(hours=10, minutes=n),
                            kind="queue",
                            cause="scim",
                            user_name=f"waiting{back}-{n}@example.com",
                            seats_after=licensed,
                            consumed_after=consumed,
                        )
                days.append((day.date().isoformat(), licensed, consumed, refused))
    finally:
        store.dispose()
    return days


def save_screenshot(browser: DevTools, path: Path, width: int = 1280) -> None:
    """The whole page as PNG, ``width`` CSS pixels wide at scale 1, without scrollbars."""
    import base64

    def viewport(height: int) -> None:
        browser.send(
            "Emulation.setDeviceMetricsOverride",
            session=True,
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    viewport(800)  # lay the page out at its width first, then take its whole height
    viewport(int(browser.evaluate("document.documentElement.scrollHeight")))
    browser.send("Emulation.setScrollbarsHidden", session=True, hidden=True)
    shot = browser.send("Page.captureScreenshot", session=True, format="png")
    path.write_bytes(base64.b64decode(shot["data"]))
    # And the part above the user search (seats, health, charts), for the README.
    top = browser.evaluate("document.getElementById('users').getBoundingClientRect().top")
    clip = {"x": 0, "y": 0, "width": width, "height": int(top), "scale": 1}
    part = browser.send("Page.captureScreenshot", session=True, format="png", clip=clip)
    path.with_name(path.stem + "-top.png").write_bytes(base64.b64decode(part["data"]))
    print(f"status page screenshots: {path} and {path.stem}-top.png")


class Admin:
    def __init__(self, url: str):
        self.url = url
        self.scim = requests.Session()
        self.scim.headers["Authorization"] = f"Bearer {SCIM_TOKEN}"
        self.admin = requests.Session()
        self.admin.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"

    def create(self, name: str, **extra) -> None:
        user = new_user(name, **extra)
        r = self.scim.post(self.url + "/scim/v2/Users", json=user, timeout=10)
        assert r.status_code == 201, r.text

    def post(self, path: str, body: dict | None = None) -> dict:
        r = self.admin.post(self.url + "/admin" + path, json=body or {}, timeout=10)
        assert r.status_code in (200, 201), r.text
        result: dict = r.json()
        return result


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_status_page_panels_in_headless_chromium(live_server, db_url, tmp_path):
    binary = need_chromium()
    server = live_server(workers=2, seats=SEATS, on_full="queue")
    history = seed_history(db_url)
    admin = Admin(server.url)
    names = ("Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov")
    names += ("Donald Knuth", "Frances Allen", "John Backus", "Margaret Hamilton")
    for i, name in enumerate(names[: SEATS - 1]):
        admin.create(
            f"person{i}@example.com",
            displayName=name,
            emails=[{"value": f"{name.split()[0].lower()}@example.com", "primary": True}],
            externalId=f"00u{i:03d}okta",
        )
    cancelled = admin.post("/reductions", {"target": SEATS - 1})
    admin.post(f"/reductions/{cancelled['id']}/cancel", {"reason": "licenses kept for Q1"})
    planned = admin.post("/reductions", {"target": SEATS - 1})

    login = f"{server.url}/admin/login?token={ADMIN_TOKEN}"
    shot = artifacts(tmp_path) / "status-page-first-load.png"
    run_chromium(
        binary, tmp_path / "shot", f"--screenshot={shot}", "--window-size=1280,1700", login
    )
    rows, fraction = gauge_fraction(shot, NEAR_FULL_RGB)  # 9 of 10: amber
    assert 30 <= rows <= 50
    assert abs(fraction - 0.9) < 0.02, fraction
    print(f"status page screenshot: {shot}")

    browser = DevTools(binary, tmp_path / "cdp")
    try:
        browser.send("Page.navigate", session=True, url=login)
        browser.wait_for("document.getElementById('updated-at') !== null")
        browser.send("Page.navigate", session=True, url=f"{server.url}/admin/?refresh=1")
        browser.wait_for("document.querySelector('tr.reduction-row') !== null")

        # Seats per day from the ledger: one point per day with data, the peak marked.
        points = browser.evaluate(
            "Array.from(document.querySelectorAll('#chart-seats .point-consumed'))"
            ".map(p => [p.dataset.day, Number(p.dataset.value)])"
        )
        by_day = dict(points)
        for day, _licensed, consumed, _refused in history:
            assert by_day[day] == consumed, day
        assert len(points) == HISTORY_DAYS + 1  # and today
        peak = max(consumed for _, _, consumed, _ in history)
        assert browser.evaluate("document.getElementById('peak-marker').dataset.value") == str(peak)
        queued_days = browser.evaluate(
            "document.querySelectorAll('#chart-waits .bar-queued').length"
        )
        assert queued_days == sum(1 for _, lic, con, _ in history if lic == con == SEATS)
        refused = browser.evaluate(
            "Array.from(document.querySelectorAll('#chart-waits .bar-refused'))"
            ".map(b => [b.dataset.day, Number(b.dataset.value)])"
        )
        assert dict(refused) == {day: n for day, _, _, n in history if n}
        assert len(refused) == 3

        # Near full: the state, the threshold on the gauge, the advice.
        assert browser.evaluate("document.getElementById('seats').dataset.state") == "near-full"
        assert browser.evaluate("document.getElementById('gauge-threshold') !== null")
        assert "Near full: 1 seat left." in browser.evaluate(
            "document.getElementById('pool-state').textContent"
        )

        # Health: the embedded scheduler takes the lease (it may need a few seconds).
        health = (
            "(() => { const c = document.querySelector('li[data-check=\"Scheduler\"]');"
            " return c && c.dataset.state === 'ok' ? c.textContent : null; })()"
        )
        assert "running on" in browser.wait_for(health)
        assert (
            browser.evaluate(
                "document.querySelector('li[data-check=\"Application\"]').dataset.state"
            )
            == "off"
        )

        # Workflows: the open one with its actions, the cancelled one with its outcome.
        rows_js = (
            "Array.from(document.querySelectorAll('tr.reduction-row')).map(r => "
            "[r.children[0].textContent, r.dataset.state, r.children[6].textContent,"
            " r.querySelectorAll('button').length])"
        )
        workflows = {
            rid: (state, outcome, buttons)
            for rid, state, outcome, buttons in browser.evaluate(rows_js)
        }
        assert workflows[planned["id"]] == ("planned", "awaiting approval", 2)
        assert workflows[cancelled["id"]] == (
            "cancelled",
            "cancelled by admin: licenses kept for Q1",
            0,
        )

        # User search: GET /admin/users with the form's filters, a page at a time.
        browser.evaluate("document.getElementById('users').dataset.count = '4'")
        search = (
            "(() => { document.getElementById('user-q').value = {q};"
            " document.getElementById('user-state').value = {state};"
            " document.querySelector('#user-search button').click(); return true; })()"
        )
        found = (
            "(() => { const s = document.getElementById('users-status');"
            " return /\\u2026$/.test(s.textContent) ? null : s.textContent; })()"
        )
        user_names = (
            "Array.from(document.querySelectorAll('#users-table tr.user-row'))"
            ".map(r => [r.children[0].textContent, r.children[5].textContent])"
        )
        browser.evaluate(search.replace("{q}", "'person'").replace("{state}", "'licensed'"))
        assert browser.wait_for(found) == "4 users so far; More shows the next ones."
        while browser.evaluate("!document.getElementById('users-more').hidden"):
            browser.evaluate("document.getElementById('users-more').click()")
            browser.wait_for(found)
        listed = browser.evaluate(user_names)
        assert sorted(listed) == [[f"person{i}@example.com", "licensed"] for i in range(9)]
        assert browser.evaluate("document.getElementById('users-status').textContent") == (
            "9 users."
        )
        browser.evaluate(search.replace("{q}", "'nobody'").replace("{state}", "''"))
        assert browser.wait_for(found) == "No user matches \u201cnobody\u201d."
        assert browser.evaluate("document.getElementById('users-table').hidden") is True
        browser.evaluate(  # a filter the API refuses: its error is shown as it is
            "(() => { const o = document.createElement('option'); o.value = 'deleted';"
            " document.getElementById('user-state').appendChild(o); return true; })()"
        )
        browser.evaluate(search.replace("{q}", "''").replace("{state}", "'deleted'"))
        assert browser.wait_for(found).startswith("'state' must be one of: licensed, queued")
        assert browser.evaluate("document.getElementById('users-status').className") == "error"
        browser.evaluate("document.getElementById('users').dataset.count = '50'")
        browser.evaluate(search.replace("{q}", "'person'").replace("{state}", "''"))
        assert browser.wait_for(found) == "9 users."
        listed = browser.evaluate(user_names)

        # What a person sees now: saved for the docs (scripts are done, the scheduler runs).
        save_screenshot(browser, artifacts(tmp_path) / "status-page.png")
        rows, fraction = gauge_fraction(artifacts(tmp_path) / "status-page.png", NEAR_FULL_RGB)
        assert 30 <= rows <= 50 and abs(fraction - 0.9) < 0.02, (rows, fraction)

        # Auto-refresh: the figures change in place, the page is not reloaded.
        browser.evaluate("window.stillTheSamePage = true")
        before = browser.evaluate("document.getElementById('updated-at').getAttribute('datetime')")
        admin.create("the-tenth@example.com")
        browser.wait_for("document.getElementById('consumed').textContent === '10'")
        assert browser.evaluate("window.stillTheSamePage") is True
        assert browser.evaluate("document.getElementById('seats').dataset.state") == "full"
        after = browser.evaluate("document.getElementById('updated-at').getAttribute('datetime')")
        assert after > before
        assert browser.evaluate("document.getElementById('refresh-state').className") == "hint"
        assert browser.evaluate(user_names) == listed  # the search results stay

        # Signed out (the cookie gone): the page says so and keeps the figures it has.
        browser.send("Network.clearBrowserCookies", session=True)
        stale = browser.wait_for(
            "(() => { const s = document.getElementById('refresh-state');"
            " return s.className === 'stale' ? s.textContent : null; })()"
        )
        assert "signed out: reload the page to sign in again" in stale
        assert browser.evaluate("document.getElementById('consumed').textContent") == "10"
    finally:
        browser.close()
