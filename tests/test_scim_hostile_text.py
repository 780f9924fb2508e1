"""Text no database can store (a lone surrogate, U+0000) is refused where it enters, with the
same 400 on SQLite and PostgreSQL, naming the attribute; ids in paths are 404; /admin bodies
get the SCIM guards; database errors are logged without request data."""

from __future__ import annotations

import json
import logging
from urllib.parse import quote

import pytest
from conftest import ADMIN_TOKEN, SCIM_TOKEN
from sqlalchemy import text
from test_scim_protocol import (
    PATCH,
    SCIM_JSON,
    USER,
    assert_scim_error,
    count_rows,
    create,
    raw,
)

from agent.storage.tables import groups, user_values, users

SURROGATE = "\ud800"
NUL = "\x00"


def _json(body: object) -> str:
    """JSON text as a client writes it: a lone surrogate becomes the escape ``\\ud800``."""
    return json.dumps(body)


def _escaped(body: object, escape: str) -> str:
    """``body`` as JSON with ``BAD`` replaced by the JSON escape ``escape`` (``\\u0000``)."""
    return json.dumps(body).replace("BAD", escape)


@pytest.mark.parametrize("bad", [SURROGATE, NUL, "\udfff tail", "mid\x00dle"])
@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"userName": "u{bad}@example.com"}, "userName"),
        ({"userName": "ok@example.com", "displayName": "D{bad}"}, "displayName"),
        ({"userName": "ok@example.com", "emails": [{"value": "a{bad}@x.com"}]}, "emails[0].value"),
        ({"userName": "ok@example.com", "name": {"givenName": "{bad}"}}, "name.givenName"),
        ({"userName": "ok@example.com", "urn:x:custom": {"k": ["{bad}"]}}, "urn:x:custom.k[0]"),
    ],
)
def test_unstorable_text_in_a_user_body_is_400_naming_the_attribute(api, body, where, bad):
    text_body = _json(body).replace("{bad}", json.dumps(bad)[1:-1])
    r = raw(api, "POST", "/Users", text_body, SCIM_JSON)
    detail = assert_scim_error(r, 400, "invalidValue")["detail"]
    assert f"'{where}'" in detail
    assert "cannot be stored" in detail
    assert count_rows(api, users) == 0


def test_unstorable_text_in_a_member_name_is_400(api):
    r = raw(api, "POST", "/Users", '{"userName": "k@example.com", "\\u0000x": 1}', SCIM_JSON)
    assert "name" in assert_scim_error(r, 400, "invalidValue")["detail"]
    assert count_rows(api, users) == 0


@pytest.mark.parametrize("bad", ["\\ud800", "\\u0000"])
def test_unstorable_text_in_put_patch_and_groups_changes_nothing(api, bad):
    user = create(api, "keep@example.com", title="Before")
    path = f"/Users/{user['id']}"
    put = _escaped({"schemas": [USER], "userName": "keep@example.com", "title": "xBAD"}, bad)
    assert_scim_error(raw(api, "PUT", path, put, SCIM_JSON), 400, "invalidValue")
    patch = _escaped(
        {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "title", "value": "BAD"}]},
        bad,
    )
    assert_scim_error(raw(api, "PATCH", path, patch, SCIM_JSON), 400, "invalidValue")
    # The escape inside a PATCH value filter decodes to the same text: refused too.
    patch_filter = {
        "schemas": [PATCH],
        "Operations": [
            {"op": "replace", "path": f'emails[value eq "{bad}"].type', "value": "work"}
        ],
    }
    assert_scim_error(api.scim("PATCH", path, patch_filter), 400, "invalidValue")
    assert api.scim("GET", path).get_json()["title"] == "Before"
    assert count_rows(api, user_values) == 0
    group = _escaped({"displayName": "gBAD"}, bad)
    assert_scim_error(raw(api, "POST", "/Groups", group, SCIM_JSON), 400, "invalidValue")
    assert count_rows(api, groups) == 0


@pytest.mark.parametrize(
    "query",
    [
        "filter=" + quote('userName eq "nul\x00x"'),
        "filter=" + quote('userName eq "x\\u0000"'),
        "filter=" + quote('userName eq "sur\\ud800"'),
        "filter=" + quote('emails[value eq "sur\\udfff"]'),
        "filter=" + quote('displayName co "\\u0000"'),
        "sortBy=" + quote("userName\x00"),
        "attributes=" + quote("userName\x00"),
    ],
)
def test_unstorable_text_in_a_query_is_400(api, query):
    create(api, "q@example.com")
    body = assert_scim_error(api.scim("GET", f"/Users?{query}"), 400, "invalidValue")
    assert "cannot be stored" in body["detail"]


@pytest.mark.parametrize("bad", ["\\ud800", "\\u0000"])
def test_unstorable_text_in_a_search_request_is_400(api, bad):
    for path in ("/Users/.search", "/.search", "/Groups/.search"):
        body = _escaped({"filter": 'displayName eq "xBAD"'}, bad)
        assert_scim_error(raw(api, "POST", path, body, SCIM_JSON), 400, "invalidValue")
        # The filter text itself holds the escape (``\\ud800``), which its string literal decodes.
        escaped = json.dumps({"filter": 'displayName eq "x' + bad + '"'})
        assert_scim_error(raw(api, "POST", path, escaped, SCIM_JSON), 400, "invalidValue")


@pytest.mark.parametrize("resource", ["Users", "Groups"])
@pytest.mark.parametrize("bad_id", ["%00", "abc%00def", "%ED%A0%80", "x" * 300])
def test_an_id_no_database_can_hold_is_404(api, resource, bad_id):
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        r = api.client.open(
            f"/scim/v2/{resource}/{bad_id}",
            method=method,
            headers={"Authorization": f"Bearer {SCIM_TOKEN}"},
            json={"schemas": [PATCH], "Operations": [{"op": "remove", "path": "title"}]}
            if method == "PATCH"
            else ({"userName": "a", "displayName": "a"} if method == "PUT" else None),
            content_type=SCIM_JSON if method in ("PUT", "PATCH") else None,
        )
        assert_scim_error(r, 404)


def test_admin_ids_and_queries_with_unstorable_text(api):
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for path in ("/admin/users/%00", "/admin/users/x%00/reevaluate", "/admin/reductions/%00"):
        method = "POST" if path.endswith("reevaluate") else "GET"
        r = api.client.open(path, method=method, headers=headers)
        assert r.status_code == 404, (path, r.get_data(as_text=True))
        assert "not found" in r.get_json()["error"]
    r = api.client.get("/admin/ledger?since=" + quote("2026\x00"), headers=headers)
    assert r.status_code == 400 and "cannot be stored" in r.get_json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        "[" * 5000 + "]" * 5000,
        '{"seats": ' + "[" * 900 + "]" * 900 + "}",
        '{"seats": NaN}',
        '{"seats": 5, "\\ud800": 1}',
    ],
)
def test_admin_bodies_get_the_scim_guards(api, body):
    before = api.admin("GET", "/seats").get_json()
    r = api.client.put(
        "/admin/licenses",
        data=body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert r.status_code == 400, r.get_data(as_text=True)
    assert r.get_json()["error"]
    assert api.admin("GET", "/seats").get_json() == before


def test_admin_body_over_max_body_bytes_is_413(api):
    big = '{"seats": 5, "pad": "' + "x" * (2 * 1024 * 1024) + '"}'
    r = api.client.put(
        "/admin/licenses",
        data=big,
        content_type="application/json",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert r.status_code == 413 and r.get_json()["error"]


def test_other_characters_are_stored_and_returned_as_sent(api):
    odd = "\x01\x7f\u200b\ufffe\uffff\U0010ffff é 😀"
    user = create(api, "odd" + odd + "@example.com", displayName=odd)
    got = api.scim("GET", f"/Users/{user['id']}").get_json()
    assert got["displayName"] == odd and got["userName"] == user["userName"]
    r = api.scim("GET", "/Users?filter=" + quote(f'displayName eq "{odd}"'))
    assert r.get_json()["totalResults"] == 1


# -- logs --------------------------------------------------------------------------------------


def _break_inserts(api) -> None:
    """Make storing an e-mail fail inside the database, with a message of our own (not an
    outage, nor a uniqueness conflict: the error is a 500, which is logged)."""
    with api.agent.store.engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON user_values "
                    "BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'refused by test trigger'; END $$"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON user_values "
                    "FOR EACH ROW EXECUTE FUNCTION refuse()"
                )
            )


def _break_reads(api) -> None:
    with api.agent.store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE users RENAME COLUMN user_name_ci TO user_name_ci_gone"))


def test_a_database_error_is_logged_without_request_data(api, caplog):
    secret_user = "secret-person-4711@example.com"
    secret_filter = "secret-filter-0815"
    _break_inserts(api)
    caplog.set_level(logging.DEBUG)
    r = api.scim(
        "POST",
        "/Users",
        {"schemas": [USER], "userName": secret_user, "emails": [{"value": secret_user}]},
    )
    body = assert_scim_error(r, 500)
    assert "changed nothing" in body["detail"]
    assert count_rows(api, users) == 0
    _break_reads(api)
    r = api.scim("GET", f'/Users?filter=userName eq "{secret_filter}"')
    assert r.status_code in (500, 503), r.get_data(as_text=True)
    logged = "\n".join(
        record.getMessage() + (logging.Formatter().formatException(record.exc_info) or "")
        if record.exc_info
        else record.getMessage()
        for record in caplog.records
    )
    assert "database error" in logged or "database unavailable" in logged
    for secret in (secret_user, secret_filter, SCIM_TOKEN, ADMIN_TOKEN):
        assert secret not in logged
    assert "parameters:" not in logged


def test_engines_hide_statement_parameters(db_url):
    from sqlalchemy.exc import DBAPIError

    from agent.storage.engine import make_engine

    engine = make_engine(db_url)
    try:
        with pytest.raises(DBAPIError) as caught, engine.connect() as conn:
            conn.execute(text("SELECT * FROM no_such_table WHERE x = :v"), {"v": "secret-42"})
        assert "secret-42" not in str(caught.value)
    finally:
        engine.dispose()
