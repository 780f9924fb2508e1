"""A lean HTTP/1.1 keep-alive client for the benchmarks: the standard library's http.client,
one connection per thread, and the few parts of requests' interface the benchmarks use.

Why: the benchmarks measure latency at the client, on the machine that also runs the server
(and PostgreSQL). ``requests`` spends about 0.4 ms of Python per request building and parsing
around the socket calls (its session, adapters, cookie jar and urllib3's pool), on the same
two cores as the server; at a lookup's 1 to 2 ms that is a third of the figure and most of its
tail. ``bench/scim_load.py --http-client requests`` measures through requests instead, so
the two can be compared in one run.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import select
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

# What a failed exchange raises (requests' own exceptions come from the other client).
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (OSError, http.client.HTTPException)


class HTTPError(Exception):
    """raise_for_status on a 4xx/5xx response."""


class LeanResponse:
    def __init__(self, status: int, headers: http.client.HTTPMessage, content: bytes):
        self.status_code = status
        self.headers = headers
        self.content = content

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)

    def raise_for_status(self) -> None:
        if not self.ok:
            raise HTTPError(f"{self.status_code}: {self.text[:300]}")


class LeanSession:
    """One kept-alive connection to the host of the URLs it is given (one host only)."""

    def __init__(self, headers: dict[str, str]):
        self.headers = dict(headers)
        self._conn: http.client.HTTPConnection | None = None
        self._netloc: str | None = None

    def _connection(self, netloc: str, timeout: float) -> http.client.HTTPConnection:
        conn = self._conn
        if conn is not None and (netloc != self._netloc or _dropped(conn)):
            conn.close()
            conn = None
        if conn is None:
            conn = http.client.HTTPConnection(netloc, timeout=timeout)
            self._conn, self._netloc = conn, netloc
        return conn

    def request(
        self,
        method: str,
        url: str,
        timeout: float = 30,
        params: dict[str, Any] | None = None,
        json: Any = None,
    ) -> LeanResponse:
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        # What requests does to a URL given with spaces or quotes in it (requote_uri):
        # escape what may not appear in a request line, keep what is already escaped.
        target = quote(target, safe="!#$%&'()*+,/:;=?@[]~")
        if params:
            target += ("&" if parts.query else "?") + urlencode(params)
        body = None if json is None else jsonlib.dumps(json).encode()
        conn = self._connection(parts.netloc, timeout)
        try:
            conn.request(method, target, body=body, headers=self.headers)
            resp = conn.getresponse()
            content = resp.read()
        except TRANSPORT_ERRORS:
            conn.close()
            self._conn = None
            raise
        if resp.will_close:
            conn.close()
            self._conn = None
        return LeanResponse(resp.status, resp.headers, content)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """The server closed the kept-alive connection (readable while idle means EOF): what
    urllib3 checks before reusing one, so a request is never sent into a closed socket."""
    if conn.sock is None:
        return True
    readable, _, _ = select.select([conn.sock], [], [], 0)
    return bool(readable)
