"""The admin status page (/admin/): seats with the near-full state, seats per day and the
billing period's peak (agent.web.seat_chart), the health panel (agent.web.status_health), a
user search, the queue, every reduce workflow, the recent ledger; docs/status-page.md.

Every figure is rendered here, on the server; status_page.js only fetches the page again to
refresh it in place, lists the workflows and runs the user search through the admin API.

Auth is the admin bearer token, or a signed session cookie established from it at
``/admin/login``. The cookie's signing key is an HMAC over the digests of every accepted admin
token (configured in clear, given as ``[auth] admin_token_hashes``, or generated and stored),
keyed by ``[auth] session_secret`` when one is set: every gunicorn worker and every host with
the same configuration derives the same key, it survives restarts, and changing the admin
tokens (or the secret) ends every session.

State changes made from the page (approve/cancel a reduction) go to the JSON admin API with the
session; ``session_is_admin`` is what that API accepts besides a bearer token. A state-changing
request must also carry an ``X-Requested-With`` header: a cross-site form cannot set one, and a
cross-site ``fetch`` that sets one needs a CORS preflight we never answer (OWASP CSRF cheat
sheet, "custom request headers"); SameSite=Strict on the cookie is the second line.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from markupsafe import Markup, escape
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.wrappers import Response as BaseResponse

from agent.domain.seat_history import near_full_from, pool_state
from agent.services.seat_history import ClosedDays, seat_history
from agent.storage import refusals
from agent.storage.records import LedgerEntry, UserRecord
from agent.web.seat_chart import seats_chart, waits_chart
from agent.web.status_health import agent_health

bp = Blueprint(
    "status_page",
    __name__,
    url_prefix="/admin",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)


@bp.app_template_filter("commands")
def commands(text: str) -> Markup:
    """Advice text with its `command` spans shown as code, not as literal backticks."""
    parts = str(escape(text)).split("`")
    return Markup(
        "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
        if len(parts) % 2
        else str(escape(text))
    )


SESSION_LIFETIME = timedelta(hours=12)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
GAUGE_WIDTH = 600
# The gauge's fill by pool state: the colour a person sees from across the room.
GAUGE_FILL = {"ok": "#7c3aed", "near-full": "#d97706", "full": "#dc2626"}
# Chart ranges offered on the page (days, ending today); ?days= accepts 7 to MAX_DAYS.
DAY_RANGES = (7, 30, 90, 365)
DEFAULT_DAYS = 30
MAX_DAYS = 366
# Auto-refresh interval in seconds (?refresh=N, 0 turns it off).
DEFAULT_REFRESH = 30
MAX_REFRESH = 3600
RECENT_LEDGER = 20
# The queue can hold thousands: the page lists the first ones and says how many wait in all.
QUEUE_SHOWN = 50
SESSION_LABEL = b"seat-agent/admin-session/v1"
RETRY_AFTER_SECONDS = "5"
log = logging.getLogger(__name__)
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class AdminSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, scoped to /admin and Secure whenever the request is https.

    Behind a TLS-terminating proxy, ``request.is_secure`` is true only when the app trusts the
    proxy's X-Forwarded-Proto (werkzeug ProxyFix).
    """

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(request.is_secure)

    def get_cookie_path(self, app: Flask) -> str:
        return (request.script_root or "") + "/admin"

    def open_session(self, app: Flask, request: Any) -> Any:
        """The cookie is scoped to /admin, so no other request carries it: those get the null
        session at once (a SCIM request would otherwise build a signing serializer for
        nothing)."""
        if request.path != "/admin" and not request.path.startswith("/admin/"):
            return self.make_null_session(app)
        return super().open_session(app, request)


def session_secret(token_digests: Iterable[str], secret: str | None = None) -> str:
    """The session signing key: the same in every process given the same configuration.

    HMAC-SHA256 over a fixed label and the sorted digests of the accepted admin tokens (the
    ones ``bootstrap.token_sets`` accepts: configured, ``admin_token_hashes``, or the stored
    digest of a generated token), keyed by ``secret`` when set, else by the digests. Without
    ``secret`` anyone who can read a digest (config.toml, the database) could sign a cookie,
    hence ``[auth] session_secret`` for hash-only configurations (docs/deployment.md).

    Without an admin token nobody can log in, so a per-process random key costs nothing and
    keeps a forged cookie from ever verifying.
    """
    digests = sorted({d.lower() for d in token_digests if d})
    if not digests:
        return secrets.token_hex(32)
    material = b"".join(bytes.fromhex(d) for d in digests)
    if secret:
        key = secret.encode("utf-8")
        return hmac.new(key, SESSION_LABEL + material, hashlib.sha256).hexdigest()
    return hmac.new(material, SESSION_LABEL, hashlib.sha256).hexdigest()


@bp.record_once
def _configure_sessions(state: Any) -> None:
    app: Flask = state.app
    agent = app.extensions["seat_agent"]
    app.secret_key = session_secret(
        agent.admin_tokens.digests, agent.settings.auth.resolved_session_secret()
    )
    app.session_interface = AdminSessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME="seat_agent_admin",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
    )


def session_is_admin() -> bool:
    """True when the request carries a valid admin session cookie.

    A state-changing method must also send ``X-Requested-With`` (see the module docstring); the
    signature's max age (12 hours from login) ends a session even if the cookie is kept.
    """
    if session.get("admin") is not True:
        return False
    if request.method not in SAFE_METHODS and not request.headers.get("X-Requested-With"):
        return False
    return not _signed_out_since(str(session.get("login_at") or ""))


SIGNED_OUT_KEY = "admin_signed_out_at"


def _signed_out_since(login_at: str) -> bool:
    """True when someone signed out after this session began: a cookie kept from before
    (copied, or in another browser) no longer opens the page (sign-out ends every session)."""
    with current_app.extensions["seat_agent"].store.read() as tx:
        signed_out = tx.state.get(SIGNED_OUT_KEY)
    if signed_out is None:
        return False
    try:
        return datetime.fromisoformat(login_at) <= datetime.fromisoformat(signed_out)
    except ValueError:
        return True


def _bearer_ok() -> bool:
    tokens = current_app.extensions["seat_agent"].admin_tokens
    return bool(tokens.accepts(request.headers.get("Authorization")))


def _token_ok(token: str) -> bool:
    tokens = current_app.extensions["seat_agent"].admin_tokens
    return bool(token.strip()) and bool(tokens.accepts(f"Bearer {token.strip()}"))


def _login_session() -> None:
    session.clear()
    session["admin"] = True
    session["login_at"] = current_app.extensions["seat_agent"].clock().isoformat()


@bp.after_request
def _headers(resp: Response) -> Response:
    resp.headers.setdefault("Content-Security-Policy", CSP)
    resp.headers.setdefault("X-Frame-Options", "DENY")
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Referrer-Policy", "no-referrer")
    if request.endpoint != "status_page.static":
        resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/login")
def login_form() -> BaseResponse | tuple[str, int]:
    """The login form; ``?token=`` logs in directly (for headless browsers, see docs).

    A token in a URL can land in proxy logs and browser history: prefer the form. The agent's
    own access log records the path without the query string.
    """
    token = request.args.get("token")
    if token is None:
        return render_template("status_page/login.html", error=None), 200
    if not _token_ok(token):
        return render_template("status_page/login.html", error="Wrong admin token."), 401
    _login_session()
    return redirect(url_for("status_page.index"), code=303)


@bp.post("/login")
def login() -> BaseResponse | tuple[str, int]:
    if not _token_ok(request.form.get("token", "")):
        return render_template("status_page/login.html", error="Wrong admin token."), 401
    _login_session()
    return redirect(url_for("status_page.index"), code=303)


@bp.post("/logout")
def logout() -> BaseResponse:
    agent = current_app.extensions["seat_agent"]
    with agent.store.write() as tx:
        tx.state.put(SIGNED_OUT_KEY, agent.clock().isoformat())
    session.clear()
    return redirect(url_for("status_page.login_form"), code=303)


def _queue_row(u: UserRecord) -> dict[str, Any]:
    return {
        "position": u.queue_position,
        "user_name": u.user_name,
        "queued_at": _when(u.seat.queued_at),
    }


def _ledger_row(e: LedgerEntry) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "at": _when(e.at),
        "kind": e.kind,
        "cause": e.cause,
        "user_name": e.user_name or "",
        "detail": e.detail or "",
        "seats_after": e.seats_after,
        "consumed_after": e.consumed_after,
    }


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at else ""


def recent_ledger(agent: Any) -> list[LedgerEntry]:
    """The newest ``RECENT_LEDGER`` entries, newest first, read as such (by descending seq)."""
    with agent.store.read() as tx:
        entries: list[LedgerEntry] = tx.ledger.entries(limit=RECENT_LEDGER, newest_first=True)
    return entries


def queue_head(agent: Any) -> list[UserRecord]:
    """The first ``QUEUE_SHOWN`` queued users, first come first served."""
    with agent.store.read() as tx:
        users: list[UserRecord] = tx.users.queued(limit=QUEUE_SHOWN)
    return users


@bp.errorhandler(OperationalError)
@bp.errorhandler(InterfaceError)
def _database_unavailable(err: Exception) -> tuple[str | Response, int, dict[str, str]]:
    """The database is down or restarting: 503 with Retry-After, as on /scim and the admin API
    (a short page for a browser, JSON otherwise), never a traceback."""
    log.warning("status page: database unavailable: %s", type(err).__name__)
    headers = {"Retry-After": RETRY_AFTER_SECONDS, "Cache-Control": "no-store"}
    if request.accept_mimetypes.accept_html:
        return render_template("status_page/unavailable.html"), 503, headers
    return jsonify({"error": "database temporarily unavailable; retry later"}), 503, headers


def gauge(report: dict[str, Any], near_from: int | None = None) -> dict[str, Any]:
    """Pixel widths of the seat bar (consumed over licensed, clamped to the bar), its fill by
    pool state, and where the near-full threshold sits on it."""
    licensed, consumed = int(report["licensed"]), int(report["consumed"])
    used = 0 if licensed <= 0 else round(GAUGE_WIDTH * min(consumed, licensed) / licensed)
    state = pool_state(licensed, consumed, near_from if near_from is not None else licensed)
    marker = None
    if near_from is not None and 0 < near_from < licensed:
        marker = round(GAUGE_WIDTH * near_from / licensed)
    return {
        "width": GAUGE_WIDTH,
        "consumed": used,
        "available": GAUGE_WIDTH - used,
        "state": state.value,
        "fill": GAUGE_FILL[state.value],
        "marker": marker,
    }


def seat_figures(agent: Any) -> dict[str, Any]:
    """Seats licensed, consumed, available and queued: the pool row and one indexed count
    (``SeatAdmin.report`` also groups every user by status and role, too much for a page that
    refreshes itself at a million users)."""
    with agent.store.read() as tx:
        pool = tx.pool.current()
        queued = tx.users.queued_count()
        refused = refusals.totals(tx, agent.clock() - timedelta(days=1))["refused"]
    lic = agent.settings.license
    return {
        "licensed": pool.seats,
        "consumed": pool.consumed,
        "available": max(pool.seats - pool.consumed, 0),
        "queued": queued,
        "refused_24h": refused,
        "on_full": lic.on_full,
        "max_seats": lic.max_seats,
    }


def _closed_days() -> ClosedDays:
    """This app's (so this worker's) summaries of ended days: a page view reads only today."""
    closed: ClosedDays = current_app.extensions.setdefault("seat_agent_closed_days", ClosedDays())
    return closed


class BadPageRequest(ValueError):
    """A query parameter of the page that cannot be honoured; the message says what can."""


def _int_param(name: str, default: int, low: int, high: int, allowed: str) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6) or not low <= int(raw) <= high:
        raise BadPageRequest(f"'{name}' must be {allowed}.")
    return int(raw)


@bp.errorhandler(BadPageRequest)
def _bad_request(err: BadPageRequest) -> tuple[str | Response, int]:
    if request.accept_mimetypes.accept_html:
        return render_template("status_page/bad_request.html", message=str(err)), 400
    return jsonify({"error": str(err)}), 400


@bp.get("/")
def index() -> BaseResponse | tuple[str, int] | tuple[Response, int]:
    """The page. ``?days=N`` (7 to 366) sets the chart's range, ``?refresh=N`` the seconds
    between automatic refreshes (0: off)."""
    if not (_bearer_ok() or session_is_admin()):
        if request.accept_mimetypes.accept_html:
            return redirect(url_for("status_page.login_form"), code=303)
        resp = jsonify({"error": "missing or invalid admin bearer token"})
        resp.headers["WWW-Authenticate"] = 'Bearer realm="seat-agent-admin"'
        return resp, 401
    unknown = sorted(set(request.args) - {"days", "refresh"})
    if unknown:
        raise BadPageRequest(
            f"Unknown parameter(s) {', '.join(unknown)}: the page takes days and refresh."
        )
    days = _int_param("days", DEFAULT_DAYS, 7, MAX_DAYS, f"a number of days from 7 to {MAX_DAYS}")
    refresh = _int_param(
        "refresh",
        DEFAULT_REFRESH,
        0,
        MAX_REFRESH,
        f"a number of seconds from 1 to {MAX_REFRESH}, or 0 to stop refreshing",
    )
    agent = current_app.extensions["seat_agent"]
    lic = agent.settings.license
    now: datetime = agent.clock()
    report = seat_figures(agent)
    near_from = near_full_from(report["licensed"], lic.near_full_percent, lic.low_seats_threshold)
    history = seat_history(agent.store, agent.admin.terms, now, days, closed=_closed_days())
    page = render_template(
        "status_page/index.html",
        report=report,
        gauge=gauge(report, near_from),
        near_from=near_from,
        near_full_percent=lic.near_full_percent,
        low_seats_threshold=lic.low_seats_threshold,
        history=history,
        seats_chart=seats_chart(
            history.days, history.busiest, lic.near_full_percent, lic.low_seats_threshold
        ),
        waits_chart=waits_chart(history.days, with_refused=True),
        with_refused=True,
        days=days,
        day_ranges=sorted({*DAY_RANGES, days}),
        health=agent_health(agent),
        queue=[_queue_row(u) for u in queue_head(agent)],
        ledger=[_ledger_row(e) for e in recent_ledger(agent)],
        with_session=session.get("admin") is True,
        updated_at=now,
        updated=_when(now),
        refresh=refresh,
    )
    return page, 200
