"""``GET /metrics``: Prometheus text exposition, bearer ``[auth] admin_token``.

Seat, outbox and reconcile gauges are read from the database at scrape time by a custom
collector, so every worker and every host gives the same, current answer (a gauge cached in one
gunicorn worker would be stale in the others). SCIM request counters come from
``agent.web.observability``: summed over all workers through prometheus-client's multiprocess
files when ``PROMETHEUS_MULTIPROC_DIR`` is set (``seat-agent serve`` sets it), else from the app's
own registry.

The endpoint wants the admin token rather than trusting loopback: behind a reverse proxy on the
same host every request comes from 127.0.0.1, so a loopback exemption would publish the seat
counts to anyone the proxy serves.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from datetime import datetime

from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from agent.bootstrap import Agent
from agent.services.outbox_notifier import DELETE_USER, EMAIL, PUSH_USER
from agent.services.reconcile import last_reconcile
from agent.storage import outbox, refusals
from agent.web.observability import request_metrics

bp = Blueprint("metrics", __name__)
log = logging.getLogger(__name__)

# Reported even when empty, so that an alert on depth has a series to compare.
OUTBOX_KINDS = (PUSH_USER, DELETE_USER, EMAIL)


class SeatCollector:
    """Seats licensed/consumed/available/queued, refused demand by outcome (a counter: the
    refusals table is append-only), outbox depth by kind and the last reconcile time, read
    from the database on every scrape (the same numbers as ``GET /admin/seats`` and
    ``seat-agent status``)."""

    def __init__(self, agent: Agent):
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        try:
            report = self.agent.admin.report()
            with self.agent.store.read() as tx:
                depth = outbox.depth(tx)
                last = last_reconcile(tx)
                unserved = refusals.totals(tx)
        except Exception as err:  # an unreachable database must not hide the request metrics
            log.warning("metrics: database unavailable (%s)", type(err).__name__)
            yield GaugeMetricFamily(
                "seat_agent_database_up", "1 if the database answered this scrape.", value=0
            )
            return
        yield GaugeMetricFamily(
            "seat_agent_database_up", "1 if the database answered this scrape.", value=1
        )
        for key, help_text in (
            ("licensed", "License seats held."),
            ("consumed", "Seats consumed by accounts."),
            ("available", "Seats held and not consumed."),
            ("queued", "Users waiting for a seat."),
        ):
            yield GaugeMetricFamily(f"seat_agent_seats_{key}", help_text, value=report[key])
        pending = GaugeMetricFamily(
            "seat_agent_outbox_depth", "Undelivered outbox messages, by kind.", labels=["kind"]
        )
        for kind in sorted({*OUTBOX_KINDS, *depth}):
            pending.add_metric([kind], depth.get(kind, 0))
        yield pending
        refused = CounterMetricFamily(
            "seat_agent_refused_demand",
            "Activations the seat pool could not serve with a seat, by outcome (refused: a 403 "
            "to the IdP; queued; fallback: given the fallback role).",
            labels=["outcome"],
        )
        for outcome, n in unserved.items():
            refused.add_metric([outcome], n)
        yield refused
        at = _reconcile_time(last)
        if at is not None:
            yield GaugeMetricFamily(
                "seat_agent_last_reconcile_timestamp_seconds",
                "Unix time of the last completed reconcile (absent: never).",
                value=at.timestamp(),
            )


def _reconcile_time(state: str | None) -> datetime | None:
    """The ``at`` of agent_state ``last_reconcile`` (JSON written by the reconcile job)."""
    if not state:
        return None
    try:
        at = json.loads(state).get("at")
        return datetime.fromisoformat(at) if isinstance(at, str) else None
    except (ValueError, AttributeError):
        return None


class _Scrape:
    """Several collectors exposed as one."""

    def __init__(self, *sources: Collector):
        self.sources = sources

    def collect(self) -> Iterable[Metric]:
        for source in self.sources:
            yield from source.collect()


def _request_collector() -> Collector:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path and os.path.isdir(path):
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=path)
        return registry
    return request_metrics(current_app).registry


@bp.get("/metrics")
def metrics() -> ResponseReturnValue:
    agent: Agent = current_app.extensions["seat_agent"]
    if not agent.admin_tokens.accepts(request.headers.get("Authorization")):
        resp = jsonify(error="missing or invalid admin bearer token")
        resp.status_code = 401
        resp.headers["WWW-Authenticate"] = 'Bearer realm="seat-agent-admin"'
        return resp
    body = generate_latest(_Scrape(SeatCollector(agent), _request_collector()))
    return Response(body, mimetype=None, headers={"Content-Type": CONTENT_TYPE_LATEST})
