"""Keyset pages of users and groups for cursor paging (RFC 9865, agent.scim.cursor): plain
functions on a StoreTx.

A page is ``seq > after [AND filter] ORDER BY seq LIMIT count + 1`` (or ``seq < before``
walked backwards): a range of the seq index from the cursor's position, so a page costs the
same at any depth (a filter walks from there to its next ``count`` matches). The extra row says
whether a further page exists in the direction walked. Users are found by a narrow walk of the
keys, then read by key with their groups (as ``StoreTx.list_users`` reads pages).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, func, select

from agent.storage.groups import _group_from_row
from agent.storage.records import GroupRecord, UserRecord
from agent.storage.rows import WITH_GROUPS, user_records
from agent.storage.store import StoreTx
from agent.storage.tables import groups, users
from agent.storage.user_pages import _RECORDS_BY_SEQS
from agent.storage.users import USERS_TOTAL

T = TypeVar("T")


@dataclass(frozen=True)
class CursorPage(Generic[T]):
    """Up to ``count`` records in seq order with their seqs; ``more``: a further record exists
    past them in the direction walked; ``total``: every match of the query (totalResults)."""

    items: list[T]
    seqs: list[int]
    more: bool
    total: int


def _keys(
    seq_column: Any,
    where: ColumnElement[bool] | None,
    after: int | None,
    before: int | None,
    limit: int,
) -> Select[Any]:
    q = select(seq_column)
    if where is not None:
        q = q.where(where)
    if before is not None:
        return q.where(seq_column < before).order_by(seq_column.desc()).limit(limit + 1)
    return q.where(seq_column > (after or 0)).order_by(seq_column).limit(limit + 1)


def user_page(
    tx: StoreTx,
    where: ColumnElement[bool] | None,
    *,
    after: int | None = None,
    before: int | None = None,
    count: int,
) -> CursorPage[UserRecord]:
    """Users after seq ``after`` (or before seq ``before``), matching ``where``."""
    keys = tx.conn.execute(_keys(users.c.seq, where, after, before, count))
    found = [int(row[0]) for row in keys]
    more = len(found) > count
    seqs = sorted(found[:count])
    records: list[UserRecord] = []
    if seqs:
        if tx.is_postgres:
            rows: Sequence[Any] = tx.conn.execute(_RECORDS_BY_SEQS, {"seqs": seqs}).all()
            by_seq = {r.seq: r for r in rows}
            rows = [by_seq[s] for s in seqs if s in by_seq]  # gone since the keys: left out
        else:  # one read transaction: the rows of the keys just read
            q = select(*WITH_GROUPS[False]).where(users.c.seq.in_(seqs)).order_by(users.c.seq)
            rows = tx.conn.execute(q).all()
        records = user_records(rows)
        tx.users.attach_queue_positions(records)
    total_q = USERS_TOTAL if where is None else _count(users, where)
    return CursorPage(records, seqs, more, int(tx.conn.execute(total_q).scalar_one()))


def group_page(
    tx: StoreTx,
    where: ColumnElement[bool] | None,
    *,
    after: int | None = None,
    before: int | None = None,
    count: int,
    with_members: bool,
) -> CursorPage[GroupRecord]:
    """Groups after seq ``after`` (or before seq ``before``), matching ``where``."""
    keys = _keys(groups.c.seq, where, after, before, count)
    rows = tx.conn.execute(keys.with_only_columns(*groups.c)).all()
    more = len(rows) > count
    rows = sorted(rows[:count], key=lambda r: r.seq)
    records = [_group_from_row(r) for r in rows]
    if with_members:
        tx.groups._attach_members(records)
    total = int(tx.conn.execute(_count(groups, where)).scalar_one())
    return CursorPage(records, [r.seq for r in rows], more, total)


def _count(table: Any, where: ColumnElement[bool] | None) -> Select[Any]:
    """Every match (totalResults): COUNT(*) of the filter, as an index page counts it."""
    q = select(func.count()).select_from(table)
    return q.where(where) if where is not None else q
