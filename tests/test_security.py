"""Token rotation, hashed tokens, rate limiting with 429 and Retry-After."""

from __future__ import annotations

from click.testing import CliRunner
from conftest import ADMIN_TOKEN, SCIM_TOKEN, FakeClock, make_settings

from agent.app import create_app
from agent.cli import main
from agent.config import settings_from_mapping
from agent.web.auth import digest
from agent.web.ratelimit import RateLimiter


def _app(db_url: str, **sections):
    base = make_settings(db_url).model_dump(mode="json")
    for section, values in sections.items():
        base[section].update(values)
    return create_app(settings_from_mapping(base), clock=FakeClock())


def _get(app, token: str, path: str = "/scim/v2/Users"):
    return app.test_client().get(path, headers={"Authorization": f"Bearer {token}"})


def test_rotation_tokens_and_hashed_tokens_are_accepted(db_url):
    app = _app(
        db_url,
        auth={
            "scim_tokens": ["next-token"],
            "scim_token_hashes": [f"sha256:{digest('hashed-token')}"],
            "admin_token_hashes": [f"sha256:{digest('hashed-admin')}"],
        },
    )
    try:
        for token in (SCIM_TOKEN, "next-token", "hashed-token"):
            assert _get(app, token).status_code == 200, token
        assert _get(app, "other").status_code == 401
        assert _get(app, ADMIN_TOKEN).status_code == 401  # admin token is not a SCIM token
        assert _get(app, "hashed-admin", "/admin/seats").status_code == 200
        assert _get(app, "hashed-token", "/admin/seats").status_code == 401
    finally:
        app.extensions["seat_agent"].store.dispose()


def test_bad_token_hash_is_refused_at_start():
    import pytest

    from agent.config import ConfigError

    with pytest.raises(ConfigError, match="sha256"):
        settings_from_mapping({"auth": {"scim_token_hashes": ["md5:abc"]}})


def test_rate_limit_gives_429_with_retry_after_per_token(db_url):
    app = _app(db_url, server={"rate_limit_per_minute": 3})
    try:
        codes = [_get(app, SCIM_TOKEN).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = _get(app, SCIM_TOKEN)
        assert r.status_code == 429
        assert int(r.headers["Retry-After"]) >= 1
        assert r.get_json()["status"] == "429"
        assert _get(app, ADMIN_TOKEN, "/admin/seats").status_code == 200  # its own bucket
    finally:
        app.extensions["seat_agent"].store.dispose()


def test_token_bucket_refills_with_time():
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])
    for _ in range(60):
        assert limiter.take("k") == 0
    assert limiter.take("k") > 0
    now[0] += 1.0
    assert limiter.take("k") == 0
    assert RateLimiter(0).take("k") == 0


def test_hash_token_command():
    r = CliRunner().invoke(main, ["hash-token"], input="s3cret\n")
    assert r.output.strip() == f"sha256:{digest('s3cret')}"


def test_two_scim_tokens_have_separate_buckets(db_url):
    app = _app(db_url, server={"rate_limit_per_minute": 2}, auth={"scim_tokens": ["second"]})
    try:
        assert [_get(app, SCIM_TOKEN).status_code for _ in range(3)] == [200, 200, 429]
        assert [_get(app, "second").status_code for _ in range(3)] == [200, 200, 429]
    finally:
        app.extensions["seat_agent"].store.dispose()


def _from(app, address: str, token: str, path: str = "/scim/v2/Users"):
    """A request as the reverse proxy on loopback forwards it for ``address``."""
    return app.test_client().get(
        path, headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": address}
    )


def test_failed_authentication_is_limited_per_client_address(db_url):
    app = _app(db_url, server={"auth_failures_per_minute": 3})
    try:
        codes = [_from(app, "203.0.113.7", f"guess-{i}").status_code for i in range(3)]
        assert codes == [401, 401, 401]
        blocked = _from(app, "203.0.113.7", "guess-3")
        assert blocked.status_code == 429
        assert int(blocked.headers["Retry-After"]) >= 1
        body = blocked.get_json()
        assert body["status"] == "429" and "schemas" in body  # a SCIM error body on /scim
        # A right guess from the blocked address is refused too: no oracle for the guesser.
        assert _from(app, "203.0.113.7", SCIM_TOKEN).status_code == 429
        admin = _from(app, "203.0.113.7", "nope", "/admin/seats")
        assert admin.status_code == 429 and "error" in admin.get_json()
        assert _from(app, "203.0.113.7", ADMIN_TOKEN, "/metrics").status_code == 429
        # Another client behind the same proxy is not affected, and probes stay open.
        assert _from(app, "198.51.100.2", SCIM_TOKEN).status_code == 200
        assert _from(app, "203.0.113.7", "x", "/healthz").status_code == 200
    finally:
        app.extensions["seat_agent"].store.dispose()


def test_forwarded_for_is_ignored_from_an_untrusted_peer(db_url, monkeypatch):
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.5")
    app = _app(db_url, server={"auth_failures_per_minute": 2})
    try:
        client = app.test_client()
        # The test client's peer is 127.0.0.1, now untrusted: rotating X-Forwarded-For does
        # not give a guesser a fresh budget.
        for i in range(2):
            r = client.get(
                "/scim/v2/Users",
                headers={"Authorization": "Bearer bad", "X-Forwarded-For": f"192.0.2.{i}"},
            )
            assert r.status_code == 401
        r = client.get(
            "/scim/v2/Users",
            headers={"Authorization": f"Bearer {SCIM_TOKEN}", "X-Forwarded-For": "192.0.2.99"},
        )
        assert r.status_code == 429
        limiter = app.extensions["seat_agent_failed_auth"]
        assert limiter.wait("127.0.0.1") > 0
    finally:
        app.extensions["seat_agent"].store.dispose()


def test_failed_auth_limit_can_be_turned_off(db_url):
    app = _app(db_url, server={"auth_failures_per_minute": 0})
    try:
        assert {_from(app, "203.0.113.9", "bad").status_code for _ in range(40)} == {401}
    finally:
        app.extensions["seat_agent"].store.dispose()


class _Stream:
    def __init__(self, tty: bool):
        self.tty = tty
        self.text = ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, s: str) -> int:
        self.text += s
        return len(s)

    def flush(self) -> None:
        pass


def test_generated_tokens_are_printed_only_on_a_terminal(tmp_path):
    from agent.cli import GENERATED_TOKENS_FILE, announce_generated_tokens

    settings = settings_from_mapping({"database": {"url": f"sqlite:///{tmp_path}/a.db"}})
    tty = _Stream(tty=True)
    announce_generated_tokens(settings, {"scim": "tok-s", "admin": "tok-a"}, tty)
    assert "tok-s" in tty.text and "tok-a" in tty.text
    assert "SEAT_AGENT_ADMIN_TOKEN" in tty.text
    assert not (tmp_path / GENERATED_TOKENS_FILE).exists()


def test_generated_tokens_go_to_a_private_file_when_stderr_is_a_log(tmp_path, caplog):
    import logging

    from agent.cli import GENERATED_TOKENS_FILE, announce_generated_tokens

    caplog.set_level(logging.INFO)
    settings = settings_from_mapping({"database": {"url": f"sqlite:///{tmp_path}/a.db"}})
    path = tmp_path / GENERATED_TOKENS_FILE
    path.write_text("stale\n")
    path.chmod(0o644)
    log = _Stream(tty=False)
    announce_generated_tokens(settings, {"scim": "tok-s", "admin": "tok-a"}, log)
    assert log.text == ""
    assert path.stat().st_mode & 0o777 == 0o600
    content = path.read_text()
    assert "SEAT_AGENT_SCIM_TOKEN=tok-s\n" in content
    assert "SEAT_AGENT_ADMIN_TOKEN=tok-a\n" in content and "stale" not in content
    assert str(path) in caplog.text
    assert "tok-s" not in caplog.text and "tok-a" not in caplog.text


def test_first_start_under_a_service_manager_writes_tokens_to_a_file(tmp_path):
    """`seat-agent serve` without tokens, stderr a file (as under systemd), JSON logs: every
    log line stays JSON, no token is in the log, the file holds working tokens."""
    import json
    import os

    import requests

    from agent.cli import GENERATED_TOKENS_FILE
    from tests.conftest import LiveServer, free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("SEAT_AGENT_")}
    port = free_port()
    config = tmp_path / "server.toml"
    config.write_text(
        "\n".join(
            [
                "[server]",
                f"port = {port}",
                "workers = 1",
                "json_logs = true",
                "[database]",
                f'url = "sqlite:///{tmp_path}/data/seat-agent.db"',
                "[scheduler]",
                "embedded = false",
            ]
        )
        + "\n"
    )
    (tmp_path / "data").mkdir()
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        server = LiveServer(config, port, tmp_path / "server.log")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        path = tmp_path / "data" / GENERATED_TOKENS_FILE
        assert path.stat().st_mode & 0o777 == 0o600
        tokens = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        scim = tokens["SEAT_AGENT_SCIM_TOKEN"]
        r = requests.get(
            server.url + "/scim/v2/Users", headers={"Authorization": f"Bearer {scim}"}, timeout=10
        )
        assert r.status_code == 200
    finally:
        server.stop()
    log = (tmp_path / "server.log").read_text()
    records = [json.loads(line) for line in log.splitlines() if line.strip()]  # all JSON
    assert any(str(path) in r["message"] for r in records)
    for token in tokens.values():
        assert token not in log
