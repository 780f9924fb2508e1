"""The Flask app factory: wiring only. Whatever a test swaps is an argument."""

from __future__ import annotations

from flask import Flask

from agent.bootstrap import Agent, Clock, build_agent, system_clock
from agent.config import Settings
from agent.storage.store import Store


def create_app(
    settings: Settings | None = None,
    *,
    store: Store | None = None,
    clock: Clock = system_clock,
    agent: Agent | None = None,
) -> Flask:
    settings = settings or Settings()
    agent = agent or build_agent(settings, store=store, clock=clock)
    app = Flask("seat-agent")
    app.config["MAX_CONTENT_LENGTH"] = settings.server.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["seat_agent"] = agent

    from agent.web import (
        admin,
        health,
        metrics,
        observability,
        ratelimit,
        reductions,
        scim,
        scim_response,
        status_page,
    )

    observability.init_app(app)
    ratelimit.init_app(app)
    app.after_request(scim_response.no_type_without_content)
    app.register_blueprint(scim.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(reductions.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(status_page.bp)
    app.register_blueprint(metrics.bp)
    return app
