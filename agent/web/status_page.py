"""The read-only admin status page (/admin/): seats, queue, open reductions, recent ledger.

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
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.wrappers import Response as BaseResponse

from agent.storage.records import LedgerEntry, UserRecord

bp = Blueprint(
    "status_page",
    __name__,
    url_prefix="/admin",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

SESSION_LIFETIME = timedelta(hours=12)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
GAUGE_WIDTH = 600
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
        entries: list[LedgerEntry] = tx.ledger(limit=RECENT_LEDGER, newest_first=True)
    return entries


def queue_head(agent: Any) -> list[UserRecord]:
    """The first ``QUEUE_SHOWN`` queued users, first come first served."""
    with agent.store.read() as tx:
        users: list[UserRecord] = tx.queued_users(limit=QUEUE_SHOWN)
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


def gauge(report: dict[str, Any]) -> dict[str, int]:
    """Pixel widths of the seat bar: consumed over licensed, clamped to the bar."""
    licensed, consumed = int(report["licensed"]), int(report["consumed"])
    used = 0 if licensed <= 0 else round(GAUGE_WIDTH * min(consumed, licensed) / licensed)
    return {"width": GAUGE_WIDTH, "consumed": used, "available": GAUGE_WIDTH - used}


@bp.get("/")
def index() -> BaseResponse | tuple[str, int] | tuple[Response, int]:
    if not (_bearer_ok() or session_is_admin()):
        if request.accept_mimetypes.accept_html:
            return redirect(url_for("status_page.login_form"), code=303)
        resp = jsonify({"error": "missing or invalid admin bearer token"})
        resp.headers["WWW-Authenticate"] = 'Bearer realm="seat-agent-admin"'
        return resp, 401
    agent = current_app.extensions["seat_agent"]
    report = agent.admin.report()
    page = render_template(
        "status_page/index.html",
        report=report,
        gauge=gauge(report),
        queue=[_queue_row(u) for u in queue_head(agent)],
        ledger=[_ledger_row(e) for e in recent_ledger(agent)],
        with_session=session.get("admin") is True,
    )
    return page, 200
