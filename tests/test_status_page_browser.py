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


def seed_history(db_url: str) -> list[tuple[str, int, int]]:
    """Three weeks of seat changes before today, written to the ledger as the seat engine
    would have (the server's clock is the real one, so the past is written directly).
    Returns (day, licensed, consumed) as each day ended."""
    from agent.storage.store import Store

    store = Store.from_url(db_url)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    days: list[tuple[str, int, int]] = []
    try:
        with store.write() as tx:
            for back in range(HISTORY_DAYS, 0, -1):
                day = today - timedelta(days=back)
                licensed = 8 if back > 10 else SEATS
                consumed = min(licensed, 2 + (HISTORY_DAYS - back) // 2)
                tx.append_ledger(
                    at=day + timedelta(hours=9),
                    kind="grant",
                    cause="scim",
                    user_name=f"history{back}@example.com",
                    seats_after=licensed,
                    consumed_after=consumed,
                )
                if consumed == licensed:
                    for n in range(back % 3 + 1):
                        tx.append_ledger(
                            at=day + timedelta(hours=10, minutes=n),
                            kind="queue",
                            cause="scim",
                            user_name=f"waiting{back}-{n}@example.com",
                            seats_after=licensed,
                            consumed_after=consumed,
                        )
                days.append((day.date().isoformat(), licensed, consumed))
    finally:
        store.dispose()
    return days


class Admin:
    def __init__(self, url: str):
        self.url = url
        self.scim = requests.Session()
        self.scim.headers["Authorization"] = f"Bearer {SCIM_TOKEN}"
        self.admin = requests.Session()
        self.admin.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"

    def create(self, name: str) -> None:
        r = self.scim.post(self.url + "/scim/v2/Users", json=new_user(name), timeout=10)
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
    for i in range(SEATS - 1):
        admin.create(f"person{i}@example.com")
    cancelled = admin.post("/reductions", {"target": SEATS - 1})
    admin.post(f"/reductions/{cancelled['id']}/cancel", {"reason": "licenses kept for Q1"})
    planned = admin.post("/reductions", {"target": SEATS - 1})

    login = f"{server.url}/admin/login?token={ADMIN_TOKEN}"
    shot = artifacts(tmp_path) / "status-page.png"
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
        for day, _licensed, consumed in history:
            assert by_day[day] == consumed, day
        assert len(points) == HISTORY_DAYS + 1  # and today
        peak = max(consumed for _, _, consumed in history)
        assert browser.evaluate("document.getElementById('peak-marker').dataset.value") == str(peak)
        queued_days = browser.evaluate(
            "document.querySelectorAll('#chart-waits .bar-queued').length"
        )
        assert queued_days == sum(1 for _, lic, con in history if lic == con)

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
