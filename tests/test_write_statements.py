"""How many SQL statements a SCIM write sends, on both databases (docs/performance.md, "Writes").

Every statement is a round trip to PostgreSQL and is run while the seat-pool lock is held, so
each one added to a create, PATCH, PUT or DELETE lengthens every other writer's wait. These
are upper bounds: a change that adds a statement to a write has to raise one, knowingly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

# Statements sent through the driver per request (BEGIN and COMMIT not counted).
MOST = {
    "create": 9,
    "deactivate": 7,
    "put": 3,
    "delete holder": 10,
    "delete": 8,
}


@contextmanager
def _counted(api) -> Iterator[list[str]]:
    engine = api.agent.store.engine
    sent: list[str] = []

    def count(_conn, _cursor, statement, _params, _context, _many) -> None:
        sent.append(" ".join(statement.split())[:120])

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", count)


def _user(name: str, active: bool = True) -> dict:
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "name": {"givenName": "Ada", "familyName": "Lovelace"},
        "emails": [{"value": name, "type": "work", "primary": True}],
        "active": active,
    }


@pytest.fixture
def seeded(api):
    for i in range(20):
        assert api.scim("POST", "/Users", _user(f"seed{i}@example.com")).status_code == 201
    return api


def test_create_patch_put_delete_stay_within_their_statements(seeded):
    api = seeded
    with _counted(api) as sent:
        r = api.scim("POST", "/Users", _user("new@example.com"))
    assert r.status_code == 201
    assert len(sent) <= MOST["create"], sent
    uid = r.get_json()["id"]

    sent.clear()
    with _counted(api) as sent:
        body = {"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": False}}]}
        r = api.scim("PATCH", f"/Users/{uid}", body)
    assert r.status_code == 200 and r.get_json()["active"] is False
    assert len(sent) <= MOST["deactivate"], sent

    with _counted(api) as sent:
        r = api.scim("PUT", f"/Users/{uid}", {**_user("new@example.com", False), "title": "CTO"})
    assert r.status_code == 200 and r.get_json()["title"] == "CTO"
    assert len(sent) <= MOST["put"], sent

    with _counted(api) as sent:
        assert api.scim("DELETE", f"/Users/{uid}").status_code == 204
    assert len(sent) <= MOST["delete"], sent

    holder = api.scim("POST", "/Users", _user("holder@example.com")).get_json()["id"]
    with _counted(api) as sent:
        assert api.scim("DELETE", f"/Users/{holder}").status_code == 204
    assert len(sent) <= MOST["delete holder"], sent
    assert api.scim("GET", f"/Users/{holder}").status_code == 404


def test_a_taken_username_is_still_a_409_without_a_lookup_first(seeded):
    r = seeded.scim("POST", "/Users", _user("SEED3@example.com"))
    assert r.status_code == 409
    assert r.get_json()["scimType"] == "uniqueness"


def test_a_taken_username_is_a_409_even_when_no_seat_is_free(make_api):
    api = make_api(seats=1, on_full="refuse")
    assert api.scim("POST", "/Users", _user("only@example.com")).status_code == 201
    r = api.scim("POST", "/Users", _user("Only@example.com"))
    assert r.status_code == 409, r.get_json()
    assert api.scim("POST", "/Users", _user("other@example.com")).status_code == 403
