"""A real downstream SCIM server for tests: a second seat-agent on loopback.

It has its own SQLite file and tokens and plenty of seats, and speaks real SCIM (filters on
``externalId`` and ``userName``, 409 on a taken userName, 404 on a missing user). ``stop()``
takes it off the network (connections are refused) and ``start()`` brings it back on the same
port with the same data, to test delivery while the downstream is down. ``hold()`` makes one
request hang after the downstream has carried it out (the write is committed, the answer not
yet sent), so a test can kill the delivering process at exactly that moment.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from loopback import LoopbackServer
from werkzeug.serving import BaseWSGIServer

from agent.app import create_app
from agent.config import settings_from_mapping

DOWNSTREAM_TOKEN = "downstream-scim-token"


class Hold:
    """The ``nth`` request ``method path`` is carried out, then its answer waits for
    ``release`` (``reached`` is set when it is waiting)."""

    def __init__(self, method: str, path: str, nth: int):
        self.method = method
        self.path = path
        self.nth = nth
        self.seen = 0
        self.reached = threading.Event()
        self.release = threading.Event()
        self.lock = threading.Lock()

    def matches(self, environ: dict[str, Any]) -> bool:
        if environ["REQUEST_METHOD"] != self.method or environ["PATH_INFO"] != self.path:
            return False
        with self.lock:
            self.seen += 1
            return self.seen == self.nth


class Downstream(LoopbackServer):
    kind = "seat-agent"

    def __init__(self, directory: Path, token: str = DOWNSTREAM_TOKEN):
        self.token = token
        settings = settings_from_mapping(
            {
                "database": {"url": f"sqlite:///{directory}/downstream.db"},
                "auth": {"scim_token": token, "admin_token": token + "-admin"},
                "license": {"seats": 100_000},
            }
        )
        self.app = create_app(settings)
        self.port = 0
        self._hold: Hold | None = None
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/scim/v2"

    @property
    def running(self) -> bool:
        return self._server is not None

    def hold(self, method: str, path: str, nth: int = 1) -> Hold:
        """Make the ``nth`` ``method`` request to ``/scim/v2<path>`` hang after it was done."""
        self._hold = Hold(method, "/scim/v2" + path, nth)
        return self._hold

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        hold = self._hold
        if hold is None or not hold.matches(environ):
            return self.app(environ, start_response)
        answer: list[Any] = []
        body = b"".join(self.app(environ, lambda *a: answer.append(a)))  # the write is done
        hold.reached.set()
        hold.release.wait(timeout=60)
        start_response(*answer[0])
        return [body]

    def stop(self) -> None:
        if self._hold is not None:
            self._hold.release.set()
        super().stop()

    def close(self) -> None:
        self.stop()
        self.app.extensions["seat_agent"].store.dispose()

    # -- inspection (through the app itself: works while the server is stopped) ---------------

    def _get(self, path: str, **params: Any) -> dict:
        client = self.app.test_client()
        response = client.get(
            "/scim/v2" + path,
            query_string=params,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    def users(self) -> list[dict]:
        """Every user the downstream holds."""
        return self._get("/Users", count=1000)["Resources"]

    def groups(self) -> list[dict]:
        """Every group the downstream holds, with its members."""
        return self._get("/Groups", count=1000)["Resources"]

    def users_named(self, user_name: str) -> list[dict]:
        return [u for u in self.users() if u["userName"].lower() == user_name.lower()]

    def create(self, body: dict) -> dict:
        """Create a user directly downstream (as an admin of the application would)."""
        client = self.app.test_client()
        response = client.post(
            "/scim/v2/Users",
            json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], **body},
            headers={"Authorization": f"Bearer {self.token}"},
        )
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()

    def replace(self, remote_id: str, **attrs: Any) -> dict:
        """PATCH replace of top-level attributes, as an admin of the application would."""
        client = self.app.test_client()
        response = client.patch(
            f"/scim/v2/Users/{remote_id}",
            json={
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": k, "value": v} for k, v in attrs.items()],
            },
            headers={"Authorization": f"Bearer {self.token}"},
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    def delete(self, remote_id: str) -> None:
        client = self.app.test_client()
        response = client.delete(
            f"/scim/v2/Users/{remote_id}", headers={"Authorization": f"Bearer {self.token}"}
        )
        assert response.status_code == 204, response.get_data(as_text=True)


@contextmanager
def running_downstream(directory: Path, token: str = DOWNSTREAM_TOKEN) -> Iterator[Downstream]:
    """A started Downstream in ``directory``; stopped and closed on exit."""
    directory.mkdir(parents=True, exist_ok=True)
    server = Downstream(directory, token)
    server.start()
    try:
        yield server
    finally:
        server.close()
