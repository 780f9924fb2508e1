"""The admin API (/admin, bearer admin_token, JSON): thin over agent.services.admin."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, session
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from agent.domain.license import MAX_LICENSES, DecreaseRefused, InvalidLicenseCount
from agent.scim.characters import describe, refusal
from agent.scim.cursor import CursorCodec, CursorRefused, Position, query_digest
from agent.scim.errors import ScimError
from agent.services.admin import DirectoryUser, LicenseChange, SeatAdmin
from agent.services.refusals import refusal_json
from agent.storage.records import LedgerEntry, UserRecord
from agent.web import json_body
from agent.web.auth import TokenSet, bearer_digest
from agent.web.db_errors import DETAIL as DATABASE_ERROR
from agent.web.db_errors import log_database_error
from agent.web.ratelimit import retry_after_header
from agent.web.status_page import session_is_admin

bp = Blueprint("admin", __name__, url_prefix="/admin")


class AdminError(Exception):
    def __init__(self, status: int, error: str, **extra: Any):
        super().__init__(error)
        self.status = status
        self.error = error
        self.extra = extra


def _admin() -> SeatAdmin:
    return current_app.extensions["seat_agent"].admin


def _error(status: int, error: str, **extra: Any) -> Response:
    resp = jsonify({"error": error, **extra})
    resp.status_code = status
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="seat-agent-admin"'
    return resp


@bp.errorhandler(AdminError)
def _admin_error(err: AdminError) -> Response:
    return _error(err.status, err.error, **err.extra)


@bp.errorhandler(ScimError)
def _service_error(err: ScimError) -> Response:
    """A refusal of the services the admin API shares with SCIM (an unknown user, a seat
    refused): the same status, as an admin JSON error."""
    return _error(err.status, err.detail)


@bp.errorhandler(HTTPException)
def _http_error(err: HTTPException) -> Response:
    return _error(err.code or 500, err.description or err.name)


@bp.errorhandler(OperationalError)
@bp.errorhandler(InterfaceError)
def _database_unavailable(_err: Exception) -> Response:
    resp = _error(503, "database temporarily unavailable; retry later")
    resp.headers["Retry-After"] = "5"
    return resp


@bp.errorhandler(DBAPIError)
def _database_error(err: DBAPIError) -> Response:
    """Any other database error: a 500 logged without request data (agent.web.db_errors)."""
    log_database_error(err)
    return _error(500, DATABASE_ERROR)


@bp.before_app_request
def _unrouted() -> Response | None:
    """A path under /admin that no route matches (or a method it does not allow) is answered
    with a JSON error too: blueprint error handlers never see unrouted requests, and the
    app-wide 404/405 handlers belong to the SCIM blueprint. Redirects (``/admin`` ->
    ``/admin/``, the status page) are left alone."""
    err = request.routing_exception
    if not isinstance(err, NotFound | MethodNotAllowed):
        return None
    if request.path != bp.url_prefix and not request.path.startswith(f"{bp.url_prefix}/"):
        return None
    resp = _http_error(err)
    if isinstance(err, MethodNotAllowed) and err.valid_methods:
        resp.headers["Allow"] = ", ".join(err.valid_methods)
    return resp


@bp.before_request
def _authenticate() -> Response | None:
    agent = current_app.extensions["seat_agent"]
    tokens: TokenSet = agent.admin_tokens
    authorization = request.headers.get("Authorization")
    if not tokens.accepts(authorization) and not session_is_admin():
        if session.get("admin") is True and not request.headers.get("X-Requested-With"):
            # A signed-in page's session, on a state-changing request without the header
            # that shows it came from the page's own script (status_page.session_is_admin).
            return _error(
                401,
                "a change from a signed-in browser session must carry the X-Requested-With"
                " header (the status page's buttons send it); or use the admin bearer token",
            )
        return _error(401, "missing or invalid admin bearer token")
    wait = agent.rate_limiter.take(bearer_digest(authorization) or "")
    if wait > 0:
        resp = _error(429, "too many requests for this token; retry later")
        resp.headers["Retry-After"] = retry_after_header(wait)
        return resp
    return None


@bp.before_request
def _refuse_unstorable_text() -> None:
    """Path ids and query parameters through the character check bodies get
    (agent.scim.characters): an id no database can hold is an unknown user (404), a query
    parameter holding such text a 400; never a 500 from the database."""
    for name, value in (request.view_args or {}).items():
        if isinstance(value, str) and refusal(value) is not None:
            kind = name.removesuffix("_id").removesuffix("_key")
            raise AdminError(404, f"{kind} {describe(value)} not found")
    for name, value in request.args.items(multi=True):
        reason = refusal(name) or refusal(value)
        if reason is not None:
            raise AdminError(
                400,
                f"query parameter '{describe(name)}' contains {reason}, which cannot be stored; "
                "remove it",
            )


def _json_object(allowed: set[str]) -> dict[str, Any]:
    """The body as a JSON object of ``allowed`` fields, through the same size, depth and
    character guards as SCIM bodies (agent.web.json_body). A body declared as something else
    than JSON is a 415, as on /scim (no Content-Type at all is read as JSON)."""
    ctype = json_body.refused_media_type()
    if ctype is not None:
        raise AdminError(415, f"unsupported content type {ctype}; send application/json")
    try:
        raw = json_body.read()
        body = json_body.parse(raw) if raw.strip() else None
    except json_body.BodyRefused as err:
        raise AdminError(err.status, err.detail) from None
    if not isinstance(body, dict):
        raise AdminError(400, "request body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise AdminError(400, f"unknown field(s): {', '.join(unknown)}")
    return body


def user_summary(u: UserRecord) -> dict[str, Any]:
    return {
        "id": u.id,
        "userName": u.user_name,
        "licenseState": u.seat.license_state,
        "appStatus": u.seat.app_status,
        "queuedAt": u.seat.queued_at.isoformat() if u.seat.queued_at else None,
        "queuePosition": u.queue_position,
    }


def user_seat(u: UserRecord, fallback_role: str | None) -> dict[str, Any]:
    """One user's seat state: what the seat-agent SCIM extension shows when ``[scim]
    seat_extension`` is on, plus whether the user is active and holds a seat."""
    return {
        **user_summary(u),
        "active": bool(u.resource.get("active", True)),
        "holdsSeat": u.seat.holds_seat,
        "fallbackRole": fallback_role if u.seat.on_fallback else None,
    }


def ledger_entry(e: LedgerEntry) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "at": e.at.isoformat(),
        "kind": e.kind,
        "cause": e.cause,
        "userId": e.user_id,
        "userName": e.user_name,
        "detail": e.detail,
        "seatsAfter": e.seats_after,
        "consumedAfter": e.consumed_after,
        "cost": str(e.cost) if e.cost is not None else None,
        "requestId": e.request,
    }


# The largest page of ledger entries one request returns.
MAX_LEDGER_PAGE = 10_000


def _only_params(*allowed: str) -> None:
    """An unknown query parameter is a 400, never silently ignored (a typo like ``?sinse=``
    would otherwise return something else than what was asked)."""
    unknown = sorted(set(request.args) - set(allowed))
    if unknown:
        accepted = f"accepted: {', '.join(allowed)}" if allowed else "none accepted"
        raise AdminError(400, f"unknown query parameter(s): {', '.join(unknown)} ({accepted})")


@bp.get("/seats")
def seats() -> Response:
    """Current seats; with ``?at=ISO`` the seats held and consumed at that past moment."""
    _only_params("at")
    if "at" in request.args:
        moment = _iso_param("at")
        found = _admin().seats_at(moment)
        if found is None:
            raise AdminError(404, "no ledger entry at or before that moment")
        return jsonify({"at": moment.isoformat(), "licensed": found[0], "consumed": found[1]})
    return jsonify(_admin().report())


def _iso_param(name: str) -> datetime:
    raw = request.args.get(name, "")
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        hint = (
            " (a '+' in a URL arrives as a space: write the offset as %2B, or end with Z)"
            if " " in raw.strip()
            else ""
        )
        raise AdminError(400, f"'{name}' must be an ISO 8601 date or time{hint}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def license_change(change: LicenseChange, consumed: int, available: int) -> dict[str, Any]:
    """The answer to a license change (admin API and ``seat-agent licenses set --json``)."""
    body: dict[str, Any] = {
        "seats": change.seats,
        "previous": change.previous,
        "consumed": consumed,
        "available": available,
        "change": change.change,
        "message": change.message,
        "promoted": [user_summary(u) for u in change.promoted],
    }
    if change.recorded:
        body["vendor_steps"] = change.vendor_steps
    return body


@bp.put("/licenses")
def set_licenses() -> Response:
    """Set the license count (0..MAX_LICENSES). 409 when below consumption or when the
    decrease mode does not allow it now; with ``decrease = "manual"`` a lower count records a
    change made at the vendor (``"change": "recorded"`` and ``vendor_steps``)."""
    _only_params()
    body = _json_object({"seats"})
    if "seats" not in body:
        raise AdminError(400, "'seats' is required")
    try:
        change = _admin().change_licenses(body["seats"])
    except InvalidLicenseCount as err:
        raise AdminError(400, str(err), max_seats=MAX_LICENSES) from None
    except DecreaseRefused as err:
        allowed = err.allowed_from.isoformat() if err.allowed_from else None
        raise AdminError(409, err.reason, allowed_from=allowed) from None
    report = _admin().report()
    return jsonify(license_change(change, report["consumed"], report["available"]))


@bp.get("/users/<user_key>")
def get_user_seat(user_key: str) -> Response:
    """One user's seat state (``user_seat``), by id, userName or externalId; 404 if unknown."""
    _only_params()
    record = _user_named(user_key)
    fallback_role = current_app.extensions["seat_agent"].settings.license.fallback_role
    return jsonify(user_seat(record, fallback_role))


@bp.post("/users/<user_key>/reevaluate")
def reevaluate_user(user_key: str) -> Response:
    """Decide a user's seat again (e.g. a fallback user once seats are free); at the limit the
    same outcome as any other path: 403 under refuse."""
    _only_params()
    user_id = _user_named(user_key).id
    record = current_app.extensions["seat_agent"].provisioning.reevaluate_user(user_id)
    return jsonify(user_summary(record))


def _user_named(key: str) -> UserRecord:
    """The user an id, a userName or an externalId names, else 404."""
    record = _admin().find_user(key)
    if record is None:
        raise AdminError(404, f"no user with id, userName or externalId '{key}'")
    return record


@bp.get("/queue")
def queue() -> Response:
    _only_params()
    return jsonify({"queued": [user_summary(u) for u in _admin().queue()]})


@bp.get("/ledger")
def ledger() -> Response:
    """Ledger entries in time order: the ``limit`` newest, or with ``since`` (a moment) and/or
    ``after`` (a ``seq``: page forward exactly by passing the last one) the first ``limit``
    from there on. ``limit`` is 1..MAX_LEDGER_PAGE (default 1000)."""
    _only_params("since", "after", "limit")
    since = _iso_param("since") if "since" in request.args else None
    after = None
    if "after" in request.args:
        raw_after = request.args["after"]
        if not (raw_after.isascii() and raw_after.isdigit() and len(raw_after) <= 18):
            raise AdminError(400, "'after' must be a ledger seq (a non-negative integer)")
        after = int(raw_after)
    raw = request.args.get("limit", "1000")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or not (
        1 <= int(raw) <= MAX_LEDGER_PAGE
    ):
        raise AdminError(400, f"'limit' must be an integer from 1 to {MAX_LEDGER_PAGE}")
    entries = _admin().ledger(since, int(raw), after)
    return jsonify({"entries": [ledger_entry(e) for e in entries]})


@bp.get("/billing")
def billing() -> Response:
    _only_params()
    return jsonify(_admin().billing_report())


# -- the user list and refused demand (issue 14) ---------------------------------------------

LICENSE_STATES = ("licensed", "queued", "free", "inactive")
DEFAULT_PAGE = 100
MAX_PAGE = 1000


def _cursor_param(name: str = "cursor") -> int:
    """A ``nextCursor`` this API gave (a position in the list), 0 when absent."""
    raw = request.args.get(name)
    if raw is None:
        return 0
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise AdminError(400, f"'{name}' must be a nextCursor value from a previous page")
    return int(raw)


def _count_param() -> int:
    raw = request.args.get("count", str(DEFAULT_PAGE))
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or not 1 <= int(raw) <= MAX_PAGE:
        raise AdminError(400, f"'count' must be an integer from 1 to {MAX_PAGE}")
    return int(raw)


def _email(resource: dict[str, Any]) -> str | None:
    emails = [e for e in resource.get("emails") or [] if isinstance(e, dict) and e.get("value")]
    primary = [e for e in emails if e.get("primary")]
    chosen = primary or emails
    return str(chosen[0]["value"]) if chosen else None


def _display_name(resource: dict[str, Any]) -> str | None:
    if resource.get("displayName"):
        return str(resource["displayName"])
    raw = resource.get("name")
    name: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if name.get("formatted"):
        return str(name["formatted"])
    parts = [str(name[k]) for k in ("givenName", "familyName") if name.get(k)]
    return " ".join(parts) or None


def directory_user(entry: DirectoryUser) -> dict[str, Any]:
    """One row of ``GET /admin/users`` and ``seat-agent users``."""
    u = entry.record
    return {
        "id": u.id,
        "userName": u.user_name,
        "displayName": _display_name(u.resource),
        "email": _email(u.resource),
        "externalId": u.resource.get("externalId"),
        "active": u.active,
        "licenseState": u.seat.license_state,
        "appStatus": u.seat.app_status,
        "holdsSeat": u.seat.holds_seat,
        "seatSince": entry.seat_since.isoformat() if entry.seat_since else None,
        "lastActivity": u.seat.last_active_at.isoformat() if u.seat.last_active_at else None,
    }


# What a refused cursor of the user list means to whoever pages it (the status page shows it).
_CURSOR_REFUSED = {
    "invalidCursor": "'cursor' must be the nextCursor of the previous page of this list, with the "
    "same state, q and count; load the list again from its first page",
    "expiredCursor": "this list was loaded more than an hour ago; load it again from its first "
    "page",
    "invalidCount": "'count' must stay what the first page of this list asked for; load the list "
    "again from its first page to change it",
}


@bp.get("/users")
def list_users() -> Response:
    """The user list: ``state`` (licensed, queued, free, inactive), ``q`` (part of a userName,
    name, email or externalId), ``count`` (1..1000, default 100), ``cursor`` (a
    ``nextCursor``). Like GitLab's and Google Workspace's admin user lists. Cursors are the
    signed keyset positions of the SCIM lists (agent.scim.cursor): one from another filter or
    count, altered, or older than its timeout is a 400 that says so."""
    _only_params("state", "q", "cursor", "count")
    state = request.args.get("state") or None
    if state is not None and state not in LICENSE_STATES:
        raise AdminError(400, f"'state' must be one of: {', '.join(LICENSE_STATES)}")
    text = request.args.get("q") or None
    if text is not None and len(text) > 255:
        raise AdminError(400, "'q' must be at most 255 characters")
    count = _count_param()
    query = query_digest(state, text)
    cursors: CursorCodec = current_app.extensions["seat_agent"].cursors
    after = 0
    if request.args.get("cursor"):  # absent or empty: the first page
        try:
            after = cursors.decode(request.args["cursor"], "admin users", count, query).seq
        except CursorRefused as err:
            raise AdminError(400, _CURSOR_REFUSED[err.scim_type]) from None
    found, last = _admin().users(state=state, text=text, after=after, limit=count)
    return jsonify(
        {
            "users": [directory_user(e) for e in found],
            "nextCursor": (
                cursors.encode("admin users", Position(last), count, query)
                if last is not None
                else None
            ),
        }
    )


BILLABLE_COLUMNS = (
    "id",
    "userName",
    "displayName",
    "email",
    "externalId",
    "active",
    "appStatus",
    "seatSince",
    "lastActivity",
)


def _cell(value: object) -> str:
    """A CSV cell a spreadsheet shows as text: a value starting with = + - @ (or a tab or
    carriage return) would run as a formula, so it gets a leading apostrophe (OWASP "CSV
    injection")."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def billable_csv(entries: Iterable[DirectoryUser]) -> Iterator[str]:
    """Users holding a seat as CSV, one line at a time (GitLab's "export billable users")."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(BILLABLE_COLUMNS)
    for entry in entries:
        row = directory_user(entry)
        writer.writerow([_cell(row[c]) for c in BILLABLE_COLUMNS])
        yield out.getvalue()
        out.seek(0)
        out.truncate()
    yield out.getvalue()


@bp.get("/billable-users.csv")
def billable_users_csv() -> Response:
    """Every user holding a seat, since when, and its last activity, as CSV."""
    _only_params()
    body = "".join(billable_csv(_admin().billable_users()))
    return Response(
        body,
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="billable-users.csv"'},
    )


@bp.get("/refusals")
def refusals() -> Response:
    """Refused demand in time order: every activation refused (403), queued or put on the
    fallback role, with the path and the pool at that moment. ``since`` (ISO 8601),
    ``cursor`` (a ``nextCursor``), ``count`` (1..1000, default 100)."""
    _only_params("since", "cursor", "count")
    since = _iso_param("since") if "since" in request.args else None
    after = _cursor_param()
    found, last = _admin().refusals(since, after, _count_param())
    return jsonify(
        {
            "refusals": [refusal_json(r) for r in found],
            "nextCursor": str(last) if last is not None else None,
        }
    )
