"""How many SQL statements a SCIM write sends, on both databases (docs/performance.md, "Writes").

Every statement is a round trip to PostgreSQL and is run while the seat-pool lock is held, so
each one added to a create, PATCH, PUT or DELETE lengthens every other writer's wait. These
are upper bounds: a change that adds a statement to a write has to raise one, knowingly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from sqlalchemy import event

from agent.storage.write_behind import WriteBehind

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

# Per request: statements on SQLite (BEGIN and COMMIT not counted); on PostgreSQL exchanges
# with the server (a statement sent alone, or a pipeline of them), BEGIN and COMMIT included.
# Before the writes were queued (docs/performance.md, "Writes"): 10, 7, 3, 10 and 8
# statements, each its own exchange on PostgreSQL, plus BEGIN and COMMIT.
MOST = {
    # A create and a delete also count the user in its bucket of the user order (queued).
    "sqlite": {"create": 6, "deactivate": 5, "put": 3, "delete holder": 7, "delete": 5},
    "postgresql": {"create": 2, "deactivate": 2, "put": 2, "delete holder": 2, "delete": 2},
}


@dataclass
class _Sent:
    statements: int = 0  # through SQLAlchemy, and queued ones sent by write_behind
    exchanges: int = 0  # PostgreSQL round trips besides BEGIN
    committed_in_pipeline: bool = False

    def cost(self, dialect: str) -> int:
        if dialect == "postgresql":
            return self.exchanges + (0 if self.committed_in_pipeline else 1)
        return self.statements


@contextmanager
def _counted(api, monkeypatch) -> Iterator[_Sent]:
    engine = api.agent.store.engine
    sent = _Sent()

    def count(_conn, _cursor, _statement, _params, _context, _many) -> None:
        sent.statements += 1
        sent.exchanges += 1

    fetch = WriteBehind.fetch

    def counted_fetch(self, queries, commit=False, begin=False):
        if self.queue or queries:
            sent.statements += len(self.queue) + len(queries)
            sent.exchanges += 1
            sent.committed_in_pipeline = commit and self.dialect.name == "postgresql"
        return fetch(self, queries, commit, begin)

    monkeypatch.setattr(WriteBehind, "fetch", counted_fetch)
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", count)
        monkeypatch.setattr(WriteBehind, "fetch", fetch)


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


def test_create_patch_put_delete_stay_within_their_statements(seeded, monkeypatch):
    api = seeded
    dialect = api.agent.store.engine.dialect.name
    most = MOST[dialect]
    with _counted(api, monkeypatch) as sent:
        r = api.scim("POST", "/Users", _user("new@example.com"))
    assert r.status_code == 201
    assert sent.cost(dialect) <= most["create"], sent
    uid = r.get_json()["id"]

    with _counted(api, monkeypatch) as sent:
        body = {"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": False}}]}
        r = api.scim("PATCH", f"/Users/{uid}", body)
    assert r.status_code == 200 and r.get_json()["active"] is False
    assert sent.cost(dialect) <= most["deactivate"], sent

    with _counted(api, monkeypatch) as sent:
        r = api.scim("PUT", f"/Users/{uid}", {**_user("new@example.com", False), "title": "CTO"})
    assert r.status_code == 200 and r.get_json()["title"] == "CTO"
    assert sent.cost(dialect) <= most["put"], sent

    with _counted(api, monkeypatch) as sent:
        assert api.scim("DELETE", f"/Users/{uid}").status_code == 204
    assert sent.cost(dialect) <= most["delete"], sent

    holder = api.scim("POST", "/Users", _user("holder@example.com")).get_json()["id"]
    with _counted(api, monkeypatch) as sent:
        assert api.scim("DELETE", f"/Users/{holder}").status_code == 204
    assert sent.cost(dialect) <= most["delete holder"], sent
    assert api.scim("GET", f"/Users/{holder}").status_code == 404
    seats = api.admin("GET", "/seats").get_json()
    assert seats["consumed"] == 20  # the seeded users; the holder's seat came back


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


def _tallies(api) -> dict[str, int]:
    """Rows of every table a create writes, and the seat pool's counts."""
    from sqlalchemy import text

    with api.agent.store.engine.connect() as conn:
        tables = ("users", "user_values", "seat_ledger", "outbox", "user_order_buckets")
        counts = {t: conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one() for t in tables}
        counted = conn.execute(text("SELECT COALESCE(SUM(users), 0) FROM user_order_buckets"))
        counts["bucket total"] = counted.scalar_one()
        pool = conn.execute(text("SELECT consumed, users_total FROM seat_pool")).one()
        counts["consumed"], counts["users_total"] = pool
    return counts


@pytest.mark.parametrize("on_full", ["refuse", "queue"])
def test_a_taken_username_found_at_commit_changes_nothing(make_api, monkeypatch, on_full):
    """The insert goes with the COMMIT (PostgreSQL: one exchange after the lock's), so a taken
    userName is found there: still a 409, and the seat grant, its ledger entry, the outbox
    row, the user count and the bucket count queued with it are all rolled back. With the
    seats full and a queue, the create's queue position is read before the commit, which
    sends the insert earlier: the same answer."""
    api = make_api(seats=3 if on_full == "refuse" else 2, on_full=on_full)
    for name in ("a@example.com", "b@example.com"):
        assert api.scim("POST", "/Users", _user(name)).status_code == 201
    if on_full == "queue":
        assert api.scim("POST", "/Users", _user("c@example.com")).status_code == 201
    before = _tallies(api)
    with _counted(api, monkeypatch) as sent:
        r = api.scim("POST", "/Users", _user("B@Example.com"))
    assert r.status_code == 409, r.get_json()
    assert r.get_json()["scimType"] == "uniqueness"
    assert "B@Example.com" in r.get_json()["detail"]
    assert _tallies(api) == before
    if api.agent.store.engine.dialect.name == "postgresql" and on_full == "refuse":
        assert sent.committed_in_pipeline  # found by the COMMIT's exchange
    # The connection is usable again: the next create goes through.
    assert api.scim("POST", "/Users", _user("d@example.com")).status_code == 201
