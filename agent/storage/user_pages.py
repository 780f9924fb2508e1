"""Pages of users for the SCIM list (RFC 7644 §3.4.2.4): an offset walk over an index for
the page's keys, then its rows with their groups; and the IdPs' ``attribute eq value``
lookups, their statements built once per attribute."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Integer, Select, any_, bindparam, func, select
from sqlalchemy.dialects import postgresql

from agent.storage import user_order
from agent.storage.filter_sql import LOOKUP_VALUE, Lookup
from agent.storage.records import Page, UserRecord
from agent.storage.rows import WITH_GROUPS, user_records
from agent.storage.tables import users
from agent.storage.transaction import Transaction
from agent.storage.users import USERS_TOTAL, Users

# PostgreSQL: one array parameter, so the statement is the same whatever the page size.
_RECORDS_BY_SEQS = select(users.c.seq, *WITH_GROUPS[True]).where(
    users.c.seq == any_(bindparam("seqs", type_=postgresql.ARRAY(Integer)))
)


def _page_rows(
    keys: Select[tuple[int]], order: Sequence[ColumnElement[Any]], is_postgres: bool
) -> Select[Any]:
    """One statement for the rows (groups included) a page's key walk selects, in its order.
    On SQLite ``seq IN (keys)``; on PostgreSQL the walk itself with the record columns, used
    for a first page only (see ``UserPages.page``)."""
    if is_postgres:
        return keys.with_only_columns(users.c.seq, *WITH_GROUPS[True])
    in_page = users.c.seq.in_(keys.correlate(None).scalar_subquery())
    return select(*WITH_GROUPS[False]).where(in_page).order_by(*order, users.c.seq)


# SQLite: a page found by the counted buckets, its rows in one statement (built once).
_BUCKET_PAGE_ROWS = _page_rows(user_order.PAGE_KEYS, [], False)


@dataclass(frozen=True)
class _LookupQueries:
    """The statements of ``UserPages.lookup`` for one attribute and dialect."""

    keys: Select[tuple[int]]
    first_rows: Select[Any]  # the page's rows in one statement (PostgreSQL: first page only)
    matches: Select[Any]


_LOOKUP_QUERIES: dict[tuple[str, bool], _LookupQueries] = {}


def _lookup_queries(lookup: Lookup, is_postgres: bool) -> _LookupQueries:
    key = (lookup.attribute, is_postgres)
    found = _LOOKUP_QUERIES.get(key)
    if found is not None:
        return found
    keys = (
        select(users.c.seq)
        .where(lookup.where)
        .order_by(users.c.seq)
        .offset(bindparam("page_offset", type_=Integer()))
        .limit(bindparam("page_limit", type_=Integer()))
    )
    rows = _page_rows(keys, [], is_postgres)
    matches = select(func.count()).select_from(users).where(lookup.where)
    return _LOOKUP_QUERIES.setdefault(key, _LookupQueries(keys, rows, matches))


class UserPages:
    """Pages of users in one transaction."""

    def __init__(self, tx: Transaction, users: Users):
        self._users = users
        self.conn = tx.conn
        self.is_postgres = tx.is_postgres

    def page(
        self,
        where: ColumnElement[bool] | None,
        order: Sequence[ColumnElement[Any]],
        start_index: int,
        count: int,
    ) -> Page:
        """One page in (order, seq) order, and the number of matches (RFC 7644 §3.4.2.4).

        The page's keys come from a narrow walk over an index, and only those rows are read.
        On SQLite in one statement, ``seq IN (subquery)``. On PostgreSQL in two, the keys and
        then ``seq = ANY(:keys)``: without planner statistics (a table before its first
        ANALYZE, or with autovacuum off) the one statement was planned as a nested loop over
        every user for each user, 2 s for one lookup at 3,000 users. A first page (a filter
        lookup) skips nothing, so PostgreSQL reads its rows directly, one statement.

        An unfiltered list reads the user total that every insert and delete keeps in
        seat_pool (no COUNT(*)), and a page past the first bucket of the user order starts at
        the bucket holding it (agent.storage.user_order), so no page walks more than a
        bucket. COUNT(*) is also skipped when the page itself shows where the results end (a
        filter lookup, the last page).
        """
        records: list[UserRecord] = []
        offset = start_index - 1
        total: int | None = None
        if where is None:
            total = int(self.conn.execute(USERS_TOTAL).scalar_one())
        if count > 0 and not (total is not None and offset >= total):
            one_statement = self._one_statement(offset)
            if total is not None and not order and offset >= user_order.BUCKET_SIZE:
                keys = user_order.PAGE_KEYS
                rows = _BUCKET_PAGE_ROWS if one_statement else None  # SQLite: one statement
                params = user_order.page_params(offset, count)
                records = self._page_records(keys, rows, False, params)
            else:
                keys = select(users.c.seq)
                if where is not None:
                    keys = keys.where(where)
                keys = keys.order_by(*order, users.c.seq).offset(offset).limit(count)
                rows = _page_rows(keys, order, self.is_postgres) if one_statement else None
                records = self._page_records(keys, rows, bool(order), {})

        def matching() -> Select[Any]:
            total_q = select(func.count()).select_from(users)
            return total_q.where(where) if where is not None else total_q

        return self._user_page(records, start_index, count, total, matching, {})

    def lookup(self, lookup: Lookup, start_index: int, count: int) -> Page:
        """``list_users(lookup.where, [], start_index, count)``, with statements built once
        per attribute and dialect (filter_sql.Lookup): the IdPs' ``userName eq`` costs one
        indexed probe and little Python around it."""
        q = _lookup_queries(lookup, self.is_postgres)
        offset = start_index - 1
        params = {LOOKUP_VALUE: lookup.value, "page_offset": offset, "page_limit": count}
        records: list[UserRecord] = []
        if count > 0:
            rows = q.first_rows if self._one_statement(offset) else None
            records = self._page_records(q.keys, rows, False, params)
        return self._user_page(records, start_index, count, None, lambda: q.matches, params)

    def _one_statement(self, offset: int) -> bool:
        """Whether a page at ``offset`` is read in one statement (``_page_rows``): always on
        SQLite; on PostgreSQL only a first page, past it the keys and then the rows."""
        return offset == 0 or not self.is_postgres

    def _page_records(
        self,
        keys: Select[tuple[int]],
        rows_statement: Select[Any] | None,
        ordered: bool,
        params: Mapping[str, Any],
    ) -> list[UserRecord]:
        if rows_statement is not None:
            rows: Sequence[Any] = self.conn.execute(rows_statement, params).all()
        else:
            seqs = list(self.conn.execute(keys, params).scalars())
            if not ordered:
                seqs.sort()  # an unsorted page is in seq order
            place = {seq: i for i, seq in enumerate(seqs)}
            found: Iterable[Any] = (
                self.conn.execute(_RECORDS_BY_SEQS, {"seqs": seqs}).all() if seqs else ()
            )
            rows = sorted(found, key=lambda r: place[r.seq])
        return user_records(rows)

    def _user_page(
        self,
        records: list[UserRecord],
        start_index: int,
        count: int,
        total: int | None,
        matching: Callable[[], Select[Any]],
        params: Mapping[str, Any],
    ) -> Page:
        """The page of ``records``: its number of matches (counted only when the page does
        not show it) and queue positions."""
        offset = start_index - 1
        if len(records) < count and (records or start_index == 1):
            matches = offset + len(records)
        elif total is not None:
            matches = total
        else:
            matches = int(self.conn.execute(matching(), params).scalar_one())
        self._users.attach_queue_positions(records)
        return Page(matches, records)
