"""A stand-in for Kintone's cybozu.com User API: a real HTTP server on 127.0.0.1.

It implements the endpoints the connector uses with the documented request and response
shapes, validation, status codes and error bodies (cybozu developer network, User API):

- common: JSON bodies, ``X-Cybozu-Authorization`` (base64 ``login:password``) or
  ``Authorization: Bearer <API token>``; array query parameters as ``codes[0]=...``
  (https://cybozu.dev/ja/common/docs/user-api/overview/user-api-overview/);
- ``GET /v1/users.json``: ``ids`` or ``codes`` (not both), ``size`` 1-100 (default 100),
  ``offset`` >= 0; ``{"users": [User, ...]}`` sorted by ``id`` (.../users/get-users);
- ``POST /v1/users.json``: ``users[]`` with ``code`` (required, <= 128, not blank),
  ``password`` (required, <= 64, not empty), ``name`` (required, <= 128, not blank),
  ``email`` (<= 256), ``valid`` (default true); at most 100; answers ``{}`` (.../add-users);
- ``PUT /v1/users.json``: the same fields, only ``code`` required, ``valid`` omitted means
  true; answers ``{}`` (.../update-users);
- ``DELETE /v1/users.json``: ``{"codes": [...]}``; answers ``{}`` (.../delete-users);
- ``PUT /v1/users/codes.json``: ``codes[].currentCode/newCode`` (.../update-user-codes);
- ``GET /v1/user/groups.json?code=``: ``{"groups": [Group, ...]}`` including ``everyone``;
  ``PUT`` with ``{"code", "groups"}`` replaces the list, dynamic groups refused
  (.../get-users-groups, .../update-users-groups);
- ``GET /v1/users/services.json``: ``codes`` or ``offset``/``size`` as get-users,
  ``{"users": [{"code", "services"}]}`` sorted by id; ``PUT`` with ``users[].code/services``
  (kintone, garoon, office, mailwise, secure_access) replaces the list
  (.../get-user-services, .../update-user-services). Which services add-users gives a new
  user is not documented: the stand-in gives none (the case where the agent must grant it).

Errors use the common body ``{"code", "id", "message", "errors": {param: {"messages": [..]}}}``:
``CB_VA01`` / 400 for invalid input, with ``users.code`` "already exists" or "not found"
(observed by openstandia/connector-kintone ``KintoneRESTClient.java``), and ``CB_WA01`` / 401
"Password authentication failed." (kintone/cli-kintone feature tests). Answers the vendor
gives only under load are injected with ``fail_next``: 429 beyond 100 concurrent requests per
domain (https://cybozu.dev/ja/kintone/tips/development/customize/columns/concurrent-connection-limit-reason),
503 and 500; their body uses the common shape with a made-up ``code`` (``CB_TEST``).

``stop()`` takes the server off the network and ``start()`` brings it back on the same port
with the same users; ``requests`` records every request so tests can assert exactly-once.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from loopback import LoopbackServer
from werkzeug.serving import BaseWSGIServer
from werkzeug.wrappers import Request, Response

LOGIN = "seat-admin"
PASSWORD = "kintone-password"
API_TOKEN = "cybozu-api-token"
USERS = "/v1/users.json"
SERVICES = "/v1/users/services.json"
SERVICE_CODES = {"kintone", "garoon", "office", "mailwise", "secure_access"}
DYNAMIC_GROUPS = {"everyone"}


@dataclass
class Injected:
    status: int
    retry_after: str | None
    times: int


@dataclass
class Seen:
    method: str
    path: str
    body: Any


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str, errors: dict | None = None):
        self.status, self.code, self.message, self.errors = status, code, message, errors


def invalid(param: str, message: str) -> Refused:
    return Refused(400, "CB_VA01", "Missing or invalid input.", {param: {"messages": [message]}})


@dataclass
class KintoneServer(LoopbackServer):
    groups: set[str] = field(default_factory=lambda: {"everyone", "editors", "viewers"})
    port: int = 0
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    memberships: dict[str, list[str]] = field(default_factory=dict)
    services: dict[str, list[str]] = field(default_factory=dict)
    auth_failure_status: int = 401  # 520 on older servers (kintone/cli-kintone feature tests)
    requests: list[Seen] = field(default_factory=list)
    # Called (under the server's lock) before a request is answered: a test makes something
    # happen in Kintone at that exact moment, e.g. another administrator adding the user.
    before: Callable[[Request], None] | None = None
    _next_id: int = 1
    _inject: list[Injected] = field(default_factory=list)
    _last_retry_after: str | None = None
    _server: BaseWSGIServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle ---------------------------------------------------------------------------

    # -- test controls and inspection ---------------------------------------------------------

    def fail_next(self, status: int, *, retry_after: str | None = None, times: int = 1) -> None:
        """The next ``times`` requests get ``status`` (and ``Retry-After``)."""
        self._inject.append(Injected(status, retry_after, times))

    def count(self, method: str, path: str = USERS) -> int:
        return sum(1 for r in self.requests if (r.method, r.path) == (method, path))

    def writes_for(self, code: str) -> Counter[str]:
        """How many add/update/delete requests named the login name ``code``."""
        seen: Counter[str] = Counter()
        for r in self.requests:
            if r.path != USERS or r.method == "GET" or not isinstance(r.body, dict):
                continue
            codes = r.body.get("codes") or [u.get("code") for u in r.body.get("users") or []]
            if code in codes:
                seen[r.method] += 1
        return seen

    def by_code(self, code: str) -> dict[str, Any] | None:
        return next((u for u in self.users.values() if u["code"] == code), None)

    def add(
        self, code: str, valid: bool = True, name: str | None = None, services=("kintone",)
    ) -> dict[str, Any]:
        """A user created in Kintone itself (by its administrator)."""
        with self._lock:
            user = self._insert({"code": code, "name": name or code, "valid": valid})
            self.services[code] = list(services)
            return user

    def application_users(self) -> set[str]:
        """Login names counted as Kintone application users: valid, with the kintone service."""
        return {
            u["code"]
            for u in self.users.values()
            if u["valid"] and "kintone" in self.services.get(u["code"], [])
        }

    # -- HTTP ----------------------------------------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        with self._lock:
            response = self._answer(request)
        return response(environ, start_response)

    def _answer(self, request: Request) -> Response:
        try:
            body = json.loads(request.get_data(as_text=True)) if request.content_length else None
        except ValueError:
            body = "(not JSON)"
        self.requests.append(Seen(request.method, request.path, body))
        if self.before is not None:
            self.before(request)
        try:
            self._injected()
            self._authenticate(request)
            if body == "(not JSON)":
                raise Refused(400, "CB_IJ01", "Invalid JSON string.")
            result = self._route(request, body)
        except Refused as err:
            payload: dict[str, Any] = {
                "code": err.code,
                "id": secrets.token_urlsafe(15),
                "message": err.message,
            }
            if err.errors:
                payload["errors"] = err.errors
            response = _json(payload, err.status)
            if err.status in (429, 503) and self._last_retry_after is not None:
                response.headers["Retry-After"] = self._last_retry_after
            return response
        return _json(result, 200)

    def _injected(self) -> None:
        if not self._inject:
            return
        first = self._inject[0]
        first.times -= 1
        if first.times <= 0:
            self._inject.pop(0)
        self._last_retry_after = first.retry_after
        raise Refused(first.status, "CB_TEST", f"injected HTTP {first.status}")

    def _authenticate(self, request: Request) -> None:
        """Password authentication or an API token (user-api-overview); else CB_WA01."""
        pair = request.headers.get("X-Cybozu-Authorization")
        if pair is not None:
            try:
                login, _, password = base64.b64decode(pair).decode().partition(":")
            except ValueError:
                login, password = "", ""
            if (login, password) == (LOGIN, PASSWORD):
                return
        elif request.headers.get("Authorization") == f"Bearer {API_TOKEN}":
            return
        raise Refused(self.auth_failure_status, "CB_WA01", "Password authentication failed.")

    def _route(self, request: Request, body: Any) -> dict[str, Any]:
        route = (request.method, request.path)
        if route == ("GET", USERS):
            return self._get_users(request.args)
        if route == ("POST", USERS):
            return self._add_users(body)
        if route == ("PUT", USERS):
            return self._update_users(body)
        if route == ("DELETE", USERS):
            return self._delete_users(body)
        if route == ("PUT", "/v1/users/codes.json"):
            return self._rename(body)
        if route == ("GET", "/v1/user/groups.json"):
            return self._get_groups(request.args)
        if route == ("PUT", "/v1/user/groups.json"):
            return self._put_groups(body)
        if route == ("GET", SERVICES):
            return self._get_services(request.args)
        if route == ("PUT", SERVICES):
            return self._put_services(body)
        raise Refused(404, "CB_NO01", "The API does not exist.")

    # -- users -----------------------------------------------------------------------------

    def _get_users(self, args: Any) -> dict[str, Any]:
        ids = _array(args, "ids")
        codes = _array(args, "codes")
        if ids and codes:
            raise invalid("ids", "ids and codes cannot be specified together.")
        size = _number(args, "size", 100, 1, 100)
        offset = _number(args, "offset", 0, 0, None)
        found = [self.users[k] for k in sorted(self.users)]
        if ids:
            found = [u for u in found if u["id"] in ids]
        elif codes:
            found = [u for u in found if u["code"] in codes]
        return {"users": [dict(u) for u in found[offset : offset + size]]}

    def _entries(self, body: Any) -> list[dict[str, Any]]:
        users = body.get("users") if isinstance(body, dict) else None
        if not isinstance(users, list) or not users:
            raise invalid("users", "Required field.")
        if len(users) > 100:
            raise invalid("users", "Up to 100 users can be specified.")
        return users

    def _add_users(self, body: Any) -> dict[str, Any]:
        entries = self._entries(body)
        for entry in entries:
            _check_user(entry, adding=True)
            if self.by_code(entry["code"]) is not None:
                raise invalid("users.code", f"The user ({entry['code']}) already exists.")
        for entry in entries:
            self._insert(entry)
        return {}

    def _insert(self, entry: dict[str, Any]) -> dict[str, Any]:
        user = {
            "id": str(self._next_id),
            "code": entry["code"],
            "ctime": "2026-11-02T09:00:00Z",
            "mtime": "2026-11-02T09:00:00Z",
            "valid": entry.get("valid", True),
            "name": entry["name"],
            "email": entry.get("email", ""),
        }
        self.users[self._next_id] = user
        self.memberships[user["code"]] = ["everyone"]
        self.services[user["code"]] = []
        self._next_id += 1
        return user

    def _update_users(self, body: Any) -> dict[str, Any]:
        entries = self._entries(body)
        for entry in entries:
            _check_user(entry, adding=False)
            if self.by_code(entry["code"]) is None:
                raise invalid("users.code", f"The user ({entry['code']}) is not found.")
        for entry in entries:
            user = self.by_code(entry["code"])
            assert user is not None
            user["valid"] = entry.get("valid", True)  # omitted: true (update-users)
            for key in ("name", "email"):
                if key in entry:
                    user[key] = entry[key]
        return {}

    def _delete_users(self, body: Any) -> dict[str, Any]:
        codes = body.get("codes") if isinstance(body, dict) else None
        if not isinstance(codes, list) or not codes:
            raise invalid("codes", "Required field.")
        for code in codes:
            if self.by_code(code) is None:
                raise invalid("users.code", f"The user ({code}) is not found.")
        for code in codes:
            user = self.by_code(code)
            assert user is not None
            del self.users[int(user["id"])]
            self.memberships.pop(code, None)
            self.services.pop(code, None)
        return {}

    def _rename(self, body: Any) -> dict[str, Any]:
        pairs = body.get("codes") if isinstance(body, dict) else None
        if not isinstance(pairs, list) or not pairs:
            raise invalid("codes", "Required field.")
        for pair in pairs:
            new = pair.get("newCode")
            if not isinstance(new, str) or not new.strip() or len(new) > 128:
                raise invalid("codes.newCode", "Enter 1 to 128 characters.")
            user = self.by_code(pair.get("currentCode"))
            if user is None:
                raise invalid("users.code", "The user is not found.")
            self.memberships[new] = self.memberships.pop(user["code"], ["everyone"])
            self.services[new] = self.services.pop(user["code"], [])
            user["code"] = new
        return {}

    # -- services ------------------------------------------------------------------------------

    def _get_services(self, args: Any) -> dict[str, Any]:
        codes = _array(args, "codes")
        size = _number(args, "size", 100, 1, 100)
        offset = _number(args, "offset", 0, 0, None)
        found = [self.users[k] for k in sorted(self.users)]
        if codes:
            found = [u for u in found if u["code"] in codes]
        return {
            "users": [
                {"code": u["code"], "services": list(self.services.get(u["code"], []))}
                for u in found[offset : offset + size]
            ]
        }

    def _put_services(self, body: Any) -> dict[str, Any]:
        entries = self._entries(body)
        for entry in entries:
            code = entry.get("code") if isinstance(entry, dict) else None
            if not isinstance(code, str) or self.by_code(code) is None:
                raise invalid("users.code", f"The user ({code}) is not found.")
            services = entry.get("services")
            if not isinstance(services, list):
                raise invalid("users.services", "Required field.")
            for service in services:
                if service not in SERVICE_CODES:
                    raise invalid("users.services", f"The service ({service}) is not valid.")
        for entry in entries:
            self.services[entry["code"]] = list(entry["services"])
        return {}

    # -- groups ------------------------------------------------------------------------------

    def _get_groups(self, args: Any) -> dict[str, Any]:
        code = args.get("code")
        if not code:
            raise invalid("code", "Required field.")
        if self.by_code(code) is None:
            raise invalid("users.code", f"The user ({code}) is not found.")
        return {
            "groups": [
                {"id": str(i), "code": g, "name": g.title(), "description": ""}
                for i, g in enumerate(self.memberships.get(code, []), start=1)
            ]
        }

    def _put_groups(self, body: Any) -> dict[str, Any]:
        code = body.get("code") if isinstance(body, dict) else None
        groups = body.get("groups") if isinstance(body, dict) else None
        if not isinstance(code, str) or self.by_code(code) is None:
            raise invalid("code", "The user is not found.")
        if not isinstance(groups, list):
            raise invalid("groups", "Required field.")
        for g in groups:
            if g in DYNAMIC_GROUPS:
                raise invalid("groups", f"A dynamic group ({g}) cannot be specified.")
            if g not in self.groups:
                raise invalid("groups", f"The group ({g}) is not found.")
        self.memberships[code] = ["everyone", *groups]
        return {}


def _check_user(entry: Any, *, adding: bool) -> None:
    """The documented field rules of add-users / update-users."""
    if not isinstance(entry, dict):
        raise invalid("users", "Enter an object.")
    code = entry.get("code")
    if not isinstance(code, str) or not code.strip() or len(code) > 128:
        raise invalid("users.code", "Enter 1 to 128 characters (not only spaces).")
    if adding or "password" in entry:
        password = entry.get("password")
        if not isinstance(password, str) or not password or len(password) > 64:
            raise invalid("users.password", "Enter 1 to 64 characters.")
    if adding or "name" in entry:
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 128:
            raise invalid("users.name", "Enter 1 to 128 characters (not only spaces).")
    if "email" in entry and (not isinstance(entry["email"], str) or len(entry["email"]) > 256):
        raise invalid("users.email", "Enter up to 256 characters.")
    if "valid" in entry and not isinstance(entry["valid"], bool):
        raise invalid("users.valid", "Enter true or false.")


def _array(args: Any, name: str) -> list[str]:
    """``name[0]=a&name[1]=b`` (user-api-overview: arrays element by element)."""
    values = [(k, v) for k, v in args.items(multi=True) if k.startswith(f"{name}[")]
    return [v for _, v in sorted(values)]


def _number(args: Any, name: str, default: int, low: int, high: int | None) -> int:
    raw = args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid(name, "Enter a number.") from None
    if value < low or (high is not None and value > high):
        raise invalid(name, f"Enter a number from {low}" + (f" to {high}." if high else "."))
    return value


def _json(payload: Any, status: int) -> Response:
    return Response(json.dumps(payload), status=status, content_type="application/json")


@contextmanager
def running_kintone() -> Iterator[KintoneServer]:
    server = KintoneServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
