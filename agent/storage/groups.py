"""Groups and their members."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from agent.storage.errors import Conflict, UnknownMembers
from agent.storage.records import GroupRecord, Page
from agent.storage.rows import dump, utc
from agent.storage.tables import group_members, groups, users
from agent.storage.transaction import Transaction, per_key

# PostgreSQL (psycopg placeholders), run once per key by transaction.per_key.
GROUPS_OF_USER_SQL = (
    "SELECT gm.user_id, g.display_name FROM group_members gm"
    " JOIN groups g ON g.id = gm.group_id WHERE gm.user_id = %s"
)
# One member out, by the whole primary key.
REMOVE_MEMBER_SQL = (
    "DELETE FROM group_members WHERE group_id = %s AND user_id = %s RETURNING user_id"
)


def _group_from_row(row: Any) -> GroupRecord:
    return GroupRecord(
        id=row.id,
        resource=json.loads(row.resource),
        created=utc(row.created),  # type: ignore[arg-type]
        last_modified=utc(row.last_modified),  # type: ignore[arg-type]
        version=row.version,
    )


class Groups:
    """The groups of one transaction."""

    def __init__(self, tx: Transaction):
        self._tx = tx
        self.conn = tx.conn
        self.is_postgres = tx.is_postgres

    def _display_name_taken(self, name: str, except_id: str | None = None) -> bool:
        found = self.conn.execute(
            select(groups.c.id).where(groups.c.display_name_ci == name.lower())
        ).scalar()
        return found is not None and found != except_id

    def insert(self, group_id: str, resource: dict, now: datetime) -> GroupRecord:
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
                        resource=dump(resource),
                    )
                )
        except IntegrityError:
            raise Conflict(f"Group displayName '{name}' is already in use") from None
        return GroupRecord(group_id, resource, now, now, 1, members=[])

    def update(self, record: GroupRecord, resource: dict, now: datetime) -> GroupRecord:
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
                resource=dump(resource),
            )
        )
        return GroupRecord(record.id, resource, record.created, now, version, record.members)

    def touch(self, group_id: str, now: datetime) -> None:
        """A new version of the group (its member list changed)."""
        self.conn.execute(
            update(groups)
            .where(groups.c.id == group_id)
            .values(last_modified=now, version=groups.c.version + 1)
        )

    def delete(self, group_id: str) -> list[str]:
        """Delete a group; return the ids of its former members."""
        members = self.member_ids(group_id)
        self.conn.execute(delete(group_members).where(group_members.c.group_id == group_id))
        self.conn.execute(delete(groups).where(groups.c.id == group_id))
        return members

    def get(self, group_id: str, with_members: bool = True) -> GroupRecord | None:
        row = self.conn.execute(select(groups).where(groups.c.id == group_id)).first()
        if row is None:
            return None
        record = _group_from_row(row)
        if with_members:
            self._attach_members([record])
        return record

    def page(
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

    def names_of_user(self, user_id: str) -> list[str]:
        q = (
            select(groups.c.display_name)
            .join(group_members, groups.c.id == group_members.c.group_id)
            .where(group_members.c.user_id == user_id)
        )
        return [r[0] for r in self.conn.execute(q)]

    def names_by_user(self, user_ids: Sequence[str]) -> dict[str, list[str]]:
        """The names of each user's groups. On PostgreSQL one lookup per user, pipelined:
        ``user_id IN (...)`` of many users is planned as a scan of every membership row when
        the statistics are older than the memberships (see transaction.per_key)."""
        out: dict[str, list[str]] = {u: [] for u in user_ids}
        if self.is_postgres:
            for user_id, name in per_key(self.conn, GROUPS_OF_USER_SQL, [(u,) for u in out]):
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
        rows = per_key(self.conn, REMOVE_MEMBER_SQL, [(group_id, u) for u in user_ids])
        return [row[0] for row in rows]

    def remove_all_members(self, group_id: str) -> list[str]:
        members = self.member_ids(group_id)
        self.conn.execute(delete(group_members).where(group_members.c.group_id == group_id))
        return members
