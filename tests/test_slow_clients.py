"""Slow clients against a real `seat-agent serve`: they must not starve the server (issue 12,
item 5), and the buffering front (agent/web/front.py) must serve every request shape gunicorn
served before: keep-alive, pipelining, chunked bodies, Expect: 100-continue, oversized bodies.

No timing assertions: the client timeouts below are generous liveness bounds.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
import requests
from conftest import SCIM_TOKEN, LiveServer, free_port, write_config

from agent.web.front import MAX_HEADER_BYTES, PendingRequest, Progress

SLOW_SOCKETS = 50
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
AUTH = {"Authorization": f"Bearer {SCIM_TOKEN}"}


def start_server(tmp_path: Path, *server_lines: str) -> LiveServer:
    """`seat-agent serve` with 2 workers; ``server_lines`` go into its [server] section."""
    port = free_port()
    config = tmp_path / "server.toml"
    write_config(config, f"sqlite:///{tmp_path}/slow.db", port, workers=2)
    text = config.read_text().replace(
        "[server]\n", "[server]\n" + "".join(f"{line}\n" for line in server_lines)
    )
    config.write_text(text)
    return LiveServer(config, port, tmp_path / "server.log")


@pytest.fixture
def server(tmp_path: Path):
    live = start_server(tmp_path)
    yield live
    live.stop()


class SlowHeaderClients:
    """Sockets that each send one more header line a second and never end their headers."""

    def __init__(self, port: int, count: int):
        self.socks: list[socket.socket] = []
        self.closed_by_server: set[int] = set()
        self.answers: dict[int, bytes] = {}
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /scim/v2/Users HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            s.setblocking(False)
            self.socks.append(s)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _trickle(self) -> None:
        line = 0
        while not self.stop.wait(1.0):
            line += 1
            for i, s in enumerate(self.socks):
                if i in self.closed_by_server:
                    continue
                try:
                    answer = s.recv(4096)
                except BlockingIOError:
                    answer = None
                except OSError:
                    answer = b""
                if answer is not None:  # an answer, or end of stream: the server gave up
                    self.answers[i] = answer
                    self.closed_by_server.add(i)
                    continue
                try:
                    s.send(f"X-Slow-{line}: {line}\r\n".encode())
                except OSError:
                    self.closed_by_server.add(i)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for s in self.socks:
            s.close()


def test_slow_header_clients_do_not_starve_normal_requests(server: LiveServer) -> None:
    created = requests.post(
        server.url + "/scim/v2/Users",
        json={"schemas": [USER], "userName": "normal@example.com"},
        headers=AUTH,
        timeout=10,
    )
    assert created.status_code == 201, created.text
    slow = SlowHeaderClients(int(server.url.rsplit(":", 1)[1]), SLOW_SOCKETS)
    try:
        time.sleep(2)  # every slow socket has been accepted and has sent a line or two
        for _ in range(20):
            r = requests.get(
                server.url + "/scim/v2/Users",
                params={"filter": 'userName eq "normal@example.com"'},
                headers=AUTH,
                timeout=10,
            )
            assert r.status_code == 200
            assert r.json()["totalResults"] == 1
        deadline = time.monotonic() + 60
        while len(slow.closed_by_server) < SLOW_SOCKETS and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(slow.closed_by_server) == SLOW_SOCKETS, "the server kept slow sockets open"
        assert {a.split(b"\r\n", 1)[0] for a in slow.answers.values()} <= {
            b"HTTP/1.1 408 Request Timeout",
            b"",
        }
    finally:
        slow.close()
    assert requests.get(server.url + "/healthz", timeout=10).status_code == 200


def _lookups_answered(server: LiveServer, count: int) -> None:
    for _ in range(count):
        r = requests.get(server.url + "/scim/v2/Users", headers=AUTH, timeout=10)
        assert r.status_code == 200


def test_slow_bodies_get_408_after_body_timeout(tmp_path: Path) -> None:
    server = start_server(tmp_path, "body_timeout = 2")
    port = int(server.url.rsplit(":", 1)[1])
    socks = []
    try:
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(_request("POST", "/scim/v2/Users", extra="Content-Length: 1000\r\n"))
            socks.append(s)
        _lookups_answered(server, 10)
        answers = []
        for s in socks:  # each sends a byte a second until the server answers and closes
            s.settimeout(1.0)
            answer = b""
            for _ in range(60):
                try:
                    answer = s.recv(4096)
                    break
                except TimeoutError:
                    s.sendall(b"x")
            answers.append(answer.split(b"\r\n", 1)[0])
        assert set(answers) == {b"HTTP/1.1 408 Request Timeout"}
        _lookups_answered(server, 3)
    finally:
        for s in socks:
            s.close()
        server.stop()


def test_stop_with_slow_sockets_open_exits_cleanly(tmp_path: Path) -> None:
    """SIGTERM (systemctl stop) while slow clients are connected: the workers close what has
    not sent its headers and the master exits 0, well inside the unit's TimeoutStopSec."""
    server = start_server(tmp_path)
    slow = SlowHeaderClients(int(server.url.rsplit(":", 1)[1]), 20)
    try:
        time.sleep(1.5)
        server.proc.terminate()
        assert server.proc.wait(timeout=40) == 0
    finally:
        slow.close()
        server.stop()


def _exchange(port: int, data: bytes, responses: int = 1) -> list[tuple[bytes, bytes]]:
    """Send raw bytes; read ``responses`` HTTP responses (status line, body) off the socket."""
    out = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        f = s.makefile("rb")
        for _ in range(responses):
            status = f.readline().rstrip(b"\r\n")
            length = 0
            while (line := f.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            out.append((status, f.read(length)))
    return out


def _request(method: str, path: str, body: bytes = b"", extra: str = "") -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {SCIM_TOKEN}\r\n"
        f"Content-Type: application/scim+json\r\n{extra}"
    )
    if body and "Transfer-Encoding" not in extra:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def test_pipelined_requests_on_one_connection_are_all_answered(server: LiveServer) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    body = json.dumps({"schemas": [USER], "userName": "piped@example.com"}).encode()
    data = (
        _request("POST", "/scim/v2/Users", body)
        + _request("GET", "/scim/v2/Users?filter=userName%20eq%20%22piped@example.com%22")
        + _request("GET", "/healthz")
    )
    answers = _exchange(port, data, responses=3)
    assert [a[0] for a in answers] == [
        b"HTTP/1.1 201 CREATED",
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 200 OK",
    ]
    assert json.loads(answers[1][1])["totalResults"] == 1


def test_chunked_body_and_expect_continue_are_served(server: LiveServer) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    body = json.dumps({"schemas": [USER], "userName": "chunked@example.com"}).encode()
    chunked = b"".join(
        f"{len(part):x};ext=1\r\n".encode() + part + b"\r\n" for part in (body[:10], body[10:])
    )
    chunked += b"0\r\nX-Trailer: 1\r\n\r\n"
    [(status, _)] = _exchange(
        port, _request("POST", "/scim/v2/Users", chunked, "Transfer-Encoding: chunked\r\n")
    )
    assert status == b"HTTP/1.1 201 CREATED"

    # Expect: 100-continue: the body is sent only after the interim answer.
    body = json.dumps({"schemas": [USER], "userName": "expect@example.com"}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(_request("POST", "/scim/v2/Users", extra="Expect: 100-continue\r\n")[:-2])
        s.sendall(f"Content-Length: {len(body)}\r\n\r\n".encode())
        f = s.makefile("rb")
        assert f.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert f.readline() == b"\r\n"
        s.sendall(body)
        assert f.readline().startswith(b"HTTP/1.1 201")


def test_oversized_body_is_413_without_waiting_for_it(server: LiveServer) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        # Announces 10 MB and sends none of it: the answer must not wait for the body.
        s.sendall(_request("POST", "/scim/v2/Users", extra="Content-Length: 10000000\r\n") + b'{"a')
        answer = s.makefile("rb").readline()
    assert answer.startswith(b"HTTP/1.1 413")


def test_header_block_over_the_limit_is_431(server: LiveServer) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    big = "".join(f"X-Filler-{i}: {'a' * 1000}\r\n" for i in range(MAX_HEADER_BYTES // 1000 + 2))
    [(status, _)] = _exchange(port, _request("GET", "/healthz", extra=big))
    assert status == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert requests.get(server.url + "/healthz", timeout=10).status_code == 200


def _answer(port: int, data: bytes) -> tuple[int, str, bytes]:
    """Send raw bytes; the status code, Content-Type and body of the one answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        f = s.makefile("rb")
        status = int(f.readline().split(b" ")[1])
        headers = {}
        while (line := f.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers.get("content-type", ""), f.read(int(headers["content-length"]))


_SCIM_ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/scim/v2/Users?filter=", "scim"),
        ("/scim/v2/Groups?filter=", "scim"),
        ("/admin/users?cursor=", "admin"),
        ("/healthz?x=", "text"),
    ],
)
def test_refused_before_the_app_answers_in_the_shape_of_its_door(
    server: LiveServer, path: str, kind: str
) -> None:
    """A request line over gunicorn's limit (414), a header block over the front's (431) and
    bytes that are not HTTP/1.1 (400) never reach the app: still a SCIM error under /scim,
    JSON under /admin (what every other refusal there is), plain text elsewhere."""
    port = int(server.url.rsplit(":", 1)[1])
    door = path.split("?")[0]
    big = "".join(f"X-Filler-{i}: {'a' * 1000}\r\n" for i in range(MAX_HEADER_BYTES // 1000 + 2))
    cases = [
        (414, _request("GET", path + "a" * 5000), "request line is longer than the 4094 bytes"),
        (431, _request("GET", door, extra=big), "header fields are more or larger"),
        (400, _request("GET", door).replace(b"HTTP/1.1", b"HTTP/9.9", 1), "not valid HTTP/1.1"),
    ]
    for status, data, said in cases:
        got, content_type, body = _answer(port, data)
        assert got == status, body
        if kind == "scim":
            assert content_type == "application/scim+json"
            error = json.loads(body)
            assert error["schemas"] == [_SCIM_ERROR] and error["status"] == str(status)
            detail = error["detail"]
        elif kind == "admin":
            assert content_type == "application/json"
            detail = json.loads(body)["error"]
        else:
            assert content_type.startswith("text/plain")
            detail = body.decode()
        assert said in detail
        assert ("POST /scim/v2/.search" in detail) == (status == 414 and kind == "scim")
    assert requests.get(server.url + "/healthz", timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("data", "target"),
    [
        (b"GET /scim/v2/Users HTTP/1.1\r\nHost: x\r\n\r\n", "/scim/v2/Users"),
        (b"GET /admin/users?x=\xff\xfe HTTP/1.1\r\n", "/admin/users?x=\xff\xfe"),
        (b"GET\r\n\r\n", ""),
        (b"", ""),
        (b"\x00\x01 \x02", "\x02"),
    ],
)
def test_the_door_is_read_from_any_bytes(data: bytes, target: str) -> None:
    from agent.web.early_errors import is_admin, is_scim, request_target

    assert request_target(data) == target
    assert is_scim(target) == target.startswith("/scim/")
    assert is_admin(target) == target.startswith("/admin")


@pytest.mark.parametrize(
    "framing",
    [
        "Content-Length: 5\r\nContent-Length: 6\r\n",
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: gzip\r\n",
        "Content-Length: -5\r\n",
    ],
)
def test_unframable_requests_are_refused_by_the_parser(server: LiveServer, framing) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    [(status, _)] = _exchange(port, _request("POST", "/scim/v2/Users", extra=framing) + b"hello!")
    assert status.startswith((b"HTTP/1.1 400", b"HTTP/1.1 501"))


# -- the framing alone ---------------------------------------------------------------------------


def _feed_bytewise(pending: PendingRequest, data: bytes) -> Progress:
    progress = Progress.MORE
    for i in range(len(data)):
        progress = pending.feed(data[i : i + 1])
        if progress is not Progress.MORE:
            return progress
    return progress


def test_framing_finds_the_end_of_each_request_byte_by_byte() -> None:
    first = b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
    second = b"GET /y HTTP/1.1\r\n\r\n"
    pending = PendingRequest(1000)
    assert _feed_bytewise(pending, first) is Progress.COMPLETE
    assert pending.end == len(first) and pending.reusable
    pending = PendingRequest(1000, first + second)
    assert pending.feed(b"") is Progress.COMPLETE
    assert bytes(pending.data[pending.end :]) == second
    chunked = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    pending = PendingRequest(1000)
    assert _feed_bytewise(pending, chunked + second[:5]) is Progress.COMPLETE
    assert pending.end == len(chunked)


@pytest.mark.parametrize(
    ("body", "progress"),
    [
        (b"ZZ\r\n\r\n", Progress.BAD_CHUNKS),  # not a hexadecimal size
        (b"-1\r\n\r\n", Progress.BAD_CHUNKS),
        (b'5\r\n{"a":1}\r\n0\r\n\r\n', Progress.BAD_CHUNKS),  # 7 bytes of data for 5
        (b"3\r\nabc\r\n" + b"f" * 2000, Progress.BAD_CHUNKS),  # a size line with no end
        (b"3\r\nabc\r\n0\r\n\r\n", Progress.COMPLETE),
        (b"3;ext=1\r\nabc\r\n0\r\nTrailer: x\r\n\r\n", Progress.COMPLETE),
    ],
)
def test_a_chunked_body_is_checked_whole_before_the_app_reads_it(body, progress) -> None:
    head = b"POST /scim/v2/Users HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert PendingRequest(100_000).feed(head + body) is progress
    assert _feed_bytewise(PendingRequest(100_000), head + body) is progress


def test_a_transfer_coding_besides_chunked_is_not_taken() -> None:
    head = b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    assert PendingRequest(1000).feed(head) is Progress.UNKNOWN_CODING


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/scim/v2/Users", b"ZZ\r\n\r\n"),
        ("/scim/v2/Users/.search", b"-1\r\n\r\n"),
        ("/scim/v2/Users", b'5\r\n{"a":1}\r\n0\r\n\r\n'),
        ("/admin/licenses", b'5\r\n{"a":1}\r\n0\r\n\r\n'),
    ],
)
def test_a_malformed_chunked_body_is_a_400_not_a_500(server: LiveServer, path, body) -> None:
    """Found by trying the product from outside: gunicorn decodes chunks only as the app reads
    them, so a bad chunk was an exception inside the app (a 500). The front checks them."""
    port = int(server.url.rsplit(":", 1)[1])
    method = "PUT" if path.startswith("/admin") else "POST"
    status, content_type, answer = _answer(
        port, _request(method, path, extra="Transfer-Encoding: chunked\r\n") + body
    )
    assert status == 400, answer
    if path.startswith("/scim"):
        assert content_type == "application/scim+json"
        assert "chunked" in json.loads(answer)["detail"]
    else:
        assert "chunked" in json.loads(answer)["error"]
    status, content_type, answer = _answer(
        port,
        _request(method, path, extra="Transfer-Encoding: gzip, chunked\r\n")
        + b"3\r\nabc\r\n0\r\n\r\n",
    )
    assert status == 501 and "gzip" in answer.decode()
    assert "Traceback" not in Path(server.log.name).read_text(errors="replace")


def test_framing_refuses_to_buffer_past_the_limits() -> None:
    pending = PendingRequest(10)
    progress = pending.feed(b"POST /x HTTP/1.1\r\nContent-Length: 11\r\n\r\n")
    assert progress is Progress.COMPLETE and not pending.reusable
    pending = PendingRequest(10)
    head = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert pending.feed(head + b"20\r\n" + b"a" * 8) is Progress.MORE
    assert pending.feed(b"a" * 3) is Progress.COMPLETE and not pending.reusable
    pending = PendingRequest(10)
    assert pending.feed(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * MAX_HEADER_BYTES) is (
        Progress.HEADERS_TOO_LARGE
    )
