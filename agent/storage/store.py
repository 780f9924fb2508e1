"""The store: one class over SQLAlchemy Core for SQLite and PostgreSQL.

``Store.write()`` opens a write transaction that first takes the seat-pool lock
(BEGIN IMMEDIATE on SQLite, ``SELECT ... FOR UPDATE`` on PostgreSQL), so every seat decision
and the write it guards are one atomic step across workers and hosts. Methods return plain
dataclasses (agent.storage.records).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol, TypeVar

import psycopg
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Integer,
    Select,
    and_,
    any_,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    union,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, IntegrityError

from agent.domain.license import DirectoryState
from agent.scim.resources import MULTI_VALUED
from agent.storage import migrate
from agent.storage.engine import READ, WRITE, make_engine
from agent.storage.filter_sql import LOOKUP_VALUE, Lookup
from agent.storage.records import (
    GroupRecord,
    LedgerEntry,
    Page,
    PoolRow,
    SeatRow,
    SeatState,
    SeqBatch,
    UserRecord,
)
from agent.storage.tables import (
    agent_state,
    group_members,
    groups,
    reductions,
    seat_ledger,
    seat_pool,
    user_values,
    users,
)


class Conflict(Exception):
    """A uniqueness constraint would be violated (SCIM 409 uniqueness)."""


class UnknownMembers(Exception):
    """Group members that name no existing user."""

    def __init__(self, ids: Sequence[str]):
        super().__init__(", ".join(ids))
        self.ids = list(ids)


def utc(dt: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything we write is UTC."""
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _dump(resource: dict) -> str:
    return json.dumps(resource, separators=(",", ":"), ensure_ascii=False)


ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
_MULTI = MULTI_VALUED


def user_columns(resource: dict) -> dict[str, Any]:
    """The filterable columns of a user, extracted from its resource."""
    name = resource.get("name") or {}
    ent = resource.get(ENTERPRISE) or {}
    manager = ent.get("manager") or {}
    return {
        "user_name": resource["userName"],
        "user_name_ci": resource["userName"].lower(),
        "external_id": resource.get("externalId"),
        "display_name": resource.get("displayName"),
        "nick_name": resource.get("nickName"),
        "title": resource.get("title"),
        "user_type": resource.get("userType"),
        "locale": resource.get("locale"),
        "timezone": resource.get("timezone"),
        "preferred_language": resource.get("preferredLanguage"),
        "profile_url": resource.get("profileUrl"),
        "given_name": name.get("givenName"),
        "family_name": name.get("familyName"),
        "formatted_name": name.get("formatted"),
        "active": bool(resource.get("active", True)),
        "employee_number": ent.get("employeeNumber"),
        "department": ent.get("department"),
        "organization": ent.get("organization"),
        "division": ent.get("division"),
        "cost_center": ent.get("costCenter"),
        "manager_id": manager.get("value"),
    }


def user_value_rows(user_id: str, resource: dict) -> list[dict[str, Any]]:
    rows = []
    for attr in _MULTI:
        for item in resource.get(attr) or []:
            value = item.get("value")
            if attr == "addresses" and value is None:
                value = item.get("formatted")
            rows.append(
                {
                    "user_id": user_id,
                    "attr": attr,
                    "type": item.get("type"),
                    "value_ci": str(value).lower() if value is not None else None,
                    "is_primary": bool(item.get("primary", False)),
                }
            )
    return rows


def _seat_columns(seat: SeatState) -> dict[str, Any]:
    return {
        "app_status": seat.app_status,
        "license_state": seat.license_state,
        "holds_seat": seat.holds_seat,
        "on_fallback": seat.on_fallback,
        "queued_at": seat.queued_at,
        "last_active_at": seat.last_active_at,
        "deactivated_at": seat.deactivated_at,
    }


def _seat_from_row(row: Any) -> SeatState:
    return SeatState(
        app_status=row.app_status,
        license_state=row.license_state,
        holds_seat=bool(row.holds_seat),
        on_fallback=bool(row.on_fallback),
        queued_at=utc(row.queued_at),
        last_active_at=utc(row.last_active_at),
        deactivated_at=utc(row.deactivated_at),
    )


def _user_from_row(row: Any) -> UserRecord:
    return UserRecord(
        id=row.id,
        resource=json.loads(row.resource),
        created=utc(row.created),  # type: ignore[arg-type]
        last_modified=utc(row.last_modified),  # type: ignore[arg-type]
        version=row.version,
        seat=_seat_from_row(row),
    )


def _user_with_groups(row: Any) -> UserRecord:
    """A row of ``_WITH_GROUPS`` columns: the record and its groups from ``groups_json``."""
    record = _user_from_row(row)
    raw = row.groups_json
    if isinstance(raw, str):  # SQLite: JSON text, unordered, each with its lowered name
        record.groups = [(gid, name) for gid, name, _ in sorted(json.loads(raw), key=_third)]
    elif raw:
        record.groups = [(gid, name) for gid, name in raw]
    return record


def _third(item: Sequence[Any]) -> Any:
    return item[2]


def _group_from_row(row: Any) -> GroupRecord:
    return GroupRecord(
        id=row.id,
        resource=json.loads(row.resource),
        created=utc(row.created),  # type: ignore[arg-type]
        last_modified=utc(row.last_modified),  # type: ignore[arg-type]
        version=row.version,
    )


# Hot statements built once: SQLAlchemy memoises a statement's cache key per object, so the
# seat decision does not pay for building and keying its statements on every call.
_POOL = select(seat_pool.c.seats, seat_pool.c.consumed).where(seat_pool.c.id == 1)
_POOL_FOR_UPDATE = _POOL.with_for_update()
_SET_POOL = (
    update(seat_pool)
    .where(seat_pool.c.id == 1)
    .values(
        seats=bindparam("p_seats"), consumed=bindparam("p_consumed"), updated=bindparam("p_updated")
    )
)
_LEDGER_INSERT = insert(seat_ledger)
_USERS_TOTAL = select(seat_pool.c.users_total).where(seat_pool.c.id == 1)


def _page_rows(
    keys: Select[tuple[int]], order: Sequence[ColumnElement[Any]], is_postgres: bool
) -> Select[Any]:
    """One statement for the rows (groups included) a page's key walk selects, in its order.
    On SQLite ``seq IN (keys)``; on PostgreSQL the walk itself with the record columns, used
    for a first page only (see ``StoreTx.list_users``)."""
    if is_postgres:
        return keys.with_only_columns(users.c.seq, *_WITH_GROUPS[True])
    in_page = users.c.seq.in_(keys.correlate(None).scalar_subquery())
    return select(*_WITH_GROUPS[False]).where(in_page).order_by(*order, users.c.seq)


@dataclass(frozen=True)
class _LookupQueries:
    """The statements of ``StoreTx.lookup_users`` for one attribute and dialect."""

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


def _keys_from_the_end(offset: int, count: int) -> Select[tuple[int]]:
    """The seqs at positions [offset, offset + count) of all users in seq order, walked from
    the last user backwards (``ORDER BY seq DESC OFFSET total - offset - count``), so a page
    near the end costs what a page near the start does. The total is read inside the same
    statement, one snapshot: the page is exactly the one a forward walk would give.
    """
    total = _USERS_TOTAL.scalar_subquery()
    skip = case((total > offset + count, total - offset - count), else_=0)
    take = case((total - offset >= count, count), (total > offset, total - offset), else_=0)
    return select(users.c.seq).order_by(users.c.seq.desc()).offset(skip).limit(take)


_ADD_USERS_TOTAL = (
    update(seat_pool)
    .where(seat_pool.c.id == 1)
    .values(users_total=seat_pool.c.users_total + bindparam("n"))
)
# Ledger kinds that show a user held a seat at that moment (metered billing, seed 002).
_FREE_SEATS = seat_ledger.c.seats_after - seat_ledger.c.consumed_after
_HELD_A_SEAT = ("grant", "promote", "release")
_INSERT_USER = insert(users)
_SEAT_FIELDS = (
    "app_status",
    "license_state",
    "holds_seat",
    "on_fallback",
    "queued_at",
    "last_active_at",
    "deactivated_at",
)

# What a UserRecord is built from: the resource, its meta and the seat state. The filterable
# copies of attributes (user_name_ci, given_name, ...) stay in the database, so a page of 100
# users fetches and converts a third of the columns.
_RECORD_COLUMNS = (
    users.c.id,
    users.c.resource,
    users.c.created,
    users.c.last_modified,
    users.c.version,
    *(users.c[f] for f in _SEAT_FIELDS),
)
# Each row carries its groups, so a lookup or a page is one statement, not one more for groups.
# PostgreSQL: [[id, displayName], ...] in displayName order, NULL for none.
_GROUPS_JSON = (
    select(
        func.json_agg(
            postgresql.aggregate_order_by(
                func.json_build_array(groups.c.id, groups.c.display_name), groups.c.display_name_ci
            )
        )
    )
    .select_from(group_members.join(groups, groups.c.id == group_members.c.group_id))
    .where(group_members.c.user_id == users.c.id)
    .correlate(users)
    .scalar_subquery()
    .label("groups_json")
)
# SQLite (no ORDER BY inside an aggregate before 3.44): JSON text [[id, displayName,
# lowered displayName], ...] in no particular order, "[]" for none; sorted in Python.
_SQLITE_GROUPS_JSON = (
    select(
        func.json_group_array(
            func.json_array(groups.c.id, groups.c.display_name, groups.c.display_name_ci)
        )
    )
    .select_from(group_members.join(groups, groups.c.id == group_members.c.group_id))
    .where(group_members.c.user_id == users.c.id)
    .correlate(users)
    .scalar_subquery()
    .label("groups_json")
)
# The record columns and the groups, by "is PostgreSQL".
_WITH_GROUPS = {
    True: (*_RECORD_COLUMNS, _GROUPS_JSON),
    False: (*_RECORD_COLUMNS, _SQLITE_GROUPS_JSON),
}
_RECORD_BY_ID = {
    pg: select(*cols).where(users.c.id == bindparam("user_id")) for pg, cols in _WITH_GROUPS.items()
}
# PostgreSQL: one array parameter, so the statement is the same whatever the page size.
_RECORDS_BY_SEQS = select(users.c.seq, *_WITH_GROUPS[True]).where(
    users.c.seq == any_(bindparam("seqs", type_=postgresql.ARRAY(Integer)))
)
# PostgreSQL (psycopg placeholders), run once per key by StoreTx._per_key.
GROUPS_OF_USER_SQL = (
    "SELECT gm.user_id, g.display_name FROM group_members gm"
    " JOIN groups g ON g.id = gm.group_id WHERE gm.user_id = %s"
)
# One member out, by the whole primary key.
REMOVE_MEMBER_SQL = (
    "DELETE FROM group_members WHERE group_id = %s AND user_id = %s RETURNING user_id"
)
_SET_SEAT = (
    update(users)
    .where(users.c.id == bindparam("s_uid"))
    .values(
        **{f: bindparam(f"s_{f}") for f in _SEAT_FIELDS},
        last_modified=bindparam("s_now"),
        version=users.c.version + 1,
    )
)
# Reconcile's seat pass (StoreTx.seat_rows_after): the columns that judge a user's seat, then
# the multi-valued rows and group names of the batch by its ``seq`` range (a join, not a list
# of 1,000 ids to bind). Every multi-valued row of the batch is read and roles picked in
# Python: with ``attr = 'roles'`` in the SQL, SQLite would walk the (attr, value) index, which
# holds every user's role rows, on every batch.
_SEAT_COLUMNS = select(
    users.c.seq,
    users.c.id,
    users.c.user_name,
    users.c.active,
    users.c.user_type,
    users.c.app_status,
    users.c.license_state,
    users.c.holds_seat,
    users.c.on_fallback,
)
_SEAT_ROWS = _SEAT_COLUMNS.where(users.c.seq > bindparam("after")).order_by(users.c.seq)
_BATCH_VALUES = (
    select(user_values.c.user_id, user_values.c.attr, user_values.c.value_ci)
    .select_from(users.join(user_values, user_values.c.user_id == users.c.id))
    .where(users.c.seq > bindparam("after"), users.c.seq <= bindparam("last"))
)
_BATCH_GROUPS = (
    select(group_members.c.user_id, groups.c.display_name)
    .select_from(
        users.join(group_members, group_members.c.user_id == users.c.id).join(
            groups, groups.c.id == group_members.c.group_id
        )
    )
    .where(users.c.seq > bindparam("after"), users.c.seq <= bindparam("last"))
)


@functools.lru_cache(maxsize=8)
def _seat_page(limit: int) -> Any:
    """The seat-row page statement for one batch size, built (and cache-keyed) once."""
    return _SEAT_ROWS.limit(limit)


def _ledger_entry(r: Any) -> LedgerEntry:
    return LedgerEntry(
        seq=r.seq,
        at=utc(r.at),  # type: ignore[arg-type]
        kind=r.kind,
        user_id=r.user_id,
        user_name=r.user_name,
        cause=r.cause,
        detail=r.detail,
        seats_after=r.seats_after,
        consumed_after=r.consumed_after,
        cost=Decimal(r.cost) if r.cost is not None else None,
        request=r.request_id,
    )


@dataclass
class _DeferredWrites:
    pool: dict[str, Any] | None = None
    ledger: list[dict[str, Any]] = field(default_factory=list)
    seats: list[dict[str, Any]] = field(default_factory=list)


class AtCommit(Protocol):
    """Work gathered during a write transaction and written at its end (``StoreTx.at_commit``)."""

    def flush(self, tx: StoreTx) -> None: ...


_AtCommit = TypeVar("_AtCommit", bound=AtCommit)


class StoreTx:
    """Operations inside one transaction."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.is_postgres = conn.dialect.name == "postgresql"
        # The pool row as this transaction last wrote or read it, once it holds the lock:
        # nobody else can change the row until it commits, so it need not be read again.
        self._pool: PoolRow | None = None
        self._deferred: _DeferredWrites | None = None
        self._at_commit: dict[str, AtCommit] = {}

    # -- seat pool -------------------------------------------------------------------------

    def lock_pool(self) -> PoolRow:
        q = _POOL_FOR_UPDATE if self.is_postgres else _POOL
        row = self.conn.execute(q).one()
        self._pool = PoolRow(seats=row.seats, consumed=row.consumed)
        return self._pool

    def pool(self) -> PoolRow:
        if self._pool is not None:
            return self._pool
        row = self.conn.execute(_POOL).one()
        return PoolRow(seats=row.seats, consumed=row.consumed)

    def set_pool(self, seats: int, consumed: int, now: datetime) -> None:
        if self._pool is not None:
            self._pool = PoolRow(seats=seats, consumed=consumed)
        params = {"p_seats": seats, "p_consumed": consumed, "p_updated": now}
        if self._deferred is not None:
            self._deferred.pool = params
            return
        self.conn.execute(_SET_POOL, params)

    def at_commit(self, name: str, factory: Callable[[], _AtCommit]) -> _AtCommit:
        """The ``name`` object of this write transaction (made by ``factory`` on first use),
        whose ``flush(tx)`` runs once when the transaction's work is done, just before it
        commits, after any deferred seat writes: it sees the transaction's final state. (The
        webhook events describe what a transaction changed, not its intermediate steps.)"""
        existing = self._at_commit.get(name)
        if existing is None:
            existing = self._at_commit[name] = factory()
        return existing  # type: ignore[return-value]

    def flush_at_commit(self) -> None:
        """Run the ``at_commit`` work (Store.write calls it as the transaction ends)."""
        while self._at_commit:
            name = next(iter(self._at_commit))
            self._at_commit.pop(name).flush(self)

    @contextmanager
    def deferred_seat_writes(self) -> Iterator[None]:
        """Inside the block, pool updates, ledger entries and seat-state changes are kept and
        written in bulk when it ends (one pool update, one executemany each), for a job that
        re-decides many users in one transaction. Reads of the ledger or of a user's seat
        state inside the block would not see them: callers only read before the block."""
        if self._pool is None:
            raise RuntimeError("deferred seat writes need the seat-pool lock (a write tx)")
        deferred = self._deferred = _DeferredWrites()
        try:
            yield
        finally:
            self._deferred = None
        if deferred.pool is not None:
            self.conn.execute(_SET_POOL, deferred.pool)
        if deferred.ledger:
            self.conn.execute(_LEDGER_INSERT, deferred.ledger)
        if deferred.seats:
            self.conn.execute(_SET_SEAT, deferred.seats)

    def append_ledger(
        self,
        *,
        at: datetime,
        kind: str,
        cause: str,
        seats_after: int,
        consumed_after: int,
        user_id: str | None = None,
        user_name: str | None = None,
        detail: str | None = None,
        cost: Decimal | None = None,
        request: str | None = None,
    ) -> None:
        """Append one entry. ``request`` is the X-Request-Id of the call that caused it."""
        entry = {
            "at": at,
            "kind": kind,
            "cause": cause,
            "user_id": user_id,
            "user_name": user_name,
            "detail": detail,
            "request_id": request,
            "seats_after": seats_after,
            "consumed_after": consumed_after,
            "cost": cost,
        }
        if self._deferred is not None:
            self._deferred.ledger.append(entry)
            return
        self.conn.execute(_LEDGER_INSERT, entry)

    def ledger(
        self,
        since: datetime | None = None,
        limit: int = 1000,
        kinds: Sequence[str] | None = None,
        newest_first: bool = False,
        after: int | None = None,
    ) -> list[LedgerEntry]:
        q = select(seat_ledger).order_by(
            seat_ledger.c.seq.desc() if newest_first else seat_ledger.c.seq
        )
        if since is not None:
            q = q.where(seat_ledger.c.at >= since)
        if after is not None:
            q = q.where(seat_ledger.c.seq > after)
        if kinds is not None:
            q = q.where(seat_ledger.c.kind.in_(list(kinds)))
        rows = self.conn.execute(q.limit(limit)).all()
        return [_ledger_entry(r) for r in rows]

    # -- users -----------------------------------------------------------------------------

    def user_name_taken(self, user_name: str, except_id: str | None = None) -> bool:
        q = select(users.c.id).where(users.c.user_name_ci == user_name.lower())
        found = self.conn.execute(q).scalar()
        return found is not None and found != except_id

    def insert_user(
        self, user_id: str, resource: dict, seat: SeatState, now: datetime
    ) -> UserRecord:
        # The unique index on user_name_ci decides (callers check first for a clear error).
        values = {
            "id": user_id,
            **user_columns(resource),
            "created": now,
            "last_modified": now,
            "version": 1,
            "resource": _dump(resource),
            **_seat_columns(seat),
        }
        try:
            with self.conn.begin_nested():
                self.conn.execute(_INSERT_USER, values)
        except IntegrityError:
            raise Conflict(f"userName '{resource['userName']}' is already in use") from None
        self.conn.execute(_ADD_USERS_TOTAL, {"n": 1})
        rows = user_value_rows(user_id, resource)
        if rows:
            self.conn.execute(insert(user_values), rows)
        return UserRecord(user_id, resource, now, now, 1, seat)

    def update_user(
        self, record: UserRecord, resource: dict, seat: SeatState, now: datetime
    ) -> UserRecord:
        if resource["userName"].lower() != record.user_name.lower() and self.user_name_taken(
            resource["userName"], except_id=record.id
        ):
            raise Conflict(f"userName '{resource['userName']}' is already in use")
        version = record.version + 1
        self.conn.execute(
            update(users)
            .where(users.c.id == record.id)
            .values(
                **user_columns(resource),
                last_modified=now,
                version=version,
                resource=_dump(resource),
                **_seat_columns(seat),
            )
        )
        if _multi_changed(record.resource, resource):
            self.conn.execute(delete(user_values).where(user_values.c.user_id == record.id))
            rows = user_value_rows(record.id, resource)
            if rows:
                self.conn.execute(insert(user_values), rows)
        return UserRecord(record.id, resource, record.created, now, version, seat, record.groups)

    def set_seat(self, user_id: str, seat: SeatState, now: datetime) -> None:
        """Change only a user's seat state (queue promotion, reconcile): not a directory edit."""
        params = {
            **{f"s_{k}": v for k, v in _seat_columns(seat).items()},
            "s_uid": user_id,
            "s_now": now,
        }
        if self._deferred is not None:
            self._deferred.seats.append(params)
            return
        self.conn.execute(_SET_SEAT, params)

    def delete_user(self, user_id: str) -> None:
        self.conn.execute(delete(group_members).where(group_members.c.user_id == user_id))
        self.conn.execute(delete(user_values).where(user_values.c.user_id == user_id))
        gone = self.conn.execute(delete(users).where(users.c.id == user_id)).rowcount
        if gone:
            self.conn.execute(_ADD_USERS_TOTAL, {"n": -gone})

    def recount_users(self) -> tuple[int, int]:
        """Set the stored user total from COUNT(*) (reconcile); returns (was, now)."""
        was = int(self.conn.execute(_USERS_TOTAL).scalar_one())
        now = int(self.conn.execute(select(func.count()).select_from(users)).scalar_one())
        if was != now:
            self.conn.execute(update(seat_pool).where(seat_pool.c.id == 1).values(users_total=now))
        return was, now

    def get_user(self, user_id: str, with_groups: bool = True) -> UserRecord | None:
        if with_groups:
            row = self.conn.execute(_RECORD_BY_ID[self.is_postgres], {"user_id": user_id}).first()
        else:
            row = self.conn.execute(select(*_RECORD_COLUMNS).where(users.c.id == user_id)).first()
        if row is None:
            return None
        record = _user_with_groups(row) if with_groups else _user_from_row(row)
        self.attach_queue_positions([record])
        return record

    def get_users(self, ids: Iterable[str]) -> list[UserRecord]:
        ids = list(ids)
        out: list[UserRecord] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = self.conn.execute(select(*_RECORD_COLUMNS).where(users.c.id.in_(chunk))).all()
            out.extend(_user_from_row(r) for r in rows)
        return out

    def list_users(
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
        seat_pool (no COUNT(*)), and walks to a page in its second half from the end of the
        index, so no page walks past more than half the users. COUNT(*) is also skipped when
        the page itself shows where the results end (a filter lookup, the last page).
        """
        records: list[UserRecord] = []
        offset = start_index - 1
        total: int | None = None
        if where is None:
            total = int(self.conn.execute(_USERS_TOTAL).scalar_one())
        if count > 0 and not (total is not None and offset >= total):
            if total is not None and not order and offset * 2 > total:
                keys = _keys_from_the_end(offset, count)
            else:
                keys = select(users.c.seq)
                if where is not None:
                    keys = keys.where(where)
                keys = keys.order_by(*order, users.c.seq).offset(offset).limit(count)
            rows = (
                _page_rows(keys, order, self.is_postgres) if self._one_statement(offset) else None
            )
            records = self._page_records(keys, rows, bool(order), {})

        def matching() -> Select[Any]:
            total_q = select(func.count()).select_from(users)
            return total_q.where(where) if where is not None else total_q

        return self._user_page(records, start_index, count, total, matching, {})

    def lookup_users(self, lookup: Lookup, start_index: int, count: int) -> Page:
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
            rows: Iterable[Any] = self.conn.execute(rows_statement, params).all()
        else:
            seqs = list(self.conn.execute(keys, params).scalars())
            if not ordered:
                seqs.sort()  # the walk from the end gives them newest first
            place = {seq: i for i, seq in enumerate(seqs)}
            found: Iterable[Any] = (
                self.conn.execute(_RECORDS_BY_SEQS, {"seqs": seqs}).all() if seqs else ()
            )
            rows = sorted(found, key=lambda r: place[r.seq])
        return [_user_with_groups(r) for r in rows]

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
        self.attach_queue_positions(records)
        return Page(matches, records)

    def attach_queue_positions(self, records: list[UserRecord]) -> None:
        for r in records:
            if r.seat.license_state == "queued" and r.seat.queued_at is not None:
                ahead = self.conn.execute(
                    select(func.count())
                    .select_from(users)
                    .where(
                        users.c.license_state == "queued",
                        (users.c.queued_at < r.seat.queued_at)
                        | and_(users.c.queued_at == r.seat.queued_at, users.c.id < r.id),
                    )
                ).scalar_one()
                r.queue_position = int(ahead) + 1

    def queued_users(self, limit: int | None = None) -> list[UserRecord]:
        """Queued users, first come first served (queued_at, then id)."""
        q = (
            select(users)
            .where(users.c.license_state == "queued")
            .order_by(users.c.queued_at, users.c.id)
        )
        if limit is not None:
            q = q.limit(limit)
        records = [_user_from_row(r) for r in self.conn.execute(q)]
        for pos, r in enumerate(records, start=1):
            r.queue_position = pos
        return records

    # -- walks in seq order (keyset paging) ------------------------------------------------

    def users_after(self, seq: int, limit: int) -> SeqBatch[UserRecord]:
        """Up to ``limit`` users after ``seq``, in ``seq`` order; groups are not attached."""
        return self._user_batch(select(users).where(users.c.seq > seq), seq, limit)

    def holders_after(self, seq: int, limit: int) -> SeqBatch[UserRecord]:
        """Up to ``limit`` users holding a seat after ``seq``, in ``seq`` order; groups are
        not attached."""
        q = select(users).where(users.c.holds_seat.is_(True), users.c.seq > seq)
        return self._user_batch(q, seq, limit)

    def directory_after(
        self, seq: int, limit: int, *, state: str | None = None, text: str | None = None
    ) -> SeqBatch[UserRecord]:
        """The admin's user list: up to ``limit`` users after ``seq`` in ``seq`` order, in a
        license state and/or whose userName, name, email or externalId contains ``text``
        (case-insensitive); groups are not attached."""
        q = select(users).where(users.c.seq > seq)
        if state is not None:
            q = q.where(users.c.license_state == state)
        if text:
            escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = f"%{escaped}%"

            def like(col: Any) -> ColumnElement[bool]:
                return func.lower(col).like(pattern, escape="\\")

            email = (
                select(user_values.c.user_id)
                .where(
                    user_values.c.user_id == users.c.id,
                    user_values.c.attr == "emails",
                    user_values.c.value_ci.like(pattern, escape="\\"),
                )
                .exists()
            )
            q = q.where(
                or_(
                    users.c.user_name_ci.like(pattern, escape="\\"),
                    like(users.c.display_name),
                    like(users.c.formatted_name),
                    like(users.c.given_name),
                    like(users.c.family_name),
                    like(users.c.external_id),
                    email,
                )
            )
        return self._user_batch(q, seq, limit)

    def seat_since(self, user_ids: Sequence[str]) -> dict[str, datetime]:
        """When each of these users was last given a seat (its newest ``grant`` or ``promote``
        ledger entry); users never given one are absent."""
        out: dict[str, datetime] = {}
        ids = list(user_ids)
        for start in range(0, len(ids), 500):
            q = (
                select(seat_ledger.c.user_id, func.max(seat_ledger.c.at))
                .where(
                    seat_ledger.c.user_id.in_(ids[start : start + 500]),
                    seat_ledger.c.kind.in_(("grant", "promote")),
                )
                .group_by(seat_ledger.c.user_id)
            )
            for user_id, at in self.conn.execute(q):
                out[user_id] = utc(at)  # type: ignore[assignment]
        return out

    def find_user_id(self, key: str) -> str | None:
        """The id of the user ``key`` names: its id, else its userName (case-insensitive, RFC
        7643 §4.1.1), else its externalId when exactly one user has it."""
        if self.conn.execute(select(users.c.id).where(users.c.id == key)).first() is not None:
            return key
        found = self.conn.execute(
            select(users.c.id).where(users.c.user_name_ci == key.lower())
        ).first()
        if found is not None:
            return str(found[0])
        rows = self.conn.execute(
            select(users.c.id).where(users.c.external_id == key).limit(2)
        ).all()
        return str(rows[0][0]) if len(rows) == 1 else None

    def _user_batch(self, q: Any, seq: int, limit: int) -> SeqBatch[UserRecord]:
        rows = self.conn.execute(q.order_by(users.c.seq).limit(limit)).all()
        if not rows:
            return SeqBatch([], seq)
        return SeqBatch([_user_from_row(r) for r in rows], rows[-1].seq)

    def seat_rows_after(self, seq: int, limit: int) -> SeqBatch[SeatRow]:
        """Up to ``limit`` users after ``seq``, in ``seq`` order, as their directory state
        (``active``, lower-cased roles, group names, ``userType``) and seat state: columns,
        role rows and group names only, so memory and time stay flat per user (reconcile)."""
        rows = self.conn.execute(_seat_page(limit), {"after": seq}).all()
        if not rows:
            return SeqBatch([], seq)
        span = {"after": seq, "last": rows[-1].seq}
        roles: dict[str, set[str]] = {}
        for user_id, attr, value in self.conn.execute(_BATCH_VALUES, span):
            if attr == "roles":
                roles.setdefault(user_id, set()).add(value)
        groups_of: dict[str, set[str]] = {}
        for user_id, name in self.conn.execute(_BATCH_GROUPS, span):
            groups_of.setdefault(user_id, set()).add(name)
        items = [
            SeatRow(
                id=r.id,
                user_name=r.user_name,
                state=DirectoryState(
                    active=bool(r.active),
                    roles=frozenset(roles.get(r.id, ())),
                    groups=frozenset(groups_of.get(r.id, ())),
                    user_type=r.user_type,
                ),
                app_status=r.app_status,
                license_state=r.license_state,
                holds_seat=bool(r.holds_seat),
                on_fallback=bool(r.on_fallback),
            )
            for r in rows
        ]
        return SeqBatch(items, rows[-1].seq)

    def ledger_peak(self, start: datetime, end: datetime) -> tuple[int, int] | None:
        """Highest seats held and seats consumed recorded in [start, end), with the state in
        force at ``start`` (the last entry before it) counted too."""
        before = self.ledger_at(start)
        row = self.conn.execute(
            select(
                func.max(seat_ledger.c.seats_after), func.max(seat_ledger.c.consumed_after)
            ).where(seat_ledger.c.at >= start, seat_ledger.c.at < end)
        ).one()
        peaks = [p for p in (before, (row[0], row[1]) if row[0] is not None else None) if p]
        if not peaks:
            return None
        return max(p[0] for p in peaks), max(p[1] for p in peaks)

    def ledger_at(self, moment: datetime) -> tuple[int, int] | None:
        """(seats, consumed) in force at ``moment``, from the last ledger entry at or before it."""
        row = self.conn.execute(
            select(seat_ledger.c.seats_after, seat_ledger.c.consumed_after)
            .where(seat_ledger.c.at <= moment)
            .order_by(seat_ledger.c.seq.desc())
            .limit(1)
        ).first()
        return (row[0], row[1]) if row else None

    def released_since(self, user_id: str, cause: str, since: datetime) -> bool:
        """Whether the ledger has a ``release`` of ``user_id`` with ``cause`` at or after
        ``since`` (a reduction recognises the seats its own deactivations freed)."""
        found = self.conn.execute(
            select(seat_ledger.c.seq)
            .where(
                seat_ledger.c.user_id == user_id,
                seat_ledger.c.kind == "release",
                seat_ledger.c.cause == cause,
                seat_ledger.c.at >= since,
            )
            .limit(1)
        ).first()
        return found is not None

    def free_seats_at(self, moment: datetime) -> int | None:
        """Seats free (seats minus consumed) by the latest ledger entry at or before
        ``moment``, by entry time; None before the first entry."""
        row = self.conn.execute(
            select(_FREE_SEATS)
            .where(seat_ledger.c.at <= moment)
            .order_by(seat_ledger.c.at.desc())
            .limit(1)
        ).first()
        return int(row[0]) if row is not None else None

    def free_seats_dipped_below(self, threshold: int, after: datetime, until: datetime) -> bool:
        """Whether a ledger entry in (``after``, ``until``] left fewer than ``threshold``
        seats free."""
        dipped = self.conn.execute(
            select(seat_ledger.c.seq)
            .where(seat_ledger.c.at > after, seat_ledger.c.at <= until, _FREE_SEATS < threshold)
            .limit(1)
        ).first()
        return dipped is not None

    def metered_last_activity(self, since: datetime) -> list[datetime]:
        """Last sign of activity of each user who holds no seat now but may still be billed on
        a metered plan (seed 002: deactivated users "if they were active within the last
        month", including "users who registered within the last month").

        * a deactivated user: the later of its ``last_active_at`` (the moment it was
          deactivated) and ``created`` (registering counts, even when created inactive);
        * any user, deleted ones included, that held a seat at some moment since ``since``:
          its latest ``grant``/``promote``/``release`` entry in the append-only seat ledger,
          which keeps the user id after the user row is gone.

        Users holding a seat now are left out: they are counted as consumed.
        """
        latest: dict[str, datetime] = {}

        def seen(user_id: str, at: datetime | None) -> None:
            if at is not None and (user_id not in latest or at > latest[user_id]):
                latest[user_id] = at

        q = select(users.c.id, users.c.last_active_at, users.c.created).where(
            users.c.active.is_(False), users.c.holds_seat.is_(False)
        )
        for r in self.conn.execute(q):
            seen(r[0], utc(r[1]))
            seen(r[0], utc(r[2]))
        holding = (
            select(users.c.id)
            .where(users.c.id == seat_ledger.c.user_id, users.c.holds_seat.is_(True))
            .exists()
        )
        q2 = (
            select(seat_ledger.c.user_id, func.max(seat_ledger.c.at))
            .where(
                seat_ledger.c.at >= since,
                seat_ledger.c.kind.in_(_HELD_A_SEAT),
                seat_ledger.c.user_id.is_not(None),
                ~holding,
            )
            .group_by(seat_ledger.c.user_id)
        )
        for uid, at in self.conn.execute(q2):
            seen(uid, utc(at))
        return list(latest.values())

    def reduction_ceiling(self, states: Sequence[str]) -> int | None:
        """The lowest target of the reduction workflows in ``states``, None when there is none
        (the queue is not served above it while a workflow reduces consumption)."""
        found = self.conn.execute(
            select(func.min(reductions.c.target)).where(reductions.c.state.in_(list(states)))
        ).scalar()
        return int(found) if found is not None else None

    def free_user_ids(self) -> set[str]:
        """Ids of the users whose license state is ``free``."""
        q = select(users.c.id).where(users.c.license_state == "free")
        return {r[0] for r in self.conn.execute(q)}

    def queued_count(self) -> int:
        return int(
            self.conn.execute(
                select(func.count()).select_from(users).where(users.c.license_state == "queued")
            ).scalar_one()
        )

    def count_users(self) -> int:
        """COUNT(*) of the users table (the length of a full walk over users)."""
        return int(self.conn.execute(select(func.count()).select_from(users)).scalar_one())

    def count_holding_seats(self) -> int:
        return int(
            self.conn.execute(
                select(func.count()).select_from(users).where(users.c.holds_seat.is_(True))
            ).scalar_one()
        )

    def seat_breakdown(self) -> list[tuple[str, str, bool, int]]:
        """(app_status, license_state, holds_seat, count) groups for reporting."""
        q = select(
            users.c.app_status, users.c.license_state, users.c.holds_seat, func.count()
        ).group_by(users.c.app_status, users.c.license_state, users.c.holds_seat)
        return [(r[0], r[1], bool(r[2]), int(r[3])) for r in self.conn.execute(q)]

    def role_values(
        self, user_ids_holding: bool = True, group_roles: Mapping[str, str] | None = None
    ) -> list[tuple[str, int]]:
        """Role value (lowercased) -> number of seat-holding users with it, counting SCIM
        ``roles`` and the roles group membership grants (``[license] group_roles``, group
        displayName -> role, names matched case-insensitively); a user holding a role both
        ways, or through two groups, counts once."""
        parts: list[Any] = [
            select(user_values.c.user_id.label("uid"), user_values.c.value_ci.label("role"))
            .join(users, users.c.id == user_values.c.user_id)
            .where(user_values.c.attr == "roles", users.c.holds_seat.is_(user_ids_holding))
        ]
        mapping = {name.lower(): role.lower() for name, role in (group_roles or {}).items()}
        if mapping:
            parts.append(
                select(
                    group_members.c.user_id.label("uid"),
                    case(mapping, value=groups.c.display_name_ci).label("role"),
                )
                .join(groups, groups.c.id == group_members.c.group_id)
                .join(users, users.c.id == group_members.c.user_id)
                .where(
                    groups.c.display_name_ci.in_(list(mapping)),
                    users.c.holds_seat.is_(user_ids_holding),
                )
            )
        held = union(*parts).subquery() if len(parts) > 1 else parts[0].distinct().subquery()
        q = select(held.c.role, func.count()).group_by(held.c.role)
        return [(r[0], int(r[1])) for r in self.conn.execute(q)]

    def user_group_names(self, user_id: str) -> list[str]:
        q = (
            select(groups.c.display_name)
            .join(group_members, groups.c.id == group_members.c.group_id)
            .where(group_members.c.user_id == user_id)
        )
        return [r[0] for r in self.conn.execute(q)]

    # -- groups ----------------------------------------------------------------------------

    def _display_name_taken(self, name: str, except_id: str | None = None) -> bool:
        found = self.conn.execute(
            select(groups.c.id).where(groups.c.display_name_ci == name.lower())
        ).scalar()
        return found is not None and found != except_id

    def insert_group(self, group_id: str, resource: dict, now: datetime) -> GroupRecord:
        name = resource["displayName"]
        if self._display_name_taken(name):
            raise Conflict(f"Group displayName '{name}' is already in use")
        try:
            with self.conn.begin_nested():
                self.conn.execute(
                    insert(groups).values(
                        id=group_id,
                        display_name=name,
                        display_name_ci=name.lower(),
                        external_id=resource.get("externalId"),
                        created=now,
                        last_modified=now,
                        version=1,
                        resource=_dump(resource),
                    )
                )
        except IntegrityError:
            raise Conflict(f"Group displayName '{name}' is already in use") from None
        return GroupRecord(group_id, resource, now, now, 1, members=[])

    def update_group(self, record: GroupRecord, resource: dict, now: datetime) -> GroupRecord:
        name = resource["displayName"]
        if self._display_name_taken(name, except_id=record.id):
            raise Conflict(f"Group displayName '{name}' is already in use")
        version = record.version + 1
        self.conn.execute(
            update(groups)
            .where(groups.c.id == record.id)
            .values(
                display_name=name,
                display_name_ci=name.lower(),
                external_id=resource.get("externalId"),
                last_modified=now,
                version=version,
                resource=_dump(resource),
            )
        )
        return GroupRecord(record.id, resource, record.created, now, version, record.members)

    def touch_group(self, group_id: str, now: datetime) -> None:
        self.conn.execute(
            update(groups)
            .where(groups.c.id == group_id)
            .values(last_modified=now, version=groups.c.version + 1)
        )

    def delete_group(self, group_id: str) -> list[str]:
        """Delete a group; return the ids of its former members."""
        members = self.member_ids(group_id)
        self.conn.execute(delete(group_members).where(group_members.c.group_id == group_id))
        self.conn.execute(delete(groups).where(groups.c.id == group_id))
        return members

    def get_group(self, group_id: str, with_members: bool = True) -> GroupRecord | None:
        row = self.conn.execute(select(groups).where(groups.c.id == group_id)).first()
        if row is None:
            return None
        record = _group_from_row(row)
        if with_members:
            self._attach_members([record])
        return record

    def list_groups(
        self,
        where: ColumnElement[bool] | None,
        order: Sequence[ColumnElement[Any]],
        start_index: int,
        count: int,
        with_members: bool,
    ) -> Page:
        total_q = select(func.count()).select_from(groups)
        if where is not None:
            total_q = total_q.where(where)
        total = int(self.conn.execute(total_q).scalar_one())
        if count <= 0 or start_index > total:
            return Page(total, [])
        q = select(groups)
        if where is not None:
            q = q.where(where)
        q = q.order_by(*order, groups.c.seq).offset(start_index - 1).limit(count)
        records = [_group_from_row(r) for r in self.conn.execute(q)]
        if with_members:
            self._attach_members(records)
        return Page(total, records)

    def _attach_members(self, records: list[GroupRecord]) -> None:
        by_id = {r.id: r for r in records}
        for r in records:
            r.members = []
        if not by_id:
            return
        q = (
            select(
                group_members.c.group_id,
                users.c.id,
                func.coalesce(users.c.display_name, users.c.user_name),
            )
            .join(users, users.c.id == group_members.c.user_id)
            .where(group_members.c.group_id.in_(list(by_id)))
            .order_by(users.c.seq)
        )
        for row in self.conn.execute(q):
            by_id[row[0]].members.append((row[1], row[2]))  # type: ignore[union-attr]

    def member_ids(self, group_id: str) -> list[str]:
        q = select(group_members.c.user_id).where(group_members.c.group_id == group_id)
        return [r[0] for r in self.conn.execute(q)]

    def groups_of(self, user_ids: Sequence[str]) -> dict[str, list[str]]:
        """The names of each user's groups. On PostgreSQL one lookup per user, pipelined:
        ``user_id IN (...)`` of many users is planned as a scan of every membership row when
        the statistics are older than the memberships (see _per_key)."""
        out: dict[str, list[str]] = {u: [] for u in user_ids}
        if self.is_postgres:
            for user_id, name in self._per_key(GROUPS_OF_USER_SQL, [(u,) for u in out]):
                out[user_id].append(name)
            return out
        for start in range(0, len(user_ids), 500):
            chunk = list(user_ids[start : start + 500])
            q = (
                select(group_members.c.user_id, groups.c.display_name)
                .join(groups, groups.c.id == group_members.c.group_id)
                .where(group_members.c.user_id.in_(chunk))
            )
            for row in self.conn.execute(q):
                out[row[0]].append(row[1])
        return out

    def add_members(self, group_id: str, user_ids: Sequence[str]) -> list[str]:
        """Add members; return those actually added. Cost depends on len(user_ids) only.

        Existing members are skipped by ON CONFLICT DO NOTHING, i.e. by probing the primary
        key: a ``group_id = ? AND user_id IN (...)`` lookup is planned by PostgreSQL from
        statistics that lag a growing group, and then reads every member of it.
        """
        if not user_ids:
            return []
        known: set[str] = set()
        for start in range(0, len(user_ids), 500):
            chunk = list(user_ids[start : start + 500])
            known.update(
                r[0] for r in self.conn.execute(select(users.c.id).where(users.c.id.in_(chunk)))
            )
        unknown = [u for u in user_ids if u not in known]
        if unknown:
            raise UnknownMembers(unknown)
        wanted = list(dict.fromkeys(user_ids))
        upsert = pg_insert if self.is_postgres else sqlite_insert
        stmt = upsert(group_members).on_conflict_do_nothing().returning(group_members.c.user_id)
        rows = [{"group_id": group_id, "user_id": u} for u in wanted]
        inserted = {r[0] for r in self.conn.execute(stmt, rows)}
        return [u for u in wanted if u in inserted]

    def remove_members(self, group_id: str, user_ids: Sequence[str]) -> list[str]:
        """Remove exactly these members; return those that were members. Cost depends on
        len(user_ids) only."""
        if self.is_postgres:
            return self._remove_members_by_key(group_id, list(dict.fromkeys(user_ids)))
        removed: list[str] = []
        for start in range(0, len(user_ids), 500):
            chunk = list(user_ids[start : start + 500])
            present = [
                r[0]
                for r in self.conn.execute(
                    select(group_members.c.user_id).where(
                        group_members.c.group_id == group_id,
                        group_members.c.user_id.in_(chunk),
                    )
                )
            ]
            if present:
                self.conn.execute(
                    delete(group_members).where(
                        group_members.c.group_id == group_id,
                        group_members.c.user_id.in_(present),
                    )
                )
            removed.extend(present)
        return removed

    def _remove_members_by_key(self, group_id: str, user_ids: list[str]) -> list[str]:
        """PostgreSQL: one DELETE ... RETURNING per member by the whole primary key, sent
        together (psycopg's pipelined executemany). A statement over the whole list
        (``group_id = ? AND user_id IN (...)``, ``= ANY``, a join with ``unnest``) is
        planned from statistics that lag a growing group: analysed while the group was
        small, each plan read every member, 208 ms for 100 at 50,000 members and 423 ms at
        100,000 (``bench/group_batches.py``). A lookup by the whole key of a unique index
        has one plan whatever the statistics say (tests/test_storage.py checks it)."""
        rows = self._per_key(REMOVE_MEMBER_SQL, [(group_id, u) for u in user_ids])
        return [row[0] for row in rows]

    def _per_key(self, sql: str, params: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """PostgreSQL: ``sql`` (psycopg placeholders) once per parameter tuple, in one
        pipelined batch (psycopg's executemany), in this transaction; the rows of all of
        them, in order. Each statement looks up one key of an index, which has the same plan
        however stale the table's statistics are; a statement over a whole list does not
        (autovacuum may be off, or not yet caught up with a group filled in minutes)."""
        if not params:
            return []
        driver = self.conn.connection.driver_connection
        cursor = driver.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(sql, params, returning=True)
            rows: list[tuple[Any, ...]] = []
            while True:
                rows.extend(cursor.fetchall())
                if not cursor.nextset():
                    return rows
        except psycopg.Error as err:
            # As SQLAlchemy raises it for its own statements (a lost server is an
            # OperationalError, a retryable 503 on /scim), the dead connection invalidated.
            gone = self.conn.dialect.is_disconnect(err, driver, cursor)  # type: ignore[arg-type]
            if gone:
                self.conn.invalidate(err)
            raise DBAPIError.instance(
                sql, params, err, psycopg.Error, connection_invalidated=gone
            ) from err
        finally:
            cursor.close()

    def remove_all_members(self, group_id: str) -> list[str]:
        members = self.member_ids(group_id)
        self.conn.execute(delete(group_members).where(group_members.c.group_id == group_id))
        return members

    # -- agent state -----------------------------------------------------------------------

    def get_state(self, key: str) -> str | None:
        return self.conn.execute(
            select(agent_state.c.value).where(agent_state.c.key == key)
        ).scalar()

    def put_state(self, key: str, value: str) -> None:
        if self.get_state(key) is None:
            self.conn.execute(insert(agent_state).values(key=key, value=value))
        else:
            self.conn.execute(
                update(agent_state).where(agent_state.c.key == key).values(value=value)
            )


def _multi_changed(old: dict, new: dict) -> bool:
    return any(old.get(a) != new.get(a) for a in _MULTI)


class Store:
    """Entry point to the database: migrations, transactions."""

    def __init__(self, engine: Engine):
        self.engine = engine

    @classmethod
    def from_url(cls, url: str) -> Store:
        return cls(make_engine(url))

    def upgrade(self, initial_seats: int, now: datetime) -> None:
        """Apply migrations and make sure the seat pool row exists."""
        migrate.upgrade(self.engine)
        with self.engine.connect().execution_options(**{WRITE: True}) as conn:
            with conn.begin():
                exists = conn.execute(select(seat_pool.c.id).where(seat_pool.c.id == 1)).first()
                if exists is None and conn.dialect.name == "postgresql":
                    # Hosts starting together: the first to lock creates the pool row.
                    conn.execute(text("LOCK TABLE seat_pool IN EXCLUSIVE MODE"))
                    exists = conn.execute(select(seat_pool.c.id).where(seat_pool.c.id == 1)).first()
                if exists is None:
                    conn.execute(
                        insert(seat_pool).values(id=1, seats=initial_seats, consumed=0, updated=now)
                    )
                    StoreTx(conn).append_ledger(
                        at=now,
                        kind="licenses",
                        cause="config",
                        detail="initial license count from [license] seats",
                        seats_after=initial_seats,
                        consumed_after=0,
                    )

    def is_ready(self) -> bool:
        return migrate.is_current(self.engine)

    @contextmanager
    def write(self) -> Iterator[StoreTx]:
        """A write transaction holding the seat-pool lock for its whole life."""
        with self.engine.connect().execution_options(**{WRITE: True}) as conn:
            with conn.begin():
                tx = StoreTx(conn)
                tx.lock_pool()
                yield tx
                tx.flush_at_commit()

    @contextmanager
    def read(self) -> Iterator[StoreTx]:
        """A read. Only SELECTs may run in it (``engine.READ``). On SQLite one transaction, one
        snapshot. On PostgreSQL no transaction at all: under READ COMMITTED every statement
        takes its own snapshot inside a transaction too, so BEGIN and COMMIT would only add
        two round trips to every SCIM GET; whatever must be one snapshot is one statement."""
        options: dict[str, Any] = {READ: True}
        if self.engine.dialect.name == "postgresql":
            options["isolation_level"] = "AUTOCOMMIT"
        with self.engine.connect().execution_options(**options) as conn:
            with conn.begin():
                yield StoreTx(conn)

    def dispose(self) -> None:
        self.engine.dispose()
