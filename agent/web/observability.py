"""Request ids, one log line per request, and SCIM request metrics.

Every request gets an id (``X-Request-Id``: the caller's if it is a sane token, else a new one),
echoed in the response and carried by every log record written while the request runs, so an
IdP's failed provisioning call can be found in the logs. The request line holds the method, the
path without its query string (SCIM filters name people), the status, the duration and the id;
never headers, tokens or bodies.

Request counters and the latency histogram are labelled with the route template
(``/scim/v2/Users/<user_id>``), never a raw path, so label cardinality stays bounded. Under
``seat-agent serve`` they live in prometheus-client's multiprocess files
(``PROMETHEUS_MULTIPROC_DIR``, set by ``agent.web.server`` before gunicorn forks) so that a scrape
sums every worker; in a single process (tests, a bare WSGI server) they live in a registry owned by
the app.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, current_app, g, has_request_context, request
from prometheus_client import CollectorRegistry, Counter, Histogram

REQUEST_ID_HEADER = "X-Request-Id"
SCIM_PREFIX = "/scim/v2"
EXTENSION_KEY = "seat_agent_observability"
# A request id we accept from a caller: a short token of URL-safe characters, nothing that could
# forge a log line or smuggle markup. Anything else is replaced by a fresh id.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+=/-]{0,127}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

access_log = logging.getLogger("agent.web.access")


def request_id_from(header: str | None) -> str:
    """The caller's request id if it is a sane token, else a new random one."""
    if header and _SANE_REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    """The id of the request being served by this thread, if any."""
    if not has_request_context():
        return None
    rid = g.get("request_id")
    return rid if isinstance(rid, str) else None


class RequestMetrics:
    """SCIM request counter and latency histogram, by method, route template and status."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.requests = Counter(
            "seat_agent_scim_requests",
            "SCIM requests served, by method, route template and HTTP status.",
            ["method", "endpoint", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "seat_agent_scim_request_duration_seconds",
            "Time to serve a SCIM request, by method and route template.",
            ["method", "endpoint"],
            registry=registry,
        )

    def observe(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(method, endpoint, str(status)).inc()
        self.latency.labels(method, endpoint).observe(seconds)


def request_metrics(app: Flask) -> RequestMetrics:
    metrics: RequestMetrics = app.extensions[EXTENSION_KEY]
    return metrics


def endpoint_template() -> str:
    """The matched route (``/scim/v2/Users/<user_id>``), or ``unmatched`` (404/405): never the
    raw path, whose ids would make one time series per user."""
    rule = request.url_rule
    return rule.rule if rule is not None else "unmatched"


def _printable(text: str, limit: int = 512) -> str:
    """A path fit for a plain log line: control characters escaped, length bounded."""
    text = text[:limit]
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _start_request() -> None:
    g.request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
    g.request_started = time.perf_counter()


def _finish_request(response: Response) -> Response:
    rid = current_request_id() or request_id_from(None)
    started = g.get("request_started")
    seconds = time.perf_counter() - started if isinstance(started, float) else 0.0
    response.headers[REQUEST_ID_HEADER] = rid
    method = request.method if request.method in _METHODS else "OTHER"
    path = _printable(request.path)
    status = response.status_code
    if request.path == SCIM_PREFIX or request.path.startswith(SCIM_PREFIX + "/"):
        request_metrics(current_app).observe(method, endpoint_template(), status, seconds)
    access_log.info(
        "%s %s %s %.1fms request_id=%s",
        method,
        path,
        status,
        seconds * 1000,
        rid,
        extra={
            "request_id": rid,
            "fields": {
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
            },
        },
    )
    return response


def init_app(app: Flask) -> None:
    """Give every request an id and a log line, and count SCIM requests.

    The id is assigned before any other ``before_request`` function (authentication, rate
    limiting) so that their refusals are logged and echoed with it too.
    """
    app.extensions[EXTENSION_KEY] = RequestMetrics(CollectorRegistry(auto_describe=True))
    app.before_request_funcs.setdefault(None, []).insert(0, _start_request)
    app.after_request(_finish_request)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message``, the request id of
    the request being served (if any), the record's ``fields`` and any exception text."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or current_request_id()
        if rid:
            out["request_id"] = rid
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update({k: v for k, v in fields.items() if k not in out})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, default=str)


PLAIN_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"


def logging_config(json_logs: bool) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` mapping for gunicorn's ``logconfig_dict``.

    Everything (gunicorn's own messages and the agent's) goes to stderr, which systemd sends to
    the journal; JSON lines when ``[server] json_logs = true``. gunicorn's access log is off: the
    request line above replaces it and carries the request id.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": PLAIN_FORMAT},
            "json": {"()": f"{__name__}.JsonFormatter"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "json" if json_logs else "plain",
                "stream": "ext://sys.stderr",
            },
        },
        "root": {"level": "INFO", "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
        },
    }
