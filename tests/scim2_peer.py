"""An independent downstream SCIM application for tests: stock ``scim2-server`` from PyPI.

scim2-server (python-scim) is an RFC-strict in-memory SCIM server nobody here wrote: it refuses
schemas and attributes it does not declare, answers PATCH with 204, and publishes the RFC 7643
User and Group with the Enterprise extension. One process serves the whole test session with
``--dynamic-tenants``; each test gets a tenant of its own (``/<tenant>/v2``), so tests never
see each other's users.

The agent reaches the tenant through a ``Gate``: a TCP relay on a port of its own. ``stop()``
shuts the gate (live connections cut, new ones reset at once) and ``start()`` opens it again,
so "the application is down" is tested without losing the in-memory data. The gate keeps its
port bound while shut, so no other process on the machine can take it meanwhile. Inspection
(``users()``, ``create()``...) talks to scim2-server directly and works while the gate is shut.
The gate counts the requests it relays by method and path.
"""

from __future__ import annotations

import collections
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

PEER_TOKEN = "scim2-server-token"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
_REQUEST_LINE = re.compile(rb"(GET|POST|PUT|PATCH|DELETE) (/[^ ?]*)[^ ]* HTTP/1\.[01]\r\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scim2_server_command() -> list[str]:
    """The console script the ``scim2-server`` package installs beside this interpreter."""
    beside = Path(sys.executable).with_name("scim2-server")
    found = str(beside) if beside.exists() else shutil.which("scim2-server")
    assert found, "scim2-server is a test dependency: pip install -e '.[test]'"
    return [found]


class Scim2ServerProcess:
    """``scim2-server --dynamic-tenants`` on a free loopback port."""

    def __init__(self, token: str = PEER_TOKEN):
        self.token = token
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        # Its request log goes to a file: a pipe nobody reads fills up after a few hundred
        # requests and the (single-threaded) server then blocks writing to it.
        self.log = tempfile.TemporaryFile()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *scim2_server_command(),
                "--hostname",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--bearer-token",
                self.token,
                "--dynamic-tenants",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                err = self.log.read().decode(errors="replace")
                raise RuntimeError(f"scim2-server exited: {err[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("scim2-server did not start within 30 s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        self.log.close()


class Gate:
    """A TCP relay from ``port`` to ``target_port`` that can be shut and opened again."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.requests: collections.Counter[tuple[str, str]] = collections.Counter()
        self._live: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.open = False
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def start(self) -> None:
        self.open = True

    def close(self) -> None:
        self.stop()
        self._listener.close()

    def stop(self) -> None:
        self.open = False
        with self._lock:
            live, self._live = self._live, set()
        for s in live:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if not self.open:  # reset at once: the client sees the application down
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._live.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(65536):
                if count:
                    for method, path in _REQUEST_LINE.findall(data):
                        with self._lock:
                            self.requests[(method.decode(), path.decode())] += 1
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self._lock:
                self._live.discard(src)
                self._live.discard(dst)
            src.close()


class Scim2Peer:
    """One tenant of the shared scim2-server, behind its own Gate. Offers the inspection
    methods of ``downstream.Downstream`` so a test can run against either."""

    kind = "scim2-server"

    def __init__(self, server: Scim2ServerProcess):
        self.server = server
        self.token = server.token
        self.tenant = "t" + uuid.uuid4().hex[:12]
        self.gate = Gate(server.port)
        self._http = requests.Session()
        self._http.headers["Authorization"] = f"Bearer {self.token}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.gate.port}/{self.tenant}/v2"

    @property
    def direct_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/{self.tenant}/v2"

    @property
    def running(self) -> bool:
        return self.gate.open

    def start(self) -> None:
        self.gate.start()

    def stop(self) -> None:
        self.gate.stop()

    def close(self) -> None:
        self.gate.close()
        self._http.close()

    def relayed(self, method: str, path: str) -> int:
        """How many ``method`` requests to ``/<tenant>/v2<path>`` the gate relayed."""
        return self.gate.requests[(method, f"/{self.tenant}/v2{path}")]

    # -- inspection, straight to scim2-server ------------------------------------------------

    def users(self) -> list[dict]:
        response = self._http.get(f"{self.direct_url}/Users", params={"count": 1000})
        assert response.status_code == 200, response.text
        return list(response.json().get("Resources") or [])

    def groups(self) -> list[dict]:
        response = self._http.get(f"{self.direct_url}/Groups", params={"count": 1000})
        assert response.status_code == 200, response.text
        return list(response.json().get("Resources") or [])

    def users_named(self, user_name: str) -> list[dict]:
        return [u for u in self.users() if u["userName"].lower() == user_name.lower()]

    def create(self, body: dict) -> dict:
        response = self._http.post(
            f"{self.direct_url}/Users", json={"schemas": [USER_SCHEMA], **body}
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    def replace(self, remote_id: str, **attrs: Any) -> None:
        response = self._http.patch(
            f"{self.direct_url}/Users/{remote_id}",
            json={
                "schemas": [PATCH_OP],
                "Operations": [{"op": "replace", "path": k, "value": v} for k, v in attrs.items()],
            },
        )
        assert response.status_code in (200, 204), response.text

    def delete(self, remote_id: str) -> None:
        response = self._http.delete(f"{self.direct_url}/Users/{remote_id}")
        assert response.status_code == 204, response.text


@contextmanager
def running_peer(server: Scim2ServerProcess) -> Iterator[Scim2Peer]:
    peer = Scim2Peer(server)
    peer.start()
    try:
        yield peer
    finally:
        peer.close()
