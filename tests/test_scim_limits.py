"""Hostile or oversized SCIM requests get a 4xx SCIM error and change nothing (RFC 7644 §3.12):
very wide filters, deeply nested or non-JSON bodies, huge paging numbers, chunked bodies."""

from __future__ import annotations

import io
import json

import pytest
from conftest import SCIM_TOKEN, Api, make_settings
from test_scim_protocol import (
    SCIM_JSON,
    USER,
    assert_scim_error,
    count_rows,
    create,
    custom_api,  # noqa: F401 - fixture
    raw,
)

from agent.scim import filter as scim_filter
from agent.storage.tables import users


def _or_filter(n: int, term: str = 'userName eq "u{}@example.com"') -> str:
    return " or ".join(term.format(i) for i in range(n))


def test_filter_with_more_than_max_comparisons_is_400_invalid_filter(api):
    for i in range(3):
        create(api, f"u{i}@example.com")
    at_limit = api.scim("GET", "/Users?count=0&filter=" + _or_filter(scim_filter.MAX_COMPARISONS))
    assert at_limit.status_code == 200, at_limit.get_json()
    assert at_limit.get_json()["totalResults"] == 3
    for text in (
        _or_filter(scim_filter.MAX_COMPARISONS + 1),
        _or_filter(500),
        _or_filter(101, 'emails[type eq "work" and value eq "u{}"]'),
        _or_filter(201, 'not (title pr) and userName sw "u{}"'),
    ):
        body = assert_scim_error(api.scim("GET", "/Users?filter=" + text), 400, "invalidFilter")
        assert str(scim_filter.MAX_COMPARISONS) in body["detail"]
    group_filter = _or_filter(300, 'displayName eq "g{}"')
    assert_scim_error(api.scim("GET", "/Groups?filter=" + group_filter), 400, "invalidFilter")


def test_filter_the_database_refuses_as_too_complex_is_400_not_503(tmp_path, clock, monkeypatch):
    """Even past the parse-time bound, SQLite's "Expression tree is too large" is the client's
    filter, not a database outage: 400 invalidFilter, no Retry-After. (SQLite only: PostgreSQL
    accepts this filter.)"""
    from agent.app import create_app

    app = create_app(make_settings(f"sqlite:///{tmp_path}/wide.db"), clock=clock)
    try:
        api = Api(app)
        monkeypatch.setattr(scim_filter, "MAX_COMPARISONS", 100_000)
        create(api, "u1@example.com")
        r = api.scim("GET", "/Users?filter=" + _or_filter(3000))
        body = assert_scim_error(r, 400, "invalidFilter")
        assert "Retry-After" not in r.headers
        assert "too complex" in body["detail"]
    finally:
        app.extensions["seat_agent"].store.dispose()


@pytest.mark.parametrize(
    "body",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"userName": "deep@example.com", "urn:x:y": ' + "[" * 900 + "]" * 900 + "}",
        '{"userName": "nan@example.com", "nickName": NaN}',
        '{"userName": "inf@example.com", "nickName": Infinity}',
        '{"userName": "inf@example.com", "nickName": -Infinity}',
    ],
)
def test_deep_or_non_standard_json_is_400_invalid_syntax(api, body):
    assert_scim_error(raw(api, "POST", "/Users", body, SCIM_JSON), 400, "invalidSyntax")
    assert count_rows(api, users) == 0


def test_deeply_nested_patch_value_is_400_and_changes_nothing(api):
    uid = create(api, "patched@example.com", displayName="Before")["id"]
    deep = "[" * 980 + "]" * 980
    body = (
        '{"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": '
        '[{"op": "add", "path": "urn:x:foo", "value": ' + deep + "}]}"
    )
    assert_scim_error(raw(api, "PATCH", f"/Users/{uid}", body, SCIM_JSON), 400, "invalidSyntax")
    with api.agent.store.read() as tx:
        record = tx.users.get(uid)
    assert record.version == 1
    assert "urn:x:foo" not in json.dumps(record.resource)


@pytest.mark.parametrize("resource", ["Users", "Groups"])
def test_huge_start_index_and_count_are_clamped(api, resource):
    create(api, "one@example.com")
    api.scim("POST", "/Groups", {"displayName": "G"})
    huge = "99999999999999999999"
    past = api.scim("GET", f"/{resource}?startIndex={huge}").get_json()
    assert past["totalResults"] == 1
    assert past["Resources"] == []
    assert past["itemsPerPage"] == 0
    whole = api.scim("GET", f"/{resource}?count={huge}").get_json()
    assert whole["totalResults"] == 1 and len(whole["Resources"]) == 1
    negative = api.scim("GET", f"/{resource}?startIndex=-{huge}&count=-{huge}").get_json()
    assert negative["startIndex"] == 1 and negative["Resources"] == []
    searched = api.scim(
        "POST", f"/{resource}/.search", {"startIndex": int(huge), "count": int(huge)}
    ).get_json()
    assert searched["totalResults"] == 1 and searched["Resources"] == []


def _chunked_post(api, body: bytes):
    return api.client.post(
        "/scim/v2/Users",
        input_stream=io.BytesIO(body),
        headers={
            "Authorization": f"Bearer {SCIM_TOKEN}",
            "Transfer-Encoding": "chunked",
            "Content-Type": SCIM_JSON,
        },
        environ_overrides={"wsgi.input_terminated": True},
    )


def test_chunked_body_over_max_body_bytes_is_413(custom_api):  # noqa: F811
    api = custom_api(server={"max_body_bytes": 2048})
    big = json.dumps({"schemas": [USER], "userName": "big@example.com", "nickName": "x" * 3000})
    assert_scim_error(_chunked_post(api, big.encode()), 413)
    assert count_rows(api, users) == 0
    small = json.dumps({"schemas": [USER], "userName": "small@example.com"})
    r = _chunked_post(api, small.encode())
    assert r.status_code == 201, r.get_json()
    assert count_rows(api, users) == 1
