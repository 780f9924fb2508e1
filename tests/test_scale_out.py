"""Scale-out: two `seat-agent serve` processes (each with its embedded scheduler) against one
PostgreSQL: the seat limit holds across them and exactly one scheduler acts."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from test_concurrency import SCIM_HEADERS, _create, _seats

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def db_url(pg_url):  # PostgreSQL only: SQLite is the single-host default
    return pg_url


def test_two_hosts_share_the_seat_limit_and_one_scheduler(live_server, tmp_path):
    a = live_server(workers=2, seats=10)
    b = live_server(workers=2, seats=10)
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
