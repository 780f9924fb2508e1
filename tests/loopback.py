"""A WSGI app served on 127.0.0.1 that a test can take off the network and bring back on the
same port (the stand-in applications: tests/downstream.py, webhook_receiver.py,
vendor_kintone.py)."""

from __future__ import annotations

import threading
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server


class OneRequestPerConnection(WSGIRequestHandler):
    # Without keep-alive a stopped server is really gone: no handler thread lingers on an
    # open connection that could still answer the next request.
    protocol_version = "HTTP/1.0"

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class LoopbackServer:
    """Mixin: ``start()`` serves ``self._wsgi`` on ``self.port`` (0: a free one, kept for the
    next start), ``stop()`` takes it off the network (connections refused)."""

    port: int
    _server: BaseWSGIServer | None
    _thread: threading.Thread | None

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        raise NotImplementedError

    def start(self) -> None:
        assert self._server is None, "already running"
        self._server = make_server(
            "127.0.0.1",
            self.port,
            self._wsgi,
            threaded=True,
            request_handler=OneRequestPerConnection,
        )
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        assert self._thread is not None
        self._thread.join(timeout=10)
        self._server = None
        self._thread = None
