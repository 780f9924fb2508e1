"""Rate limiting (token buckets) with 429 and Retry-After: per bearer token, and per client
address for failed authentication.

Buckets live in the worker process: with W gunicorn workers on H hosts a token (or an address)
may make up to W x H times the configured rate in total (docs/deployment.md). Keys are token
digests or addresses, never tokens.

Failed authentication is limited before any token is checked: once an address has spent its
``[server] auth_failures_per_minute`` budget of 401s, every request it sends to /scim, /admin or
/metrics is answered 429 until the budget refills, whatever token it carries. Letting a correct
token through would tell a guesser which guess was right, so the limit would not limit guessing.
"""

from __future__ import annotations

import ipaddress
import math
import os
import threading
import time
from collections.abc import Callable

from flask import Flask, Response, current_app, jsonify, request

from agent.scim.errors import ScimError
from agent.web.scim_response import error_response

FAILED_AUTH = "seat_agent_failed_auth"
# gunicorn trusts X-Forwarded-* from these addresses; so does the client address here.
DEFAULT_FORWARDED_ALLOW_IPS = "127.0.0.1,::1"
GUARDED_PREFIXES = ("/scim/v2", "/admin", "/metrics")
UNGUARDED_PREFIXES = ("/admin/static/",)


class RateLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def _level(self, key: str, now: float) -> float:
        tokens, last = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - last) * self.rate)

    def take(self, key: str) -> float:
        """Take one request; 0 when allowed, else the seconds until one is."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        with self._lock:
            tokens = self._level(key, now)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate

    def wait(self, key: str) -> float:
        """Seconds until ``key`` may take one, without taking: 0 when it may now."""
        if not self.enabled:
            return 0.0
        with self._lock:
            tokens = self._level(key, self.clock())
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


def _trusted(remote: str, allowed: str) -> bool:
    for entry in (e.strip() for e in allowed.split(",")):
        if entry == "*":
            return True
        try:
            if ipaddress.ip_address(remote) in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def client_address() -> str:
    """The address that sent the request: the peer, or, when the peer is a trusted proxy
    (``FORWARDED_ALLOW_IPS``, as gunicorn), the last hop it appended to X-Forwarded-For."""
    remote = request.remote_addr or ""
    forwarded = request.headers.get("X-Forwarded-For", "")
    if forwarded and remote:
        allowed = os.environ.get("FORWARDED_ALLOW_IPS", DEFAULT_FORWARDED_ALLOW_IPS)
        if _trusted(remote, allowed):
            last = forwarded.split(",")[-1].strip()
            if last:
                return last
    return remote


def _guarded(path: str) -> bool:
    if any(path.startswith(p) for p in UNGUARDED_PREFIXES):
        return False
    return any(path == p or path.startswith(p + "/") for p in GUARDED_PREFIXES)


def _too_many_failures(wait: float) -> Response:
    if request.path == "/scim/v2" or request.path.startswith("/scim/v2/"):
        resp = error_response(
            ScimError(429, "Too many failed authentications from this address; retry later")
        )
    else:
        resp = jsonify({"error": "too many failed authentications from this address; retry later"})
        resp.status_code = 429
    resp.headers["Retry-After"] = retry_after_header(wait)
    return resp


def init_app(app: Flask) -> None:
    """Limit failed authentication per client address (see the module docstring).

    The gate runs before the blueprints' token checks; a 401 from any of them spends one unit
    of the address's budget.
    """
    settings = app.extensions["seat_agent"].settings
    app.extensions[FAILED_AUTH] = RateLimiter(settings.server.auth_failures_per_minute)

    @app.before_request
    def _gate() -> Response | None:
        limiter: RateLimiter = current_app.extensions[FAILED_AUTH]
        if not limiter.enabled or not _guarded(request.path):
            return None
        wait = limiter.wait(client_address())
        return _too_many_failures(wait) if wait > 0 else None

    @app.after_request
    def _count(resp: Response) -> Response:
        if resp.status_code == 401:
            current_app.extensions[FAILED_AUTH].take(client_address())
        return resp
