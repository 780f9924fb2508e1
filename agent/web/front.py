"""A gunicorn worker that reads each request completely before a thread takes it.

gunicorn's gthread worker hands a connection to a pool thread as soon as its first bytes
arrive; the thread then reads the rest of the headers and the body with blocking calls. A
client that sends one header line a second holds that thread for as long as it likes, so
``workers x threads`` such clients (8 by default) stop the server answering anyone.

``BufferingWorker`` keeps gthread's process model (the master, its signals and reloads, the
thread pool, keep-alive) and moves the reading into the worker's event loop: the main thread
reads every connection without blocking until the whole request is buffered (RFC 9112 §6:
the headers, then a ``Content-Length`` body or a chunked body up to its last chunk and
trailers), and only then a pool thread parses and serves it from that buffer. A pool thread
never waits for a client's bytes; it only writes the response, with a send timeout.

Limits, each ending the connection:

- ``header_timeout``: seconds from the connection's first moment (or, on a kept-alive
  connection, from the next request's first byte) to the end of the headers; a request that
  had begun gets ``408 Request Timeout``.
- ``body_timeout``: seconds from the end of the headers to the end of the body (``408``).
- ``MAX_HEADER_BYTES`` of request line and headers (``431``).
- A body larger than ``max_body_bytes`` is not buffered: the request goes to the application
  with what has arrived, which answers ``413`` (agent.web.scim) without reading it, and the
  connection is closed after the answer.

Bytes the front cannot frame (two different ``Content-Length`` values, a ``Transfer-Encoding``
that does not end in chunked) go to gunicorn's parser as they are, which refuses them with 400
or 501 while reading the headers. A chunked body that breaks RFC 9112 §7.1 (a chunk size that
is not hexadecimal or a line too long, data longer than its size) is answered 400 by the front
itself, and another transfer coding before chunked (``gzip, chunked``) 501: gunicorn would
find the first only while the application reads the body, a 500, and would hand the second
over undecoded. The connection is then closed.
"""

from __future__ import annotations

import errno
import selectors
import socket
import time
from enum import Enum
from functools import partial
from typing import Any

from gunicorn import http
from gunicorn.http.errors import NoMoreData
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

from agent.web import early_errors

# Request line and header fields together; nginx's large_client_header_buffers is 4 x 8 KiB.
MAX_HEADER_BYTES = 64 * 1024
# A chunk-size line longer than this is not a chunk size (RFC 9112 §7.1).
MAX_CHUNK_LINE = 1024
RECV_BYTES = 64 * 1024
# How long a closing connection waits for the client to close its side (RFC 9112 §9.6).
LINGER_SECONDS = 2.0
LINGER_BYTES = 64 * 1024
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Progress(Enum):
    MORE = "more"  # the request is not complete yet
    COMPLETE = "complete"  # request bytes [0:end] are ready for the parser
    HEADERS_TOO_LARGE = "headers too large"
    BAD_CHUNKS = "bad chunks"  # a chunked body that breaks RFC 9112 §7.1: answered 400 here
    UNKNOWN_CODING = "unknown coding"  # a transfer coding besides chunked: answered 501 here


class PendingRequest:
    """The bytes of one request as they arrive, and where it ends (RFC 9112 §6.3).

    ``feed`` answers whether the request is complete. When it is, ``data[:end]`` is the
    request and ``data[end:]`` the start of the next one (a pipelining client);
    ``reusable`` says whether the connection can carry another request afterwards (not
    when the body was not buffered or could not be framed).
    """

    def __init__(self, max_body_bytes: int, data: bytes = b""):
        self.max_body_bytes = max_body_bytes
        self.data = bytearray(data)
        self.header_end = -1
        self.end = -1
        self.reusable = True
        self.expect_continue = False
        self._scanned = 0
        self._length = 0
        self._chunked = False
        self._unknown_coding = False
        self._chunk_pos = 0
        self._chunk_payload = 0
        self._in_trailers = False

    @property
    def started(self) -> bool:
        return bool(self.data)

    @property
    def headers_done(self) -> bool:
        return self.header_end >= 0

    @property
    def body_pending(self) -> bool:
        """The headers are in and announce a body that has not all arrived."""
        return self.headers_done and self.end < 0

    def feed(self, data: bytes) -> Progress:
        self.data += data
        if self.header_end < 0:
            found = self.data.find(b"\r\n\r\n", max(0, self._scanned - 3))
            if found < 0:
                self._scanned = len(self.data)
                if len(self.data) > MAX_HEADER_BYTES:
                    return Progress.HEADERS_TOO_LARGE
                return Progress.MORE
            self.header_end = found + 4
            if self.header_end > MAX_HEADER_BYTES:
                return Progress.HEADERS_TOO_LARGE
            self._read_framing(bytes(self.data[:found]))
            self._chunk_pos = self.header_end
        if self._unknown_coding:
            return Progress.UNKNOWN_CODING
        if self.end >= 0:
            return Progress.COMPLETE
        if self._chunked:
            return self._scan_chunks()
        if len(self.data) - self.header_end >= self._length:
            self.end = self.header_end + self._length
            return Progress.COMPLETE
        return Progress.MORE

    def _read_framing(self, head: bytes) -> None:
        """Content-Length, Transfer-Encoding and Expect of the header block."""
        lengths: list[bytes] = []
        codings: list[bytes] = []
        for line in head.split(b"\r\n")[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                continue  # gunicorn's parser refuses the line
            name = name.lower()
            value = value.strip()
            if name == b"content-length":
                lengths.append(value)
            elif name == b"transfer-encoding":
                codings.extend(c.strip().lower() for c in value.split(b","))
            elif name == b"expect" and value.lower() == b"100-continue":
                self.expect_continue = True
        if codings:
            if lengths or codings[-1] != b"chunked":
                self._unframable()
            elif codings != [b"chunked"]:
                self._unknown_coding = True  # gzip, chunked: the body would be read as sent
            else:
                self._chunked = True
        elif lengths:
            if len(set(lengths)) != 1 or not lengths[0].isdigit():
                self._unframable()
            elif int(lengths[0]) > self.max_body_bytes:
                self.end = self.header_end  # the application refuses it unread
                self.reusable = False
            else:
                self._length = int(lengths[0])

    def _unframable(self) -> None:
        """gunicorn's parser gets what has arrived, and refuses it."""
        self.end = len(self.data)
        self.reusable = False

    def _scan_chunks(self) -> Progress:
        """Walk the chunked body (RFC 9112 §7.1) from where the last call stopped."""
        data = self.data
        pos = self._chunk_pos
        while True:
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                if len(data) - pos > MAX_CHUNK_LINE and not self._in_trailers:
                    return Progress.BAD_CHUNKS
                break
            if self._in_trailers:
                if eol == pos:  # the empty line after the trailer fields
                    self.end = eol + 2
                    return Progress.COMPLETE
                pos = eol + 2
                continue
            size_text = bytes(data[pos:eol]).split(b";", 1)[0].strip()
            if not size_text or not all(c in b"0123456789abcdefABCDEF" for c in size_text):
                return Progress.BAD_CHUNKS
            size = int(size_text, 16)
            if size == 0:
                self._in_trailers = True
                pos = eol + 2
                continue
            chunk_end = eol + 2 + size + 2
            if len(data) < chunk_end:
                arrived = self._chunk_payload + len(data) - (eol + 2)
                if arrived > self.max_body_bytes:  # enough for the application's 413
                    self.end = len(data)
                    self.reusable = False
                    return Progress.COMPLETE
                break
            if data[chunk_end - 2 : chunk_end] != b"\r\n":  # the data is longer than its size
                return Progress.BAD_CHUNKS
            self._chunk_payload += size
            pos = chunk_end
            if self._chunk_payload > self.max_body_bytes:
                self.end = pos
                self.reusable = False
                return Progress.COMPLETE
        self._chunk_pos = pos
        return Progress.MORE


class _Captured:
    """Stands in for the socket while gunicorn's ``handle_error`` decides the status of a
    request it cannot parse (and logs it); its HTML page is kept here, not sent."""

    def __init__(self) -> None:
        self.data = b""

    def gettimeout(self) -> float:
        return 0.0  # gunicorn's write_nonblock then writes straight to sendall

    def sendall(self, data: bytes) -> None:
        self.data += data

    def status(self) -> tuple[int, str] | None:
        """The status code and reason of the captured answer, if there is one."""
        parts = self.data.split(b"\r\n", 1)[0].split(b" ", 2)
        if len(parts) < 3 or not parts[1].isdigit():
            return None
        return int(parts[1]), parts[2].decode("latin-1")


class BufferingWorker(ThreadWorker):  # type: ignore[misc]
    """gthread with a reading front; the limits are set by ``worker_class``."""

    header_timeout = 10.0
    body_timeout = 30.0
    send_timeout = 30.0
    max_body_bytes = 1_048_576

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.reading: dict[TConn, PendingRequest] = {}
        self.lingering: set[TConn] = set()

    # -- the event loop (main thread) -----------------------------------------------------------

    def accept(self, listener: socket.socket) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, client_sock, client_addr, listener.getsockname())
        self._await_request(conn, PendingRequest(self.max_body_bytes), self.header_timeout)

    def _await_request(self, conn: TConn, pending: PendingRequest, idle_timeout: float) -> None:
        """Read ``conn`` in the event loop until ``pending`` is a whole request."""
        if pending.started:
            progress = pending.feed(b"")
            if progress is not Progress.MORE:
                self._take(conn, pending, progress)
                return
        conn.sock.setblocking(False)
        conn.timeout = time.monotonic() + (
            self._limit(pending) if pending.started else idle_timeout
        )
        self.reading[conn] = pending
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))

    def _limit(self, pending: PendingRequest) -> float:
        return self.body_timeout if pending.headers_done else self.header_timeout

    def _on_readable(self, conn: TConn, _sock: Any) -> None:
        pending = self.reading[conn]
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._stop_reading(conn)
            self._close(conn)
            return
        first, had_headers = not pending.started, pending.headers_done
        progress = pending.feed(data)
        if progress is Progress.MORE:
            now = time.monotonic()
            if first and conn.initialized:
                # A kept-alive connection's next request: its header clock starts now.
                conn.timeout = now + self.header_timeout
            if pending.headers_done and not had_headers:
                conn.timeout = now + self.body_timeout
                if pending.expect_continue:
                    self._send_now(conn, CONTINUE)
            return
        self._stop_reading(conn)
        self._take(conn, pending, progress)

    def _take(self, conn: TConn, pending: PendingRequest, progress: Progress) -> None:
        if progress is Progress.HEADERS_TOO_LARGE:
            self._refuse(conn, pending, 431, "Request Header Fields Too Large")
            return
        if progress is Progress.BAD_CHUNKS:
            # gunicorn would only find it while the application reads the body (a 500).
            self._refuse(conn, pending, 400, "Bad Request", "a malformed chunked body")
            return
        if progress is Progress.UNKNOWN_CODING:
            self._refuse(conn, pending, 501, "Not Implemented", "a transfer coding besides chunked")
            return
        request = bytes(pending.data[: pending.end])
        conn.target = early_errors.request_target(request)
        conn.surplus = bytes(pending.data[pending.end :]) if pending.reusable else b""
        conn.reusable = pending.reusable
        conn.parser = http.get_parser(self.cfg, [request], conn.client)
        conn.initialized = True
        conn.data_ready = True
        self.enqueue_req(conn)

    def _stop_reading(self, conn: TConn) -> None:
        del self.reading[conn]
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    def _send_now(self, conn: TConn, data: bytes) -> None:
        """A few bytes on a non-blocking socket: they fit its send buffer, or are dropped."""
        try:
            conn.sock.send(data)
        except OSError:
            pass

    def _refuse(
        self, conn: TConn, pending: PendingRequest, status: int, reason: str, said: str = ""
    ) -> None:
        """Answer a request the front will not buffer (agent.web.early_errors), then close."""
        target = early_errors.request_target(pending.data)
        self._send_now(conn, self._early_answer(status, reason, target, said))
        self._linger(conn)

    def _early_answer(self, status: int, reason: str, target: str, said: str) -> bytes:
        limits = early_errors.Limits(
            line=self.cfg.limit_request_line,
            fields=self.cfg.limit_request_fields,
            field_bytes=self.cfg.limit_request_field_size,
            head_bytes=MAX_HEADER_BYTES,
        )
        detail = early_errors.detail_for(status, target, limits, said)
        return early_errors.response(status, reason, target, detail)

    def _linger(self, conn: TConn) -> None:
        """Close after the response: half-close, then let the client's remaining bytes drain
        for a moment so the kernel does not reset the connection over the unread answer
        (RFC 9112 §9.6), without blocking the loop as gunicorn's close_graceful would."""
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.timeout = time.monotonic() + LINGER_SECONDS
        conn.drained = 0
        self.lingering.add(conn)
        self.poller.register(
            conn.sock, selectors.EVENT_READ, partial(self._on_lingering_readable, conn)
        )

    def _on_lingering_readable(self, conn: TConn, _sock: Any) -> None:
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        conn.drained += len(data)
        if not data or conn.drained > LINGER_BYTES:
            self._end_linger(conn)

    def _end_linger(self, conn: TConn) -> None:
        self.lingering.discard(conn)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        self._close(conn)

    def _close(self, conn: TConn) -> None:
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """Every loop turn: end connections past their deadline. A stopping worker gives
        connections whose headers are not in ``STOP_KEEPALIVE_LINGER`` more seconds, as
        gthread does kept-alive ones; a body already arriving keeps its deadline (the master's
        graceful timeout bounds it)."""
        super().murder_pending()
        now = time.monotonic()
        for conn, pending in list(self.reading.items()):
            if not self.alive and not pending.headers_done:
                conn.timeout = min(conn.timeout, now + STOP_KEEPALIVE_LINGER)
            if conn.timeout > now:
                continue
            self._stop_reading(conn)
            if pending.started:
                self._refuse(conn, pending, 408, "Request Timeout")
            else:
                self._close(conn)
        for conn in [c for c in self.lingering if c.timeout <= now]:
            self._end_linger(conn)

    def finish_request(self, conn: TConn, fs: Any) -> None:
        """After a pool thread has answered (main thread): read the next request of a
        kept-alive connection in the loop, or close it."""
        try:
            keepalive = fs.result() if not fs.cancelled() else False
        except Exception:
            keepalive = False
        if keepalive and conn.reusable:
            pending = PendingRequest(self.max_body_bytes, conn.surplus)
            idle = self.cfg.keepalive if self.alive else STOP_KEEPALIVE_LINGER
            try:
                self._await_request(conn, pending, idle)
                return
            except (OSError, ValueError):
                pass
        self._linger(conn)

    # -- a pool thread --------------------------------------------------------------------------

    def handle(self, conn: TConn) -> bool:
        """Serve one buffered request: parse it, call the app, write the answer. Nothing
        here reads the socket; writes give up after ``send_timeout``."""
        req = None
        try:
            conn.sock.settimeout(self.send_timeout)
            req = next(conn.parser)
            if not req:
                return False
            req._expected_100_continue = False  # sent by the loop, or the body was refused
            return bool(self._keepalive_after(conn, self.handle_request(req, conn)))
        except NoMoreData as e:
            self.log.debug("Request ended early. %s", e)
        except StopIteration as e:
            self.log.debug("Closing connection. %s", e)
        except TimeoutError:
            self.log.info(
                "Client %s did not take the response in %.0f s", conn.client, self.send_timeout
            )
        except OSError as e:
            if e.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.exception("Socket error processing request.")
        except Exception as e:
            self._answer_error(conn, req, e)
        return False

    def _answer_error(self, conn: TConn, req: Any, exc: Exception) -> None:
        """gunicorn decides the status of what it could not parse or serve, and logs it; the
        answer is made in the shape of the door the request came to (early_errors)."""
        captured = _Captured()
        self.handle_error(req, captured, conn.client, exc)
        found = captured.status()
        if found is None:
            return
        status, reason = found
        answer = self._early_answer(status, reason, getattr(conn, "target", ""), str(exc))
        try:
            conn.sock.sendall(answer)
        except OSError:
            pass


def worker_class(
    header_timeout: float, body_timeout: float, max_body_bytes: int
) -> type[BufferingWorker]:
    """BufferingWorker with these limits (gunicorn takes a class as ``worker_class``)."""
    return type(
        "BufferingWorker",
        (BufferingWorker,),
        {
            "header_timeout": header_timeout,
            "body_timeout": body_timeout,
            "max_body_bytes": max_body_bytes,
            "__module__": __name__,
        },
    )
