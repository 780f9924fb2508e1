"""The reductions admin API (/admin/reductions, bearer admin_token, JSON): thin over
agent.services.reductions.

400 bad input or unknown fields, 404 unknown id, 409 an invalid transition, another open
reduction, or a plan that cannot be carried out (the plan is in the body).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

from agent.domain.license import MAX_LICENSES
from agent.services.reductions import (
    InvalidTransition,
    ReductionConflict,
    ReductionNotFound,
    Reductions,
)
from agent.web import admin as admin_web
from agent.web.admin import AdminError

EXTENSION = "seat_agent_reductions"

bp = Blueprint("reductions", __name__, url_prefix="/admin/reductions")
# The same bearer check as the rest of /admin.
bp.before_request(admin_web._authenticate)
# Ids and query parameters no database can hold: 404 / 400, as on the rest of /admin.
bp.before_request(admin_web._refuse_unstorable_text)


@bp.before_request
def _no_query_parameters() -> None:
    """None of these routes takes one: an unknown query parameter is a 400, as on the rest of
    /admin (README)."""
    admin_web._only_params()


def _reductions() -> Reductions:
    service = current_app.extensions.get(EXTENSION)
    if service is None:
        service = getattr(current_app.extensions["seat_agent"], "reductions", None)
    if service is None:
        raise AdminError(503, "reductions are not configured on this server")
    return service  # type: ignore[no-any-return]


@bp.errorhandler(AdminError)
def _admin_error(err: AdminError) -> Response:
    return admin_web._error(err.status, err.error, **err.extra)


@bp.errorhandler(HTTPException)
def _http_error(err: HTTPException) -> Response:
    return admin_web._error(err.code or 500, err.description or err.name)


# The database down or restarting: 503 with Retry-After, as on the rest of /admin.
bp.register_error_handler(OperationalError, admin_web._database_unavailable)
bp.register_error_handler(InterfaceError, admin_web._database_unavailable)
bp.register_error_handler(DBAPIError, admin_web._database_error)


@bp.errorhandler(ReductionNotFound)
def _not_found(err: ReductionNotFound) -> Response:
    return admin_web._error(404, str(err))


@bp.errorhandler(InvalidTransition)
def _invalid(err: InvalidTransition) -> Response:
    return admin_web._error(409, str(err))


@bp.errorhandler(ReductionConflict)
def _conflict(err: ReductionConflict) -> Response:
    extra: dict[str, Any] = {"plan": err.plan} if err.plan is not None else {}
    return admin_web._error(409, err.message, **extra)


def _body(allowed: set[str]) -> dict[str, Any]:
    if not request.get_data(cache=True):
        return {}
    return admin_web._json_object(allowed)


@bp.get("")
def list_reductions() -> Response:
    return jsonify({"reductions": [r.summary() for r in _reductions().list_all()]})


@bp.post("")
def create_reduction() -> Response:
    """``{"target": N}`` creates a plan (201); ``"dry_run": true`` only shows it (200)."""
    body = admin_web._json_object({"target", "dry_run"})
    target = body.get("target")
    if isinstance(target, bool) or not isinstance(target, int):
        raise AdminError(400, "'target' must be an integer")
    if target < 0:
        raise AdminError(400, "'target' must not be negative")
    if target > MAX_LICENSES:  # no license count can be that high (PUT /admin/licenses)
        raise AdminError(400, f"'target' must be at most {MAX_LICENSES:,}")
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise AdminError(400, "'dry_run' must be a boolean")
    service = _reductions()
    if dry_run:
        return jsonify({"dry_run": True, "plan": service.preview(target)})
    resp = jsonify(service.create(target).as_dict())
    resp.status_code = 201
    return resp


@bp.get("/<reduction_id>")
def get_reduction(reduction_id: str) -> Response:
    return jsonify(_reductions().get(reduction_id).as_dict())


@bp.post("/<reduction_id>/approve")
def approve(reduction_id: str) -> Response:
    """Approve; ``runs`` says when the scheduler carries it out (``next_run``, None when no
    scheduler runs now)."""
    from agent.jobs.scheduler import workflow_schedule

    _body(set())
    data = _reductions().approve(reduction_id).as_dict()
    data["runs"] = workflow_schedule(current_app.extensions["seat_agent"])
    return jsonify(data)


@bp.post("/<reduction_id>/cancel")
def cancel(reduction_id: str) -> Response:
    body = _body({"reason"})
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise AdminError(400, "'reason' must be a string")
    return jsonify(_reductions().cancel(reduction_id, reason).as_dict())
