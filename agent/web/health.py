"""Liveness and readiness probes."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """The process is up."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """The database answers and its schema is at the newest migration."""
    store = current_app.extensions["seat_agent"].store
    try:
        ready = store.is_ready()
    except Exception as err:  # any database failure means not ready
        return jsonify(status="unavailable", error=type(err).__name__), 503
    if not ready:
        return jsonify(status="unavailable", error="migrations not current"), 503
    return jsonify(status="ok")
