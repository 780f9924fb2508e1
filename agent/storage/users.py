"""User rows: insert, update, seat state, delete, lookups, walks in ``seq`` order and the
counts reporting reads. Pages of the SCIM list are agent.storage.user_pages."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    union,
    update,
)

from agent.domain.license import DirectoryState
from agent.scim.resources import MULTI_VALUED
from agent.storage import user_order
from agent.storage.errors import Conflict, user_name_in_use
from agent.storage.records import SeatRow, SeatState, SeqBatch, UserRecord
from agent.storage.rows import (
    RECORD_COLUMNS,
    SEAT_FIELDS,
    WITH_GROUPS,
    dump,
    seat_columns,
    user_columns,
    user_from_row,
    user_records,
    user_value_rows,
)
from agent.storage.tables import group_members, groups, seat_pool, user_values, users
from agent.storage.transaction import Transaction
from agent.storage.write_behind import DriverStatement

USERS_TOTAL = select(seat_pool.c.users_total).where(seat_pool.c.id == 1)
# A user row's columns as a create or an update writes them (user_columns, the meta, the
# resource, the seat state), for the statements below: compiled once, run through the driver
# with the transaction's other queued writes (agent.storage.write_behind).
_FILTER_COLUMNS = tuple(user_columns({"userName": ""}))
_ROW_COLUMNS = (*_FILTER_COLUMNS, "last_modified", "version", "resource", *SEAT_FIELDS)


def _name_in_use(values: Mapping[str, Any]) -> Conflict:
    return user_name_in_use(values["user_name"])


# A userName in use (in any case) is refused by the unique index on user_name_ci: Conflict.
_QUEUED_INSERT = DriverStatement(
    insert(users).inline(),
    ("id", "created", *_ROW_COLUMNS),
    unique=("user_name_ci", _name_in_use),
)
_QUEUED_UPDATE = DriverStatement(
    update(users)
    .where(users.c.id == bindparam("u_id"))
    .values(**{c: bindparam(f"u_{c}") for c in _ROW_COLUMNS})
)
_QUEUED_DELETE = DriverStatement(delete(users).where(users.c.id == bindparam("d_id")))
# Before the delete: one user fewer, if the user is there to delete.
_QUEUED_ONE_FEWER = DriverStatement(
    update(seat_pool)
    .where(
        seat_pool.c.id == 1,
        select(users.c.id).where(users.c.id == bindparam("d_id")).exists(),
    )
    .values(users_total=seat_pool.c.users_total - 1)
)
_QUEUED_VALUES = DriverStatement(
    insert(user_values).inline(), ("user_id", "attr", "type", "value_ci", "is_primary")
)
_QUEUED_VALUES_GONE = DriverStatement(
    delete(user_values).where(user_values.c.user_id == bindparam("d_id"))
)
# PostgreSQL: a user's record read in the lock's exchange (Users.read_with_lock).
_PG_RECORD_BY_ID = DriverStatement(
    select(*WITH_GROUPS[True]).where(users.c.id == bindparam("user_id"))
)
_RECORD_BY_ID = {
    pg: select(*cols).where(users.c.id == bindparam("user_id")) for pg, cols in WITH_GROUPS.items()
}
SET_SEAT = (
    update(users)
    .where(users.c.id == bindparam("s_uid"))
    .values(
        **{f: bindparam(f"s_{f}") for f in SEAT_FIELDS},
        last_modified=bindparam("s_now"),
        version=users.c.version + 1,
    )
)
# Reconcile's seat pass (Users.seat_rows_after): the columns that judge a user's seat, then
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


def _multi_changed(old: dict, new: dict) -> bool:
    return any(old.get(a) != new.get(a) for a in MULTI_VALUED)


class Users:
    """The user rows of one transaction."""

    def __init__(self, tx: Transaction):
        self._tx = tx
        self.conn = tx.conn
        self.is_postgres = tx.is_postgres

    def name_taken(self, user_name: str, except_id: str | None = None) -> bool:
        q = select(users.c.id).where(users.c.user_name_ci == user_name.lower())
        found = self.conn.execute(q).scalar()
        return found is not None and found != except_id

    def insert(self, user_id: str, resource: dict, seat: SeatState, now: datetime) -> UserRecord:
        """Queue a new user: its row, its multi-valued rows and the user total, sent with
        whatever the transaction queued before (the seat grant and its ledger entry) and
        after (its outbox row), and on PostgreSQL with the COMMIT: one exchange. A userName
        in use is refused by the unique index: Conflict, raised by the statement or COMMIT
        that sends the insert; the transaction is then unusable and rolls back."""
        self._tx.seat_written(seat.license_state)
        writes = self._tx.writes
        writes.add(
            _QUEUED_INSERT,
            {
                "id": user_id,
                **user_columns(resource),
                "created": now,
                "last_modified": now,
                "version": 1,
                "resource": dump(resource),
                **seat_columns(seat),
            },
        )
        user_order.queue_count(writes, self._tx.is_postgres, user_id, 1)
        for row in user_value_rows(user_id, resource):
            writes.add(_QUEUED_VALUES, row)
        self._tx.change_pool(users=1)
        return UserRecord(user_id, resource, now, now, 1, seat)

    def update(
        self, record: UserRecord, resource: dict, seat: SeatState, now: datetime
    ) -> UserRecord:
        """Queue the new row of a user read in this transaction (the seat-pool lock keeps
        every other writer out, so a userName found free here stays free until commit)."""
        if resource["userName"].lower() != record.user_name.lower() and self.name_taken(
            resource["userName"], except_id=record.id
        ):
            raise user_name_in_use(resource["userName"])
        self._tx.seat_written(seat.license_state)
        version = record.version + 1
        row = {
            **user_columns(resource),
            "last_modified": now,
            "version": version,
            "resource": dump(resource),
            **seat_columns(seat),
        }
        writes = self._tx.writes
        writes.add(_QUEUED_UPDATE, {"u_id": record.id, **{f"u_{k}": v for k, v in row.items()}})
        if _multi_changed(record.resource, resource):
            writes.add(_QUEUED_VALUES_GONE, {"d_id": record.id})
            for value_row in user_value_rows(record.id, resource):
                writes.add(_QUEUED_VALUES, value_row)
        return UserRecord(record.id, resource, record.created, now, version, seat, record.groups)

    def set_seat(self, user_id: str, seat: SeatState, now: datetime) -> None:
        """Change only a user's seat state (queue promotion, reconcile): not a directory edit."""
        self._tx.seat_written(seat.license_state)
        params = {
            **{f"s_{k}": v for k, v in seat_columns(seat).items()},
            "s_uid": user_id,
            "s_now": now,
        }
        if self._tx.deferred is not None:
            self._tx.deferred.seats.append(params)
            return
        self.conn.execute(SET_SEAT, params)

    def delete(self, user_id: str) -> None:
        """Queue the delete of a user, the user total's decrement and its bucket's (only if
        the user is there); its multi-valued rows and memberships go with it (ON DELETE
        CASCADE)."""
        writes = self._tx.writes
        writes.add(_QUEUED_ONE_FEWER, {"d_id": user_id})
        user_order.queue_count(writes, self._tx.is_postgres, user_id, -1)
        writes.add(_QUEUED_DELETE, {"d_id": user_id})

    def recount(self) -> tuple[int, int]:
        """Set the stored user total from COUNT(*), and the counted buckets of the user order
        (reconcile); returns the total (was, now)."""
        was = int(self.conn.execute(USERS_TOTAL).scalar_one())
        now = int(self.conn.execute(select(func.count()).select_from(users)).scalar_one())
        if was != now:
            self.conn.execute(update(seat_pool).where(seat_pool.c.id == 1).values(users_total=now))
        user_order.recount(self.conn)
        return was, now

    def read_with_lock(self, user_id: str) -> tuple[str, Any]:
        """PostgreSQL: the query of ``user_id``'s record, to run in the seat-pool lock's
        exchange (SeatPool.lock); hand its row to ``keep``."""
        params = _PG_RECORD_BY_ID.parameters(self.conn.dialect, {"user_id": user_id})
        return _PG_RECORD_BY_ID.sql(self.conn.dialect), params

    def keep(self, user_id: str, row: Any) -> None:
        """The row of ``read_with_lock``: the next ``get(user_id)`` returns its record, if
        this transaction has queued no write since (Transaction.writes forgets it)."""
        self._tx.kept_user_row = (user_id, row)

    def get(self, user_id: str, with_groups: bool = True) -> UserRecord | None:
        kept, self._tx.kept_user_row = self._tx.kept_user_row, None
        if kept is not None and kept[0] == user_id and with_groups:
            if kept[1] is None:
                return None
            record = user_from_row(kept[1])
            self.attach_queue_positions([record])
            return record
        if with_groups:
            row = self.conn.execute(_RECORD_BY_ID[self.is_postgres], {"user_id": user_id}).first()
        else:
            row = self.conn.execute(select(*RECORD_COLUMNS).where(users.c.id == user_id)).first()
        if row is None:
            return None
        record = user_from_row(row)
        self.attach_queue_positions([record])
        return record

    def get_many(self, ids: Iterable[str]) -> list[UserRecord]:
        ids = list(ids)
        out: list[UserRecord] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = self.conn.execute(select(*RECORD_COLUMNS).where(users.c.id.in_(chunk))).all()
            out.extend(user_records(rows))
        return out

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

    def queued(self, limit: int | None = None) -> list[UserRecord]:
        """Queued users, first come first served (queued_at, then id)."""
        if not self._tx.may_have_queued:  # none when the lock was taken, none queued since
            return []
        q = (
            select(users)
            .where(users.c.license_state == "queued")
            .order_by(users.c.queued_at, users.c.id)
        )
        if limit is not None:
            q = q.limit(limit)
        records = user_records(self.conn.execute(q).all())
        for pos, r in enumerate(records, start=1):
            r.queue_position = pos
        return records

    # -- walks in seq order (keyset paging) ------------------------------------------------

    def after(self, seq: int, limit: int) -> SeqBatch[UserRecord]:
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

    def find_id(self, key: str) -> str | None:
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
        return SeqBatch(user_records(rows), rows[-1].seq)

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

    # -- counts ----------------------------------------------------------------------------

    def free_ids(self) -> set[str]:
        """Ids of the users whose license state is ``free``."""
        q = select(users.c.id).where(users.c.license_state == "free")
        return {r[0] for r in self.conn.execute(q)}

    def queued_count(self) -> int:
        return int(
            self.conn.execute(
                select(func.count()).select_from(users).where(users.c.license_state == "queued")
            ).scalar_one()
        )

    def count(self) -> int:
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
