"""A real webhook receiver for tests: an HTTP server on 127.0.0.1 that verifies every request
with the ``standardwebhooks`` library (signature and 5-minute timestamp tolerance), drops a
``webhook-id`` it already has (recording whether the redelivered body was byte-identical), and
keeps the application's users from the user events, answering ``GET /count``.

``stop()`` takes it off the network (connections refused) and ``start()`` brings it back on the
same port with the same state. ``answer_next`` queues answers other than 2xx; ``lose_answers``
makes it carry out events and then answer 503 (an answer lost on the way back: the sender must
redeliver the same event).
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from loopback import LoopbackServer
from standardwebhooks import Webhook, WebhookVerificationError
from werkzeug.serving import BaseWSGIServer
from werkzeug.wrappers import Request, Response


def new_secret(size: int = 32) -> str:
    return "whsec_" + base64.b64encode(os.urandom(size)).decode()


@dataclass
class Attempt:
    """One verified POST as it arrived (every attempt, redeliveries included)."""

    webhook_id: str
    timestamp: str
    body: str
    status: int


@dataclass
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)


class WebhookReceiver(LoopbackServer):
    HOOK = "/hooks/seat-agent"
    COUNT = "/hooks/seat-agent/count"

    def __init__(self, secret: str):
        self.webhook = Webhook(secret)
        self.lock = threading.Lock()
        self.attempts: list[Attempt] = []
        self.bodies: dict[str, str] = {}  # webhook-id -> the body first accepted
        self.order: list[str] = []  # webhook-ids in the order first accepted
        self.changed_on_redelivery: list[str] = []  # ids redelivered with another body
        self.rejected: list[str] = []  # why requests failed verification
        self.users: dict[str, dict[str, Any]] = {}  # the application's users
        self.count_requests = 0
        self.queued: list[Answer] = []
        self.lose_answers = 0
        self.port = 0
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.HOOK}"

    @property
    def count_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.COUNT}"

    # -- server ----------------------------------------------------------------------------

    def answer_next(self, *answers: Answer) -> None:
        with self.lock:
            self.queued.extend(answers)

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        with self.lock:
            response = self._handle(request)
        return response(environ, start_response)

    def _handle(self, request: Request) -> Response:
        headers = dict(request.headers)
        if request.path == self.COUNT and request.method == "GET":
            try:
                self.webhook.verify(b"", headers, json_parse=False)
            except WebhookVerificationError as err:
                self.rejected.append(f"GET count: {err}")
                return Response("bad signature", 401)
            self.count_requests += 1
            return Response(json.dumps({"active": self.active()}), 200, mimetype="application/json")
        if request.path != self.HOOK or request.method != "POST":
            return Response("", 405)
        body = request.get_data(as_text=True)
        try:
            event = self.webhook.verify(body, headers)
        except WebhookVerificationError as err:
            self.rejected.append(f"POST: {err}")
            return Response("bad signature", 401)
        webhook_id = headers["Webhook-Id"]
        if self.queued:
            answer = self.queued.pop(0)
            self.attempts.append(
                Attempt(webhook_id, headers["Webhook-Timestamp"], body, answer.status)
            )
            return Response("not now", answer.status, headers=answer.headers)
        status = 204
        if self.lose_answers:
            self.lose_answers -= 1
            status = 503
        self.attempts.append(Attempt(webhook_id, headers["Webhook-Timestamp"], body, status))
        if webhook_id in self.bodies:  # a redelivery: already carried out
            if self.bodies[webhook_id] != body:
                self.changed_on_redelivery.append(webhook_id)
            return Response("", status)
        self.bodies[webhook_id] = body
        self.order.append(webhook_id)
        self._apply(event)
        return Response("", status)

    def _apply(self, event: dict[str, Any]) -> None:
        data = event["data"]
        if event["type"] == "user.deleted":
            self.users.pop(data["id"], None)
        elif event["type"].startswith("user."):
            self.users[data["id"]] = data

    # -- inspection ------------------------------------------------------------------------

    def active(self) -> int:
        return sum(1 for u in self.users.values() if u["active"])

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every event once, in the order first accepted."""
        out = [json.loads(self.bodies[i]) for i in self.order]
        return [e for e in out if kind is None or e["type"] == kind]

    def types_of(self, user_id: str) -> list[str]:
        """The event types about one user, in order."""
        return [
            e["type"]
            for e in self.events()
            if user_id in (e["data"].get("id"), e["data"].get("userId"))
        ]


@contextmanager
def running_receiver(secret: str) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(secret)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
