"""Metrics, request ids and request logs: through the app, and through a real gunicorn."""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.services.outbox_notifier import EMAIL, PUSH_USER
from agent.storage import outbox
from agent.web.observability import JsonFormatter, logging_config, request_id_from
from tests.conftest import ADMIN_TOKEN, SCIM_TOKEN, LiveServer, free_port

CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
PASSWORD = "Tr0ub4dor&3-not-for-logs"


def user(name: str, **extra) -> dict:
    return {"schemas": [CORE], "userName": name, "active": True, **extra}


def scrape(api, token: str | None = ADMIN_TOKEN) -> dict[tuple[str, tuple], float]:
    """GET /metrics, parsed into {(sample name, sorted labels): value}."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = api.client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.headers["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(r.get_data(as_text=True)):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def gauge(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


# -- /metrics ------------------------------------------------------------------------------


def test_metrics_needs_the_admin_token(api):
    assert api.client.get("/metrics").status_code == 401
    r = api.client.get("/metrics", headers={"Authorization": f"Bearer {SCIM_TOKEN}"})
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    # Loopback is no exemption: a reverse proxy on the same host connects from 127.0.0.1 too.
    r = api.client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert r.status_code == 401
    scrape(api)


def test_seat_gauges_are_read_from_the_database_at_scrape_time(make_api):
    api = make_api(seats=2, on_full="queue")
    ids = []
    for name in ("a", "b", "c"):
        r = api.scim("POST", "/Users", user(name))
        assert r.status_code == 201
        ids.append(r.get_json()["id"])
    s = scrape(api)
    assert gauge(s, "seat_agent_database_up") == 1
    assert gauge(s, "seat_agent_seats_licensed") == 2
    assert gauge(s, "seat_agent_seats_consumed") == 2
    assert gauge(s, "seat_agent_seats_available") == 0
    assert gauge(s, "seat_agent_seats_queued") == 1

    # A second app on the same database (another worker or host) sees the same numbers.
    other = make_api(seats=2, on_full="queue")
    assert other.scim("DELETE", f"/Users/{ids[0]}").status_code == 204  # frees a seat for c
    s = scrape(api)
    assert gauge(s, "seat_agent_seats_consumed") == 2
    assert gauge(s, "seat_agent_seats_queued") == 0
    assert other.admin("PUT", "/licenses", {"seats": 5}).status_code == 200
    s = scrape(api)
    assert gauge(s, "seat_agent_seats_licensed") == 5
    assert gauge(s, "seat_agent_seats_available") == 3
    report = api.admin("GET", "/seats").get_json()
    for key in ("licensed", "consumed", "available", "queued"):
        assert gauge(s, f"seat_agent_seats_{key}") == report[key]


def test_outbox_depth_by_kind_and_last_reconcile(api, clock):
    s = scrape(api)
    assert gauge(s, "seat_agent_outbox_depth", kind=PUSH_USER) == 0
    assert gauge(s, "seat_agent_outbox_depth", kind=EMAIL) == 0
    assert not any(name == "seat_agent_last_reconcile_timestamp_seconds" for name, _ in s)

    with api.agent.store.write() as tx:
        for key in ("u1", "u2"):
            outbox.enqueue(tx, PUSH_USER, key, {"user_id": key}, clock())
        outbox.enqueue(tx, EMAIL, "alert", {"subject": "x"}, clock())
    from agent.jobs.tasks import Jobs

    Jobs(api.agent).reconcile()
    s = scrape(api)
    assert gauge(s, "seat_agent_outbox_depth", kind=PUSH_USER) == 2
    assert gauge(s, "seat_agent_outbox_depth", kind=EMAIL) == 1
    with api.agent.store.read() as tx:
        at = datetime.fromisoformat(json.loads(tx.state.get("last_reconcile"))["at"])
    assert gauge(s, "seat_agent_last_reconcile_timestamp_seconds") == pytest.approx(at.timestamp())
    assert abs(at - clock.now).total_seconds() < 1


def test_scim_requests_are_counted_by_route_template_never_by_id(api):
    ids = [api.scim("POST", "/Users", user(n)).get_json()["id"] for n in ("a", "b")]
    for user_id in ids:
        assert api.scim("GET", f"/Users/{user_id}").status_code == 200
    assert api.scim("GET", "/Users/no-such-user").status_code == 404
    assert api.scim("GET", "/Users?filter=userName%20eq%20%22a%22").status_code == 200
    assert api.client.get("/scim/v2/Users").status_code == 401  # no token
    assert api.scim("GET", "/NoSuchEndpoint/123").status_code == 404
    api.admin("GET", "/seats")  # not SCIM: not counted
    r = api.client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    text = r.get_data(as_text=True)
    for user_id in ids:
        assert user_id not in text
    assert "no-such-user" not in text and "NoSuchEndpoint" not in text

    s = scrape(api)
    counted = {
        (dict(labels)["method"], dict(labels)["endpoint"], dict(labels)["status"]): value
        for (name, labels), value in s.items()
        if name == "seat_agent_scim_requests_total"
    }
    assert counted == {
        ("POST", "/scim/v2/Users", "201"): 2,
        ("GET", "/scim/v2/Users/<user_id>", "200"): 2,
        ("GET", "/scim/v2/Users/<user_id>", "404"): 1,
        ("GET", "/scim/v2/Users", "200"): 1,
        ("GET", "/scim/v2/Users", "401"): 1,
        ("GET", "unmatched", "404"): 1,
    }
    assert (
        gauge(
            s,
            "seat_agent_scim_request_duration_seconds_count",
            method="GET",
            endpoint="/scim/v2/Users/<user_id>",
        )
        == 3
    )
    assert (
        gauge(
            s,
            "seat_agent_scim_request_duration_seconds_bucket",
            method="POST",
            endpoint="/scim/v2/Users",
            le="+Inf",
        )
        == 2
    )


def test_scrape_survives_an_unreachable_database(api, monkeypatch):
    api.scim("GET", "/Users")

    def down() -> dict:
        raise ConnectionError("database unreachable")

    monkeypatch.setattr(api.agent.admin, "report", down)
    s = scrape(api)
    assert gauge(s, "seat_agent_database_up") == 0
    assert not any(name.startswith("seat_agent_seats_") for name, _ in s)
    assert any(name == "seat_agent_scim_requests_total" for name, _ in s)


# -- request ids ---------------------------------------------------------------------------


def test_request_id_is_echoed_when_sane_and_generated_otherwise(api):
    r = api.scim("GET", "/Users", headers={"X-Request-Id": "okta-req-7f3a.01"})
    assert r.headers["X-Request-Id"] == "okta-req-7f3a.01"
    generated = api.scim("GET", "/Users").headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert api.scim("GET", "/Users").headers["X-Request-Id"] != generated
    for insane in ("has space", "x" * 129, '"quoted"', "<script>", "-leading-dash", "a;b"):
        rid = api.scim("GET", "/Users", headers={"X-Request-Id": insane}).headers["X-Request-Id"]
        assert re.fullmatch(r"[0-9a-f]{32}", rid), insane
    assert request_id_from("a\nb") != "a\nb"


def test_request_id_on_refusals_errors_and_other_endpoints(api):
    for r in (
        api.client.get("/scim/v2/Users", headers={"X-Request-Id": "r1"}),  # 401
        api.scim("GET", "/Nope", headers={"X-Request-Id": "r1"}),  # 404 SCIM
        api.client.get("/nowhere", headers={"X-Request-Id": "r1"}),  # 404 outside SCIM
        api.client.get("/healthz", headers={"X-Request-Id": "r1"}),
        api.client.get("/metrics", headers={"X-Request-Id": "r1"}),  # 401
    ):
        assert r.headers["X-Request-Id"] == "r1"


# -- request logs --------------------------------------------------------------------------


def access_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "agent.web.access"]


def test_request_log_has_the_request_id_and_no_secrets(api, caplog):
    caplog.set_level(logging.DEBUG)
    r = api.scim(
        "POST",
        "/Users",
        user("secretive", password=PASSWORD),
        headers={"X-Request-Id": "idp-call-0001"},
    )
    assert r.status_code == 201
    user_id = r.get_json()["id"]
    api.scim(
        "PATCH",
        f"/Users/{user_id}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "password", "value": PASSWORD}],
        },
    )
    api.admin("PUT", "/licenses", {"seats": 1001})
    api.client.get("/scim/v2/Users", headers={"Authorization": "Bearer wrong-token-xyz"})

    records = access_records(caplog)
    assert len(records) == 4
    first = records[0]
    assert first.request_id == "idp-call-0001"  # type: ignore[attr-defined]
    assert "idp-call-0001" in first.getMessage()
    assert "POST /scim/v2/Users 201" in first.getMessage()

    formatter = JsonFormatter()
    everything = caplog.text + "\n".join(formatter.format(r) for r in caplog.records)
    for secret in (SCIM_TOKEN, ADMIN_TOKEN, "wrong-token-xyz", PASSWORD, "password", "Bearer"):
        assert secret not in everything, secret


def test_json_log_line_shape(api, caplog):
    caplog.set_level(logging.INFO, logger="agent.web.access")
    api.scim(
        "GET",
        '/Users?filter=userName eq "alice@example.com"',
        headers={"X-Request-Id": "shape-1"},
    )
    (record,) = access_records(caplog)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert set(data) == {
        "ts",
        "level",
        "logger",
        "message",
        "request_id",
        "method",
        "path",
        "status",
        "duration_ms",
    }
    assert data["request_id"] == "shape-1"
    assert (data["method"], data["path"], data["status"]) == ("GET", "/scim/v2/Users", 200)
    assert data["level"] == "info" and data["logger"] == "agent.web.access"
    assert isinstance(data["duration_ms"], float) and data["duration_ms"] >= 0
    datetime.fromisoformat(data["ts"])
    assert "alice" not in line  # the query string (a SCIM filter naming a person) is not logged


def test_log_lines_written_during_a_request_carry_its_id(api):
    import io

    app = api.app

    @app.get("/_log_probe")
    def probe():
        logging.getLogger("agent.probe").warning("inside the request")
        return "ok"

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    probe_log = logging.getLogger("agent.probe")
    probe_log.addHandler(handler)
    try:
        api.client.get("/_log_probe", headers={"X-Request-Id": "probe-1"})
    finally:
        probe_log.removeHandler(handler)
    data = json.loads(stream.getvalue())
    assert (data["message"], data["request_id"]) == ("inside the request", "probe-1")


def test_a_path_cannot_forge_a_plain_log_line(api, caplog):
    caplog.set_level(logging.INFO, logger="agent.web.access")
    api.client.get("/scim/v2/Users%0A2026-01-01%20INFO%20forged")
    (record,) = access_records(caplog)
    assert "\n" not in record.getMessage()


def test_logging_config_picks_the_formatter():
    assert logging_config(True)["handlers"]["console"]["formatter"] == "json"
    assert logging_config(False)["handlers"]["console"]["formatter"] == "plain"


# -- under gunicorn ------------------------------------------------------------------------


@pytest.mark.slow
def test_gunicorn_workers_aggregate_metrics_and_log_json(tmp_path, monkeypatch):
    import requests

    # Where gunicorn's control socket would go (it is disabled: no home under systemd).
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    port = free_port()
    config = tmp_path / "server.toml"
    config.write_text(
        "\n".join(
            [
                "[server]",
                'host = "127.0.0.1"',
                f"port = {port}",
                "workers = 3",
                "json_logs = true",
                "[database]",
                f'url = "sqlite:///{tmp_path}/seat-agent.db"',
                "[auth]",
                f'scim_token = "{SCIM_TOKEN}"',
                f'admin_token = "{ADMIN_TOKEN}"',
                "[scheduler]",
                "embedded = false",
            ]
        )
        + "\n"
    )
    server = LiveServer(config, port, tmp_path / "server.log")
    try:
        scim = {"Authorization": f"Bearer {SCIM_TOKEN}", "Connection": "close"}
        n = 30
        for i in range(n):
            r = requests.get(
                server.url + "/scim/v2/Users", headers={**scim, "X-Request-Id": f"live-{i}"}
            )
            assert r.status_code == 200
            assert r.headers["X-Request-Id"] == f"live-{i}"
        r = requests.post(
            server.url + "/scim/v2/Users",
            json=user("live", password=PASSWORD),
            headers={**scim, "Content-Type": "application/scim+json"},
        )
        assert r.status_code == 201
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Connection": "close"}
        # Every scrape, whichever worker answers, sums all workers.
        for _ in range(6):
            text = requests.get(server.url + "/metrics", headers=admin).text
            assert (
                'seat_agent_scim_requests_total{endpoint="/scim/v2/Users",'
                f'method="GET",status="200"}} {float(n)}'
            ) in text
            assert "seat_agent_seats_consumed 1.0" in text
    finally:
        server.stop()

    log = (tmp_path / "server.log").read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    access = [x for x in lines if x.get("logger") == "agent.web.access"]
    assert {x["request_id"] for x in access} >= {f"live-{i}" for i in range(n)}
    assert any(x["logger"] == "gunicorn.error" for x in lines)
    assert "control socket" not in log.lower()
    assert list(home.iterdir()) == []
    for secret in (SCIM_TOKEN, ADMIN_TOKEN, PASSWORD):
        assert secret not in log


# -- /readyz -------------------------------------------------------------------------------


def test_readyz_is_ok_at_the_newest_migration(api):
    r = api.client.get("/readyz")
    assert (r.status_code, r.get_json()) == (200, {"status": "ok"})
    assert api.client.get("/healthz").status_code == 200


def test_readyz_is_503_while_migrations_are_not_current(api):
    from agent.storage import migrate

    engine = api.agent.store.engine
    head = migrate.head_revision(engine)
    migrate.downgrade(engine, "0001")
    r = api.client.get("/readyz")
    assert r.status_code == 503
    assert r.get_json() == {
        "status": "unavailable",
        "error": "migrations not current",
        "database": "0001",
        "code": head,
    }
    assert api.client.get("/healthz").status_code == 200  # alive, only not ready
    migrate.upgrade(engine)
    assert api.client.get("/readyz").status_code == 200


def test_readyz_says_when_a_newer_release_migrated_the_database(api):
    from sqlalchemy import text

    engine = api.agent.store.engine
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    r = api.client.get("/readyz")
    assert r.status_code == 503
    body = r.get_json()
    assert body["database"] == "9999_from_the_future"
    assert body["error"].startswith("database schema is newer than this code")


def test_readyz_is_503_when_the_database_is_gone(api):
    from sqlalchemy import create_engine

    store = api.agent.store
    working = store.engine
    # Nothing listens on port 1: every connection is refused, as when the server is down.
    store.engine = create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:1/test", connect_args={"connect_timeout": 2}
    )
    try:
        r = api.client.get("/readyz")
        assert r.status_code == 503
        assert r.get_json() == {"status": "unavailable", "error": "OperationalError"}
        assert api.client.get("/healthz").status_code == 200
    finally:
        store.engine.dispose()
        store.engine = working
    assert api.client.get("/readyz").status_code == 200


@pytest.mark.slow
def test_scheduler_process_logs_json_lines_too(tmp_path):
    import subprocess
    import sys
    import time

    config = tmp_path / "scheduler.toml"
    config.write_text(
        "\n".join(
            [
                "[server]",
                "json_logs = true",
                "[database]",
                f'url = "sqlite:///{tmp_path}/seat-agent.db"',
                "[auth]",
                f'scim_token = "{SCIM_TOKEN}"',
                f'admin_token = "{ADMIN_TOKEN}"',
            ]
        )
        + "\n"
    )
    # Only `serve` and `db upgrade` create a database; the scheduler works on an existing one.
    subprocess.run(
        [sys.executable, "-m", "agent.cli", "db", "upgrade", "--config", str(config)], check=True
    )
    log_path = tmp_path / "scheduler.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "scheduler", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while "lease taken" not in log_path.read_text():
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    messages = [r["message"] for r in records]
    assert any(re.fullmatch(r"scheduler \S+ started", m) for m in messages), messages
    assert any("lease taken" in m for m in messages)


# -- per-request overhead of the server ----------------------------------------------------


def test_gunicorn_builds_no_access_log_fields(monkeypatch):
    """The agent writes its own request line; gunicorn's logger must not build its access-log
    fields for every request only to drop them."""
    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    from agent.web.server import AgentLogger

    cfg = Config()
    cfg.set("accesslog", "-")  # makes gunicorn's own logger build and write them
    if hasattr(Logger, "access_log_enabled"):
        assert Logger(cfg).access_log_enabled is True
        assert AgentLogger(cfg).access_log_enabled is False

    def built(*_args):
        raise AssertionError("access-log fields built")

    monkeypatch.setattr(Logger, "atoms", built)
    AgentLogger(cfg).access(object(), object(), {}, 0.001)


def test_a_worker_freezes_what_it_built_before_serving():
    import gc

    from agent.web.server import _worker_ready

    try:
        _worker_ready(object())
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_only_admin_requests_open_a_session(api):
    app = api.app
    interface = app.session_interface
    for path in ["/scim/v2/Users", "/healthz", "/metrics", "/administrator"]:
        with app.test_request_context(path):
            from flask import request

            assert interface.is_null_session(interface.open_session(app, request)), path
    for path in ["/admin", "/admin/status"]:
        with app.test_request_context(path):
            from flask import request

            assert not interface.is_null_session(interface.open_session(app, request)), path
