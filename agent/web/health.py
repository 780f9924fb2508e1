"""Liveness and readiness probes."""

from __future__ import annotations

from alembic.script import ScriptDirectory
from alembic.util import CommandError
from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import Engine

from agent.storage import migrate

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """The process is up."""
    return jsonify(status="ok")


def schema_state(engine: Engine) -> tuple[str, str | None, str | None]:
    """("current" | "behind" | "ahead", database revision, this code's head).

    "ahead": the database is at a revision this code does not know, i.e. a newer release has
    migrated it (a rolling upgrade in progress, docs/deployment.md).
    """
    database = migrate.current_revision(engine)
    head = migrate.head_revision(engine)
    if database == head:
        return "current", database, head
    if database is None:
        return "behind", database, head
    try:
        known = ScriptDirectory.from_config(migrate.alembic_config(engine)).get_revision(database)
    except CommandError:
        known = None
    return ("behind" if known is not None else "ahead"), database, head


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """The database answers and its schema is at the newest migration this code knows."""
    store = current_app.extensions["seat_agent"].store
    try:
        state, database, head = schema_state(store.engine)
    except Exception as err:  # any database failure means not ready
        return jsonify(status="unavailable", error=type(err).__name__), 503
    if state == "current":
        return jsonify(status="ok")
    error = {
        "behind": "migrations not current",
        "ahead": "database schema is newer than this code; upgrade this host",
    }[state]
    return jsonify(status="unavailable", error=error, database=database, code=head), 503
