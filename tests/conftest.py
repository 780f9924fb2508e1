"""Shared fixtures: a real database (SQLite file and PostgreSQL schema), the app, clients."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from agent.config import settings_from_mapping

PG_BASE = os.environ.get("SEAT_AGENT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("SEAT_AGENT_REQUIRE_PG") == "1"
SCIM_TOKEN = "scim-test-token"
ADMIN_TOKEN = "admin-test-token"
_pg_ok: bool | None = None


def pg_available() -> bool:
    global _pg_ok
    if _pg_ok is None:
        try:
            engine = create_engine(PG_BASE, connect_args={"connect_timeout": 3})
            with engine.connect() as conn:
                conn.execute(text("select 1"))
            engine.dispose()
            _pg_ok = True
        except Exception:
            _pg_ok = False
    return _pg_ok


def require_pg() -> None:
    if not pg_available():
        if REQUIRE_PG:
            pytest.fail(
                f"PostgreSQL required (SEAT_AGENT_REQUIRE_PG=1) but not reachable: {PG_BASE}"
            )
        pytest.skip(f"PostgreSQL not reachable at {PG_BASE}")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema, as a URL whose search_path points at it."""
    require_pg()
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(PG_BASE)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/seat-agent.db"
    return request.getfixturevalue("pg_url")


class FakeClock:
    """An injected clock: tests move time instead of sleeping."""

    def __init__(self, start: datetime | None = None):
        self.now = start or datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(microseconds=1)  # strictly increasing, like a real clock
        return self.now

    def advance(self, **kwargs: Any) -> None:
        self.now += timedelta(**kwargs)


def make_settings(db_url: str, *, seat_extension: bool = True, **license: Any):
    """Settings for a test app. The suite turns ``[scim] seat_extension`` on (the default is
    off) so a test sees the seat engine's outcome in the very SCIM response that caused it;
    tests of the default surface pass ``seat_extension=False``."""
    return settings_from_mapping(
        {
            "database": {"url": db_url},
            "auth": {"scim_token": SCIM_TOKEN, "admin_token": ADMIN_TOKEN},
            "scim": {"seat_extension": seat_extension},
            "license": {"seats": 1000, **license},
        }
    )


class Api:
    """A Flask test client that speaks SCIM and admin JSON with the right tokens."""

    def __init__(self, app):
        self.app = app
        self.client = app.test_client()

    def _h(self, token: str, extra: dict | None = None) -> dict:
        h = {"Authorization": f"Bearer {token}"}
        h.update(extra or {})
        return h

    def scim(self, method: str, path: str, body: Any = None, headers: dict | None = None, **kw):
        kwargs: dict[str, Any] = {"headers": self._h(SCIM_TOKEN, headers)}
        if body is not None:
            kwargs["json"] = body
            kwargs["content_type"] = "application/scim+json"
        return self.client.open("/scim/v2" + path, method=method, **kwargs, **kw)

    def admin(self, method: str, path: str, body: Any = None, **kw):
        kwargs: dict[str, Any] = {"headers": self._h(ADMIN_TOKEN)}
        if body is not None:
            kwargs["json"] = body
        return self.client.open("/admin" + path, method=method, **kwargs, **kw)

    @property
    def agent(self):
        return self.app.extensions["seat_agent"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_api(db_url: str, clock: FakeClock):
    from agent.app import create_app

    made = []

    def factory(**license: Any) -> Api:
        app = create_app(make_settings(db_url, **license), clock=clock)
        made.append(app)
        return Api(app)

    yield factory
    for app in made:
        app.extensions["seat_agent"].store.dispose()


@pytest.fixture
def api(make_api) -> Api:
    return make_api()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(path, db_url: str, port: int, workers: int = 2, **license: Any) -> None:
    """A TOML config for a real `seat-agent serve` process."""
    import json as _json

    def toml_value(v: Any) -> str:
        return _json.dumps(v)

    lines = [
        "[server]",
        'host = "127.0.0.1"',
        f"port = {port}",
        f"workers = {workers}",
        "[database]",
        f"url = {toml_value(db_url)}",
        "[auth]",
        f"scim_token = {toml_value(SCIM_TOKEN)}",
        f"admin_token = {toml_value(ADMIN_TOKEN)}",
        "[license]",
    ]
    lines += [f"{k} = {toml_value(v)}" for k, v in {"seats": 1000, **license}.items()]
    path.write_text("\n".join(lines) + "\n")


class LiveServer:
    """`seat-agent serve` in a subprocess (gunicorn, several workers) on a free port."""

    def __init__(self, config_path, port: int, log_path):
        import subprocess
        import sys

        self.url = f"http://127.0.0.1:{port}"
        self.log = open(log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "serve", "--config", str(config_path)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        import time

        import requests

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                if requests.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become ready in 30 s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def live_server(db_url: str, tmp_path):
    servers: list[LiveServer] = []

    def start(workers: int = 4, **license: Any) -> LiveServer:
        port = free_port()
        config = tmp_path / f"server-{port}.toml"
        write_config(config, db_url, port, workers=workers, **license)
        server = LiveServer(config, port, tmp_path / f"server-{port}.log")
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(scope="session")
def scim2_server():
    """Stock scim2-server (PyPI), the independent downstream SCIM application; one process for
    the session, a tenant per test (tests/scim2_peer.py)."""
    from scim2_peer import Scim2ServerProcess

    server = Scim2ServerProcess()
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["seat-agent", "scim2-server"])
def any_downstream(request, tmp_path):
    """The downstream application: a second seat-agent, and stock scim2-server."""
    if request.param == "seat-agent":
        from downstream import running_downstream

        with running_downstream(tmp_path / "downstream") as server:
            yield server
    else:
        from scim2_peer import running_peer

        with running_peer(request.getfixturevalue("scim2_server")) as peer:
            yield peer


def bounded_examples(max_examples: int, *, shared_store: bool = False) -> Any:
    """Hypothesis settings for the property tests: a fixed number of examples, the same ones
    on every run (derandomized, no example database), no deadline (the host's speed drifts),
    function-scoped fixtures allowed. ``shared_store``: the examples share one database, so
    hypothesis must not replay or shrink them (the store's state is not the example's alone)."""
    from hypothesis import HealthCheck, Phase, settings

    extra: dict[str, Any] = {"phases": [Phase.explicit, Phase.generate]} if shared_store else {}
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        **extra,
    )
