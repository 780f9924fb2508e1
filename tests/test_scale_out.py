"""Scale-out: two `seat-agent serve` processes (each with its embedded scheduler) against one
PostgreSQL: the seat limit holds across them, exactly one scheduler acts, and when the host
holding the lease dies the other host's scheduler takes over."""

from __future__ import annotations

import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from test_concurrency import SCIM_HEADERS, _create, _seats
from test_systemd import _children, holder_pid, wait_for_holder

from tests.conftest import LiveServer, free_port, write_config

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def db_url(pg_url):  # PostgreSQL only: SQLite is the single-host default
    return pg_url


LEASE_SECONDS = 5  # the smallest allowed: a crashed holder's lease lapses quickly


@pytest.fixture
def hosts(db_url, tmp_path):
    """Start 'hosts': `seat-agent serve` processes with a short scheduler lease."""
    started: list[LiveServer] = []

    def start() -> LiveServer:
        port = free_port()
        config = tmp_path / f"server-{port}.toml"
        write_config(config, db_url, port, workers=2, seats=10)
        with config.open("a") as f:
            f.write(f"[scheduler]\nlease_seconds = {LEASE_SECONDS}\n")
        started.append(LiveServer(config, port, tmp_path / f"server-{port}.log"))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def test_two_hosts_share_the_seat_limit_and_one_scheduler(hosts, db_url, tmp_path):
    a = hosts()
    b = hosts()
    ids = [_create(a.url, f"u{i:02d}", False)["id"] for i in range(40)]
    body = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "value": {"active": True}}],
    }

    def activate(pair):
        i, uid = pair
        url = (a if i % 2 else b).url
        return requests.patch(
            f"{url}/scim/v2/Users/{uid}", json=body, headers=SCIM_HEADERS, timeout=60
        ).status_code

    with ThreadPoolExecutor(max_workers=40) as pool:
        codes = list(pool.map(activate, enumerate(ids)))
    assert codes.count(200) == 10, codes
    assert codes.count(403) == 30, codes
    for server in (a, b):
        report = _seats(server.url)
        assert (report["licensed"], report["consumed"]) == (10, 10)

    # Both hosts run an embedded scheduler; the database lease lets exactly one act.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        texts = [p.read_text(errors="replace") for p in tmp_path.glob("server-*.log")]
        if sum(t.count("lease taken") for t in texts) >= 1:
            break
        time.sleep(0.3)
    time.sleep(2)
    texts = [p.read_text(errors="replace") for p in tmp_path.glob("server-*.log")]
    started = sum(len(re.findall(r"scheduler \S+ started", t)) for t in texts)
    assert started == 2, texts
    assert sum(t.count("lease taken") for t in texts) == 1, texts

    # The holder's host dies (master and scheduler SIGKILLed: no lease release); once the lease
    # lapses the other host's scheduler, a child of its master, holds it.
    first = wait_for_holder(db_url, lambda h: True)
    owner, survivor = (a, b) if holder_pid(first) in _children(a.proc.pid) else (b, a)
    assert holder_pid(first) in _children(owner.proc.pid)
    os.kill(holder_pid(first), signal.SIGKILL)
    os.kill(owner.proc.pid, signal.SIGKILL)
    second = wait_for_holder(db_url, lambda h: h != first)
    assert holder_pid(second) in _children(survivor.proc.pid)
    report = _seats(survivor.url)
    assert (report["licensed"], report["consumed"]) == (10, 10)
