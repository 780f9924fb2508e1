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
