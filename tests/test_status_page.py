"""The /admin/ status page: auth and session (Flask test client), then a real headless Chromium
against `seat-agent serve` (gunicorn, several workers): screenshot pixels and the rendered DOM."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from tests.conftest import ADMIN_TOKEN, SCIM_TOKEN

HTML = {"Accept": "text/html,application/xhtml+xml"}
BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
COOKIE = "seat_agent_admin"
CONSUMED_RGB = (0x7C, 0x3A, 0xED)  # the gauge's consumed fill, #7c3aed
AVAILABLE_RGB = (0xD4, 0xD4, 0xD8)  # the gauge's available fill, #d4d4d8
NEAR_FULL_RGB = (0xD9, 0x77, 0x06)  # the consumed fill near full, #d97706
FULL_RGB = (0xDC, 0x26, 0x26)  # the consumed fill when full, #dc2626
CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)


def new_user(name: str, **extra) -> dict:
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "active": True,
        **extra,
    }


def session_cookie(client):
    return client.get_cookie(COOKIE, path="/admin")


def login(client, token: str = ADMIN_TOKEN):
    return client.post("/admin/login", data={"token": token})


# -- auth and session ------------------------------------------------------------------------


def test_browser_without_auth_is_sent_to_login(api):
    resp = api.client.get("/admin/", headers=HTML)
    assert resp.status_code == 303
    assert resp.location.endswith("/admin/login")
    form = api.client.get("/admin/login")
    assert form.status_code == 200
    assert b'name="token"' in form.data and b'type="password"' in form.data


def test_non_browser_without_auth_gets_401(api):
    resp = api.client.get("/admin/")
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert resp.json == {"error": "missing or invalid admin bearer token"}
    wrong = api.client.get("/admin/", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


def test_bearer_token_shows_the_page(api):
    api.scim("POST", "/Users", new_user("ann@example.com"))
    resp = api.client.get("/admin/", headers=BEARER)
    assert resp.status_code == 200
    assert resp.mimetype == "text/html"
    assert session_cookie(api.client) is None  # a bearer request creates no session
    assert "ann@example.com" in resp.text  # the ledger's grant row


@pytest.mark.parametrize("token", ["wrong-token", "", "  "])
def test_wrong_token_at_login_is_401_without_cookie(api, token):
    resp = login(api.client, token)
    assert resp.status_code == 401
    assert "Wrong admin token" in resp.text
    assert "Set-Cookie" not in resp.headers
    assert session_cookie(api.client) is None
    assert api.client.get("/admin/", headers=HTML).status_code == 303


def test_login_sets_a_strict_httponly_cookie_and_shows_the_numbers(make_api):
    api = make_api(seats=3, on_full="queue")
    for name in ("a@x", "b@x", "c@x", "d@x", "e@x"):
        assert api.scim("POST", "/Users", new_user(name)).status_code == 201

    resp = login(api.client)
    assert resp.status_code == 303
    assert resp.location.endswith("/admin/")
    set_cookie = resp.headers["Set-Cookie"]
    assert set_cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in set_cookie
    assert "SameSite=Strict" in set_cookie
    assert "Path=/admin" in set_cookie
    assert "Secure" not in set_cookie  # plain http here; see the https test

    page = api.client.get("/admin/", headers=HTML)
    assert page.status_code == 200
    text = page.text
    for metric, value in (("licensed", 3), ("consumed", 3), ("available", 0), ("queued", 2)):
        assert f'<dd id="{metric}">{value}</dd>' in text
    rows = re.findall(r'<tr class="queue-row"><td>(\d+)</td><td>([^<]+)</td>', text)
    assert rows == [("1", "d@x"), ("2", "e@x")]
    assert 'width="600"' in text  # consumed rect fills the bar at 3 of 3
    assert "Content-Security-Policy" in page.headers
    assert page.headers["Cache-Control"] == "no-store"


def test_cookie_is_secure_over_https(api):
    resp = api.client.post(
        "/admin/login", data={"token": ADMIN_TOKEN}, base_url="https://agent.example"
    )
    assert resp.status_code == 303
    assert "Secure" in resp.headers["Set-Cookie"]


def test_token_in_url_logs_in_once_and_redirects(api):
    resp = api.client.get(f"/admin/login?token={ADMIN_TOKEN}")
    assert resp.status_code == 303
    assert resp.location.endswith("/admin/")
    assert session_cookie(api.client) is not None
    assert api.client.get("/admin/", headers=HTML).status_code == 200
    other = api.app.test_client()
    bad = other.get("/admin/login?token=wrong")
    assert bad.status_code == 401
    assert session_cookie(other) is None


def test_logout_ends_the_session(api):
    login(api.client)
    assert api.client.get("/admin/", headers=HTML).status_code == 200
    resp = api.client.post("/admin/logout")
    assert resp.status_code == 303
    assert resp.location.endswith("/admin/login")
    assert session_cookie(api.client) is None
    assert api.client.get("/admin/", headers=HTML).status_code == 303
    assert api.client.get("/admin/seats").status_code == 401


def test_forged_or_foreign_cookie_is_refused(make_api, db_url):
    api = make_api()
    api.client.set_cookie(COOKIE, '{"admin": true}', path="/admin")
    assert api.client.get("/admin/", headers=HTML).status_code == 303
    assert api.client.get("/admin/seats").status_code == 401


def test_session_key_is_shared_by_apps_with_the_same_token(make_api):
    """Every gunicorn worker builds its own app: a cookie from one must work on another."""
    first, second = make_api(), make_api()
    assert first.app.secret_key == second.app.secret_key
    login(first.client)
    cookie = session_cookie(first.client)
    assert cookie is not None
    second.client.set_cookie(COOKIE, cookie.value, path="/admin")
    assert second.client.get("/admin/", headers=HTML).status_code == 200


def test_session_key_changes_with_the_admin_token():
    from agent.web.auth import digest
    from agent.web.status_page import session_secret

    assert session_secret([digest("one")]) == session_secret([digest("one")])
    assert session_secret([digest("one")]) != session_secret([digest("two")])
    both = session_secret([digest("one"), digest("two")])
    assert both == session_secret([digest("two"), digest("one")])  # order does not matter
    assert both not in (session_secret([digest("one")]), session_secret([digest("two")]))
    keyed = session_secret([digest("one")], "s3cret")
    assert keyed == session_secret([digest("one")], "s3cret")
    assert keyed not in (session_secret([digest("one")]), session_secret([digest("one")], "x"))
    assert session_secret([]) != session_secret([])  # no token: random, never forgeable
    assert session_secret([], "s3cret") != session_secret([], "s3cret")


def _hash_only_app(db_url: str, clock, **auth):
    """An app as one gunicorn worker (or host) builds it from a config whose admin token is
    given only as a digest."""
    from agent.app import create_app
    from agent.config import settings_from_mapping
    from agent.web.auth import digest

    settings = settings_from_mapping(
        {
            "database": {"url": db_url},
            "auth": {
                "scim_token": SCIM_TOKEN,
                "admin_token_hashes": [f"sha256:{digest(ADMIN_TOKEN)}"],
                **auth,
            },
        }
    )
    return create_app(settings, clock=clock)


@pytest.mark.parametrize("auth", [{}, {"session_secret": "shared-session-secret"}])
def test_session_works_across_processes_with_a_hash_only_admin_token(db_url, clock, auth):
    """Two workers (or hosts, or the same host after a restart) built from the same hash-only
    configuration accept each other's session cookie."""
    first = _hash_only_app(db_url, clock, **auth)
    second = _hash_only_app(db_url, clock, **auth)
    try:
        assert first.secret_key == second.secret_key
        browser = first.test_client()
        assert login(browser).status_code == 303
        cookie = session_cookie(browser)
        assert cookie is not None
        other = second.test_client()
        other.set_cookie(COOKIE, cookie.value, path="/admin")
        page = other.get("/admin/", headers=HTML)
        assert page.status_code == 200
        assert '<dd id="licensed">' in page.text
        assert other.get("/admin/seats").json["licensed"] == 10
    finally:
        for app in (first, second):
            app.extensions["seat_agent"].store.dispose()


def test_session_secret_from_the_environment_changes_the_key(db_url, clock, monkeypatch):
    plain = _hash_only_app(db_url, clock)
    monkeypatch.setenv("SEAT_AGENT_SESSION_SECRET", "from-the-environment-file")
    keyed = _hash_only_app(db_url, clock)
    try:
        assert keyed.secret_key != plain.secret_key
        browser = plain.test_client()
        login(browser)
        foreign = keyed.test_client()
        foreign.set_cookie(COOKIE, session_cookie(browser).value, path="/admin")
        assert foreign.get("/admin/", headers=HTML).status_code == 303  # not valid there
    finally:
        for app in (plain, keyed):
            app.extensions["seat_agent"].store.dispose()


def test_generated_admin_token_session_survives_a_restart(tmp_path, clock):
    """No admin token configured: the digest stored at first start keys the sessions, so a
    new process (a restart, another worker) accepts the old cookie."""
    from agent.app import create_app
    from agent.bootstrap import ensure_tokens, open_store
    from agent.config import settings_from_mapping

    settings = settings_from_mapping({"database": {"url": f"sqlite:///{tmp_path}/gen.db"}})
    store = open_store(settings)
    token = ensure_tokens(settings, store)["admin"]
    store.dispose()
    before, after = create_app(settings, clock=clock), create_app(settings, clock=clock)
    try:
        browser = before.test_client()
        assert login(browser, token).status_code == 303
        restarted = after.test_client()
        restarted.set_cookie(COOKIE, session_cookie(browser).value, path="/admin")
        assert restarted.get("/admin/", headers=HTML).status_code == 200
    finally:
        for app in (before, after):
            app.extensions["seat_agent"].store.dispose()


def test_session_reads_admin_api_and_needs_csrf_header_to_change_state(api):
    login(api.client)
    assert api.client.get("/admin/seats").json["licensed"] == 1000
    refused = api.client.put("/admin/licenses", json={"seats": 1200})
    assert refused.status_code == 401
    assert "X-Requested-With" in refused.json["error"]  # not "invalid token": it has none
    assert api.client.get("/admin/seats").json["licensed"] == 1000
    done = api.client.put(
        "/admin/licenses", json={"seats": 1200}, headers={"X-Requested-With": "fetch"}
    )
    assert done.status_code == 200
    assert done.json["seats"] == 1200


def test_page_actions_on_reductions_need_the_session_and_the_csrf_header(api):
    """The requests status_page.js sends: same-origin fetch with the cookie and X-Requested-With."""
    for i in range(3):
        api.scim("POST", "/Users", new_user(f"r{i}@x"))
    planned = api.admin("POST", "/reductions", {"target": 900})
    assert planned.status_code == 201, planned.json
    rid = planned.json["id"]
    browser = api.app.test_client()
    login(browser)
    listed = browser.get("/admin/reductions", headers={"X-Requested-With": "fetch"})
    assert listed.status_code == 200
    assert [(r["id"], r["state"]) for r in listed.json["reductions"]] == [(rid, "planned")]

    forged = browser.post(f"/admin/reductions/{rid}/cancel")  # a cross-site form: no header
    assert forged.status_code == 401
    assert api.admin("GET", f"/reductions/{rid}").json["state"] == "planned"
    anonymous = api.app.test_client().post(
        f"/admin/reductions/{rid}/cancel", headers={"X-Requested-With": "fetch"}
    )
    assert anonymous.status_code == 401

    cancelled = browser.post(
        f"/admin/reductions/{rid}/cancel", headers={"X-Requested-With": "fetch"}
    )
    assert cancelled.status_code == 200, cancelled.json
    assert cancelled.json["state"] == "cancelled"

    again = api.admin("POST", "/reductions", {"target": 900}).json["id"]
    approved = browser.post(
        f"/admin/reductions/{again}/approve", headers={"X-Requested-With": "fetch"}
    )
    assert approved.status_code == 200, approved.json
    assert approved.json["state"] != "planned"


def test_bearer_admin_api_is_unchanged(api):
    resp = api.admin("PUT", "/licenses", {"seats": 1001})
    assert resp.status_code == 200
    assert session_cookie(api.client) is None


def test_page_shows_recent_ledger_newest_first(api, clock):
    for i in range(25):
        api.scim("POST", "/Users", new_user(f"u{i:02d}@x"))
        clock.advance(minutes=1)
    text = api.client.get("/admin/", headers=BEARER).text
    names = re.findall(r'<tr class="ledger-row">(?:<td>[^<]*</td>){4}<td>([^<]*)</td>', text)
    assert len(names) == 20
    assert names[0] == "u24@x" and names[-1] == "u05@x"


def test_recent_ledger_is_the_newest_even_with_thousands_a_day(api, clock):
    """More than the old 5,000-row scan in one day: the page still shows the newest 20."""
    with api.agent.store.write() as tx:
        for i in range(5100):
            tx.ledger.append(
                at=clock(),
                kind="grant",
                cause="scim",
                user_name=f"bulk{i:04d}@x",
                seats_after=1000,
                consumed_after=1,
            )
    text = api.client.get("/admin/", headers=BEARER).text
    names = re.findall(r'<tr class="ledger-row">(?:<td>[^<]*</td>){4}<td>([^<]*)</td>', text)
    assert names == [f"bulk{i:04d}@x" for i in range(5099, 5079, -1)]


def test_queue_on_the_page_is_bounded_and_says_how_many_wait(make_api, monkeypatch):
    from agent.web import status_page

    monkeypatch.setattr(status_page, "QUEUE_SHOWN", 3)
    api = make_api(seats=1, on_full="queue")
    for i in range(6):
        assert api.scim("POST", "/Users", new_user(f"q{i}@x")).status_code == 201
    text = api.client.get("/admin/", headers=BEARER).text
    rows = re.findall(r'<tr class="queue-row"><td>(\d+)</td><td>([^<]+)</td>', text)
    assert rows == [("1", "q1@x"), ("2", "q2@x"), ("3", "q3@x")]
    assert '<dd id="queued">5</dd>' in text
    assert re.search(r'id="queue-more">The first 3 of 5 waiting', text)
    monkeypatch.setattr(status_page, "QUEUE_SHOWN", 50)
    text = api.client.get("/admin/", headers=BEARER).text
    assert len(re.findall(r'<tr class="queue-row">', text)) == 5
    assert 'id="queue-more"' not in text


def _database_down(monkeypatch, store) -> None:
    from sqlalchemy.exc import OperationalError

    def refuse(*_a, **_k):
        raise OperationalError("connect", {}, Exception("connection refused"))

    monkeypatch.setattr(store, "read", refuse)
    monkeypatch.setattr(store, "write", refuse)


def test_database_down_gives_503_on_the_page_and_the_reductions_api(api, monkeypatch):
    planned = api.admin("POST", "/reductions", {"target": 900})
    assert planned.status_code == 201
    rid = planned.json["id"]
    _database_down(monkeypatch, api.agent.store)

    page = api.client.get("/admin/", headers={**BEARER, **HTML})
    assert page.status_code == 503
    assert page.headers["Retry-After"] == "5"
    assert page.mimetype == "text/html"
    assert "Database unavailable" in page.text and "Traceback" not in page.text
    plain = api.client.get("/admin/", headers=BEARER)
    assert plain.status_code == 503
    assert plain.json == {"error": "database temporarily unavailable; retry later"}

    for method, path in (("GET", "/reductions"), ("POST", f"/reductions/{rid}/cancel")):
        r = api.admin(method, path)
        assert r.status_code == 503, (path, r.data)
        assert r.headers["Retry-After"] == "5"
        assert r.json == {"error": "database temporarily unavailable; retry later"}
    monkeypatch.undo()
    assert api.admin("GET", f"/reductions/{rid}").json["state"] == "planned"  # nothing changed


def test_static_assets_are_served_without_auth(api):
    with api.client.get("/admin/static/status_page.js") as js:
        assert js.status_code == 200
        assert b"X-Requested-With" in js.data
    with api.client.get("/admin/static/status_page.css") as css:
        assert css.status_code == 200


# -- a real browser against a real server ----------------------------------------------------


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit, non-interlaced RGB or RGBA PNG into rows of RGB(A) bytes (no Pillow).

    PNG specification, sections 11.2.2 (IHDR), 9 (filtering) and 10 (zlib compression).
    """
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        chunk = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and interlace == 0 and colour in (2, 6), (depth, colour, interlace)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        elif kind == b"IEND":
            break
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        ftype, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if ftype == 1:
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 0xFF
        elif ftype == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        elif ftype == 3:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif ftype == 4:
            for i in range(stride):
                a = line[i - channels] if i >= channels else 0
                b = prev[i]
                c = prev[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, channels, rows


def count_colour(row: bytes, channels: int, rgb: tuple[int, int, int], tol: int = 4) -> int:
    r, g, b = rgb
    n = 0
    for i in range(0, len(row), channels):
        if abs(row[i] - r) <= tol and abs(row[i + 1] - g) <= tol and abs(row[i + 2] - b) <= tol:
            n += 1
    return n


def gauge_fraction(png: Path, fill: tuple[int, int, int] = CONSUMED_RGB) -> tuple[int, float]:
    """Rows that show the gauge, and consumed / (consumed + available) pixels across them,
    the consumed part being drawn in ``fill``."""
    _, channels, rows = read_png(png)
    gauge_rows = consumed = available = 0
    for row in rows:
        c = count_colour(row, channels, fill)
        a = count_colour(row, channels, AVAILABLE_RGB)
        if c + a >= 100:  # a row through the bar, not a stray pixel of text
            gauge_rows += 1
            consumed += c
            available += a
    assert gauge_rows, "no gauge in the screenshot"
    return gauge_rows, consumed / (consumed + available)


def need_chromium() -> str:
    if CHROMIUM:
        return CHROMIUM
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is required under CI=true: apt-get install -y chromium")
    pytest.skip("chromium not installed (apt-get install -y chromium)")


def run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--virtual-time-budget=5000",  # let fetch() for the workflows settle before capture
        f"--user-data-dir={profile}",
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


class DevTools:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
    NUL-terminated JSON messages, commands on fd 3, replies and events on fd 4), so a test can
    click like a user: no WebDriver, no extra package."""

    def __init__(self, binary: str, profile: Path):
        import json

        self.json = json
        to_child, self._to_chromium = os.pipe()
        self._from_chromium, from_child = os.pipe()

        def pipes_as_3_and_4() -> None:
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)

        self.proc = subprocess.Popen(  # noqa: S603
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,
            preexec_fn=pipes_as_3_and_4,  # noqa: PLW1509
        )
        os.close(to_child)
        os.close(from_child)
        self._next_id = 0
        self._buffer = b""
        self.events: list[dict] = []
        self.dialogs = 0
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.send("Page.enable", session=True)

    def _message(self, timeout: float = 60) -> dict:
        import select

        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_chromium], [], [], timeout)
            assert ready, "no answer from chromium"
            chunk = os.read(self._from_chromium, 65536)
            assert chunk, "chromium closed the pipe"
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict = self.json.loads(raw)
        return message

    def send(self, method: str, session: bool = False, **params) -> dict:
        """One command; events that arrive meanwhile are kept, and a JavaScript dialog (the
        page's confirm()) is accepted as a user clicking OK would."""
        self._next_id += 1
        wanted = self._next_id
        message: dict = {"id": wanted, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_chromium, self.json.dumps(message).encode() + b"\0")
        while True:
            reply = self._message()
            if reply.get("id") == wanted:
                assert "error" not in reply, reply
                result: dict = reply.get("result", {})
                return result
            if reply.get("method") == "Page.javascriptDialogOpening":
                self.dialogs += 1
                self._next_id += 1
                accept = {
                    "id": self._next_id,
                    "method": "Page.handleJavaScriptDialog",
                    "params": {"accept": True},
                    "sessionId": self.session,
                }
                os.write(self._to_chromium, self.json.dumps(accept).encode() + b"\0")
            elif "method" in reply:
                self.events.append(reply)

    def evaluate(self, expression: str):
        result = self.send(
            "Runtime.evaluate", session=True, expression=expression, returnByValue=True
        )
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30):
        import time

        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            assert time.monotonic() < deadline, f"never true: {expression}"
            time.sleep(0.1)

    def click(self, x: float, y: float) -> None:
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                session=True,
                type=kind,
                x=x,
                y=y,
                button="left",
                buttons=1 if kind == "mousePressed" else 0,
                clickCount=1,
            )

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self._to_chromium)
        os.close(self._from_chromium)


def reduction_state(db_url: str, reduction_id: str) -> str:
    from sqlalchemy import select

    from agent.storage.store import Store
    from agent.storage.tables import reductions

    store = Store.from_url(db_url)
    try:
        with store.read() as tx:
            state: str = tx.conn.execute(
                select(reductions.c.state).where(reductions.c.id == reduction_id)
            ).scalar_one()
    finally:
        store.dispose()
    return state


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_approve_button_in_headless_chromium_changes_the_workflow(live_server, db_url, tmp_path):
    """A real click on Approve (and OK in its confirm dialog) in the rendered page: the
    session-authenticated fetch reaches the admin API and the workflow moves on in the
    database; the page then shows the new state."""
    import requests

    binary = need_chromium()
    server = live_server(workers=2, seats=10)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for i in range(4):
        r = requests.post(
            server.url + "/scim/v2/Users",
            json=new_user(f"click{i}@example.com"),
            headers={"Authorization": f"Bearer {SCIM_TOKEN}"},
            timeout=10,
        )
        assert r.status_code == 201, r.text
    planned = requests.post(
        server.url + "/admin/reductions", json={"target": 8}, headers=admin, timeout=10
    )
    assert planned.status_code == 201, planned.text
    rid = planned.json()["id"]
    assert reduction_state(db_url, rid) == "planned"

    browser = DevTools(binary, tmp_path / "cdp")
    try:
        browser.send(
            "Page.navigate", session=True, url=f"{server.url}/admin/login?token={ADMIN_TOKEN}"
        )
        where = browser.wait_for(
            "(() => { const b = document.querySelector('button.reduction-approve');"
            " if (!b) return null; b.scrollIntoView(); const r = b.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        assert browser.evaluate("document.cookie") == ""  # HttpOnly: not visible to scripts
        browser.click(*where)
        state = browser.wait_for(
            "(() => { const row = document.querySelector('tr.reduction-row');"
            " if (!row) return document.getElementById('reductions-status').textContent;"
            " const s = row.children[1].textContent; return s === 'planned' ? null : s; })()"
        )
        assert browser.dialogs == 1  # the confirm() before the request
    finally:
        browser.close()
    stored = reduction_state(db_url, rid)
    assert stored != "planned"
    assert state in (stored, "no workflows")  # the page re-read the list after the action


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_status_page_in_headless_chromium(live_server, tmp_path):
    import requests

    binary = need_chromium()
    server = live_server(workers=2, seats=10, on_full="queue")
    scim = requests.Session()
    scim.headers.update({"Authorization": f"Bearer {SCIM_TOKEN}"})

    def create(name: str) -> dict:
        resp = scim.post(server.url + "/scim/v2/Users", json=new_user(name), timeout=10)
        assert resp.status_code == 201, resp.text
        return resp.json()

    for i in range(3):
        create(f"early{i}@example.com")
    # ?token= is how a browser without a cookie gets in: login sets the session and redirects.
    login_url = f"{server.url}/admin/login?token={ADMIN_TOKEN}"

    shot = tmp_path / "partial.png"
    run_chromium(
        binary, tmp_path / "p1", f"--screenshot={shot}", "--window-size=1000,800", login_url
    )
    rows, fraction = gauge_fraction(shot)
    assert 30 <= rows <= 50  # the 40 px bar, fully in view
    assert abs(fraction - 0.3) < 0.02, fraction
    dom = run_chromium(binary, tmp_path / "p0", "--dump-dom", login_url).stdout
    assert '<dd id="consumed">3</dd>' in dom
    # No open reduction (or /admin/reductions not wired: 404): the script says so.
    assert re.search(r'id="reductions-status"[^>]*>no workflows<', dom), dom
    planned = requests.post(
        server.url + "/admin/reductions",
        json={"target": 5},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )
    assert planned.status_code == 201, planned.text
    rid = planned.json()["id"]

    for i in range(9):
        create(f"late{i}@example.com")  # 7 take the last seats, 2 wait
    seats = requests.get(
        server.url + "/admin/seats", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10
    ).json()
    assert (seats["consumed"], seats["queued"]) == (10, 2)

    dom = run_chromium(binary, tmp_path / "p2", "--dump-dom", login_url).stdout
    for metric, value in (("licensed", 10), ("consumed", 10), ("available", 0), ("queued", 2)):
        assert f'<dd id="{metric}">{value}</dd>' in dom, metric
    queue = re.findall(r'<tr class="queue-row"><td>(\d+)</td><td>([^<]+)</td><td>([^<]+)</td>', dom)
    assert [(p, n) for p, n, _ in queue] == [("1", "late7@example.com"), ("2", "late8@example.com")]
    assert all(since.endswith("UTC") for _, _, since in queue)
    # The script fetched the open reduction with the session and offers both actions.
    row = re.search(r'<tr class="reduction-row" data-state="planned">(.*?)</tr>', dom)
    assert row, dom
    assert f"<td>{rid}</td><td>planned</td><td>5</td>" in row.group(1)
    assert 'class="reduction-approve">Approve</button>' in row.group(1)
    assert 'class="reduction-cancel">Cancel</button>' in row.group(1)
    assert "early0@example.com" in dom and "late8@example.com" in dom  # ledger rows

    full = tmp_path / "full.png"
    run_chromium(
        binary, tmp_path / "p3", f"--screenshot={full}", "--window-size=1000,800", login_url
    )
    _, fraction = gauge_fraction(full, FULL_RGB)
    assert fraction > 0.99, fraction


def test_a_cookie_kept_from_before_sign_out_no_longer_opens_the_page(api, clock):
    login(api.client)
    kept = session_cookie(api.client)
    assert kept is not None
    copy = api.app.test_client()
    copy.set_cookie(COOKIE, kept.value, path="/admin")
    assert copy.get("/admin/seats").status_code == 200
    clock.advance(seconds=1)
    api.client.post("/admin/logout")
    assert copy.get("/admin/seats").status_code == 401  # the copied cookie is dead too
    assert copy.get("/admin/", headers=HTML).status_code == 303
    clock.advance(seconds=1)
    login(api.client)  # signing in again works
    assert api.client.get("/admin/seats").status_code == 200
