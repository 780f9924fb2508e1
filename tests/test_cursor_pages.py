"""Keyset pages of cursor paging (agent.storage.cursor_pages), property-based on SQLite and
PostgreSQL: whatever users are created and deleted between the pages of a walk, the walk
returns every user that existed for all of it exactly once, in creation order, and nothing
twice."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from conftest import bounded_examples
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from agent.storage import cursor_pages
from agent.storage.records import SeatState
from agent.storage.store import Store
from agent.storage.tables import users

NOW = datetime(2026, 11, 2, tzinfo=UTC)
BOUNDED = bounded_examples(20, shared_store=True)
_ids = itertools.count()

# Between two pages: create some users, delete users at some positions of the current order.
_changes = st.lists(
    st.tuples(st.integers(0, 4), st.lists(st.integers(0, 500), max_size=4)), max_size=8
)


@BOUNDED
@given(count=st.integers(1, 7), changes=_changes, backward=st.booleans())
def test_a_walk_returns_each_lasting_user_once_whatever_changes_between_pages(
    db_url, count, changes, backward
):
    store = Store.from_url(db_url)
    try:
        store.upgrade(10_000, NOW)
        with store.write() as tx:
            for _ in range(20):
                uid = f"s{next(_ids)}"
                tx.users.insert(uid, {"userName": uid, "active": True}, SeatState(), NOW)
        with store.read() as tx:
            at_start = _order(tx)
        seen: list[str] = []
        deleted: set[str] = set()
        position: int | None = None
        step = iter(changes)
        while True:
            with store.read() as tx:
                if backward:
                    page = cursor_pages.user_page(tx, None, before=position, count=count)
                    if position is None:  # a backward walk starts after the last user
                        page = cursor_pages.user_page(tx, None, before=2**31 - 1, count=count)
                else:
                    page = cursor_pages.user_page(tx, None, after=position, count=count)
            assert len(page.items) <= count and page.seqs == sorted(page.seqs)
            ids = [r.id for r in page.items]
            seen = ids + seen if backward else seen + ids
            if not page.more:
                break
            position = page.seqs[0] if backward else page.seqs[-1]
            created, gone = next(step, (0, []))
            with store.write() as tx:
                for _ in range(created):
                    uid = f"n{next(_ids)}"
                    tx.users.insert(uid, {"userName": uid, "active": True}, SeatState(), NOW)
                present = _order(tx)
                for i in gone:
                    if present:
                        victim = present.pop(i % len(present))
                        tx.users.delete(victim)
                        deleted.add(victim)
        assert len(seen) == len(set(seen))
        lasting = [u for u in at_start if u not in deleted]
        assert [u for u in seen if u in lasting] == lasting  # each once, in creation order
        assert not [u for u in seen if u in deleted and u not in at_start]
    finally:
        store.dispose()


def _order(tx) -> list[str]:
    return list(tx.conn.execute(select(users.c.id).order_by(users.c.seq)).scalars())
