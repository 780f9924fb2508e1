"""Provisioning use cases for SCIM Users and Groups: one write transaction each.

Every change that can move a seat goes through ``SeatEngine.settle`` inside the same
transaction as the write; seats it frees are handed to queued users before commit.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import ParamSpec, TypeVar

from agent.scim import patch as scim_patch
from agent.scim.cursor import Position
from agent.scim.errors import ScimError
from agent.scim.filter import attribute_paths, parse_filter
from agent.scim.resources import (
    SEAT_EXT,
    etag,
    normalize_group,
    normalize_user,
    sanitize_user,
)
from agent.services.seats import Cause, SeatEngine, SeatRefused, directory_state
from agent.storage import cursor_pages, filter_sql
from agent.storage.cursor_pages import CursorPage
from agent.storage.errors import Conflict, UnknownMembers, user_name_in_use
from agent.storage.records import GroupRecord, Page, UserRecord
from agent.storage.store import Store, StoreTx

SCIM = Cause("scim")
ADMIN = Cause("admin")
P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class ListQuery:
    """RFC 7644 §3.4.2 query parameters, already parsed."""

    filter: str | None = None
    start_index: int = 1
    count: int = 100
    sort_by: str | None = None
    descending: bool = False
    with_members: bool = True


def _announces_refusals(method: Callable[P, R]) -> Callable[P, R]:
    """After a refused activation rolled back, record it (alerts) in a transaction of its own."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except SeatRefusedError as err:
            self = args[0]
            with self.store.write() as tx:  # type: ignore[attr-defined]
                self.seats.record_refusal(tx, err.refusal)  # type: ignore[attr-defined]
            raise

    return wrapper


class Provisioning:
    def __init__(
        self,
        store: Store,
        seats: SeatEngine,
        clock: Callable[[], datetime],
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        seat_extension: bool = False,
    ):
        self.store = store
        self.seats = seats
        self.clock = clock
        self.new_id = new_id
        # [scim] seat_extension: whether SCIM clients see (and may filter and sort on) the
        # seat-agent extension; off, its attributes are as unknown as any other.
        self.seat_extension = seat_extension

    # -- users -----------------------------------------------------------------------------

    @_announces_refusals
    def create_user(self, body: object, cause: Cause = SCIM) -> UserRecord:
        """RFC 7644 §3.3: create; the seat decision and the insert are one transaction."""
        resource = normalize_user(body)
        user_id = self.new_id()
        cause = cause.via("POST /Users")
        # A userName in use is found by the insert (the unique index; Conflict is a 409),
        # which is sent with the COMMIT: no lookup first, so the errors are mapped around the
        # commit too. Only a refused seat looks, so that a name in use is still a 409 rather
        # than a 403 when the seats are full.
        with _mapped_errors(), self.store.write() as tx:
            try:
                seat = self.seats.settle(
                    tx,
                    user_id=user_id,
                    user_name=resource["userName"],
                    state=directory_state(resource, ()),
                    previous=None,
                    cause=cause,
                )
            except SeatRefused:
                if tx.users.name_taken(resource["userName"]):
                    raise user_name_in_use(resource["userName"]) from None
                raise
            record = tx.users.insert(user_id, resource, seat, self.clock())
            self.seats.notifier.user_changed(tx, record.id)
            tx.users.attach_queue_positions([record])  # a new user belongs to no group yet
            return record

    def get_user(self, user_id: str) -> UserRecord:
        with self.store.read() as tx:
            return _require_user(tx, user_id)

    def list_users(self, query: ListQuery) -> Page:
        where = None
        lookup = None
        if query.filter:
            expr = parse_filter(query.filter, "User")
            self._refuse_unserved(attribute_paths(expr), query.filter, "invalidFilter")
            # The IdPs' lookup (userName eq "..."), unsorted: statements built once.
            lookup = None if query.sort_by else filter_sql.user_lookup(expr)
            if lookup is None:
                where = filter_sql.user_where(expr)
        order = []
        if query.sort_by:
            self._refuse_unserved([query.sort_by], query.sort_by, "invalidValue")
            col = filter_sql.user_sort_column(query.sort_by)
            order.append(_ordered(col, query.descending))
        with self.store.read() as tx:
            if lookup is not None:
                return tx.user_pages.lookup(lookup, query.start_index, query.count)
            return tx.user_pages.page(where, order, query.start_index, query.count)

    def user_cursor_page(
        self, filter_text: str | None, position: Position | None, count: int
    ) -> CursorPage[UserRecord]:
        """RFC 9865 cursor paging of /Users: the users after (or before) ``position`` in seq
        order, matching the filter (None: from the first)."""
        where = None
        if filter_text:
            expr = parse_filter(filter_text, "User")
            self._refuse_unserved(attribute_paths(expr), filter_text, "invalidFilter")
            where = filter_sql.user_where(expr)
        with self.store.read() as tx:
            return cursor_pages.user_page(tx, where, **_keyset(position), count=count)

    def group_cursor_page(
        self, filter_text: str | None, position: Position | None, count: int, with_members: bool
    ) -> CursorPage[GroupRecord]:
        """RFC 9865 cursor paging of /Groups, as ``user_cursor_page``."""
        where = filter_sql.group_where(parse_filter(filter_text, "Group")) if filter_text else None
        with self.store.read() as tx:
            return cursor_pages.group_page(
                tx, where, **_keyset(position), count=count, with_members=with_members
            )

    def _refuse_unserved(self, paths: Iterable[str], text: str, scim_type: str) -> None:
        """RFC 7644 §3.4.2.2/§3.4.2.3: an attribute of an extension the server does not serve
        (the seat-agent one with ``[scim] seat_extension`` off) is unknown: 400, not ignored."""
        if self.seat_extension:
            return
        prefix = SEAT_EXT.lower() + ":"
        for path in paths:
            if path.strip().lower().startswith(prefix):
                what = "in filter" if scim_type == "invalidFilter" else "to sort by"
                raise ScimError(400, f"Unknown attribute '{path}' {what}: '{text}'", scim_type)

    @_announces_refusals
    def replace_user(
        self, user_id: str, body: object, if_match: str | None, cause: Cause = SCIM
    ) -> UserRecord:
        """RFC 7644 §3.5.1: PUT replaces every writable attribute.

        A PUT that leaves ``active`` out keeps the stored value: the schema gives ``active`` no
        default, and reading an omission as ``true`` would reactivate (and hand a seat to) a
        user the IdP deactivated, just because it resent the profile without the flag.
        """
        resource = normalize_user(body)
        cause = cause.via("PUT")
        if not _mentions_active(body):
            return self._update_user(
                user_id,
                lambda old: {**resource, "active": bool(old.get("active", True))},
                if_match,
                cause,
            )
        return self._update_user(user_id, lambda _old: resource, if_match, cause)

    @_announces_refusals
    def patch_user(
        self, user_id: str, body: object, if_match: str | None, cause: Cause = SCIM
    ) -> UserRecord:
        """RFC 7644 §3.5.2 PATCH, with every Okta and Entra form (agent.scim.patch)."""
        operations = scim_patch.parse_patch_request(body)

        def change(old: dict) -> dict:
            return sanitize_user(scim_patch.apply_user_patch(old, operations))

        return self._update_user(user_id, change, if_match, cause.via("PATCH"))

    def _update_user(
        self,
        user_id: str,
        change: Callable[[dict], dict],
        if_match: str | None,
        cause: Cause,
    ) -> UserRecord:
        with self.store.write(user_id) as tx, _mapped_errors():
            record = _require_user(tx, user_id)
            _check_etag(if_match, record.version)
            resource = change(record.resource)
            if resource == record.resource:
                return record
            seat = self.seats.settle(
                tx,
                user_id=user_id,
                user_name=resource["userName"],
                state=directory_state(resource, [g[1] for g in record.groups]),
                previous=record.seat,
                cause=cause,
            )
            updated = tx.users.update(record, resource, seat, self.clock())
            self.seats.notifier.user_changed(tx, user_id)
            if record.seat.holds_seat and not seat.holds_seat:
                self.seats.promote_queue(tx, cause)  # others' seats; this user's stays as set
            tx.users.attach_queue_positions([updated])
            return updated

    @_announces_refusals
    def reevaluate_user(self, user_id: str, cause: Cause = ADMIN) -> UserRecord:
        """Admin path to a seat: decide again for a user (a fallback user asking for a real
        seat, a refused one after seats were added). Same decision, same outcome at the limit."""
        cause = cause.via("re-evaluate")
        with self.store.write(user_id) as tx, _mapped_errors():
            record = _require_user(tx, user_id)
            previous = replace(record.seat, on_fallback=False)
            seat = self.seats.settle(
                tx,
                user_id=user_id,
                user_name=record.user_name,
                state=directory_state(record.resource, [g[1] for g in record.groups]),
                previous=previous,
                cause=cause,
            )
            if seat != record.seat:
                tx.users.set_seat(user_id, seat, self.clock())
                self.seats.notifier.user_changed(tx, user_id)
            if record.seat.holds_seat and not seat.holds_seat:
                self.seats.promote_queue(tx, cause)  # the freed seat, in this transaction
            return _reread_user(tx, user_id)

    def delete_user(self, user_id: str, if_match: str | None = None, cause: Cause = SCIM) -> None:
        """RFC 7644 §3.6: delete; a held seat is freed and handed to the queue."""
        with self.store.write(user_id) as tx, _mapped_errors():
            record = _require_user(tx, user_id)
            _check_etag(if_match, record.version)
            self.seats.release_deleted(tx, record, cause)
            for group_id, _ in record.groups:  # its member list changes: a new version
                tx.groups.touch(group_id, self.clock())
            tx.users.delete(user_id)
            self.seats.notifier.user_deleted(tx, user_id)
            if record.seat.holds_seat:
                self.seats.promote_queue(tx, cause)  # the freed seat, as PATCH does

    # -- groups ----------------------------------------------------------------------------

    @_announces_refusals
    def create_group(self, body: object, cause: Cause = SCIM) -> GroupRecord:
        resource, members = normalize_group(body)
        group_id = self.new_id()
        with self.store.write() as tx, _mapped_errors():
            tx.groups.insert(group_id, resource, self.clock())
            if members:
                added = tx.groups.add_members(group_id, members)
                self._resettle(tx, added, cause)
            self.seats.notifier.group_changed(tx, group_id)
            return _require_group(tx, group_id, with_members=True)

    def get_group(self, group_id: str, with_members: bool = True) -> GroupRecord:
        with self.store.read() as tx:
            return _require_group(tx, group_id, with_members)

    def list_groups(self, query: ListQuery) -> Page:
        where = (
            filter_sql.group_where(parse_filter(query.filter, "Group")) if query.filter else None
        )
        order = []
        if query.sort_by:
            col = filter_sql.group_sort_column(query.sort_by)
            order.append(_ordered(col, query.descending))
        with self.store.read() as tx:
            return tx.groups.page(where, order, query.start_index, query.count, query.with_members)

    @_announces_refusals
    def replace_group(
        self, group_id: str, body: object, if_match: str | None, cause: Cause = SCIM
    ) -> GroupRecord:
        """RFC 7644 §3.5.1: PUT replaces displayName, externalId and the member list."""
        resource, members = normalize_group(body)
        with self.store.write() as tx, _mapped_errors():
            record = _require_group(tx, group_id, with_members=False)
            _check_etag(if_match, record.version)
            renamed = record.resource.get("displayName") != resource["displayName"]
            tx.groups.update(record, resource, self.clock())
            new = list(members or [])
            old = set(tx.groups.member_ids(group_id))
            removed = tx.groups.remove_members(group_id, [m for m in old if m not in set(new)])
            added = tx.groups.add_members(group_id, [m for m in new if m not in old])
            affected = tx.groups.member_ids(group_id) if renamed else [*added]
            self._resettle(tx, [*affected, *removed], cause)
            self.seats.notifier.group_changed(tx, group_id)
            return _require_group(tx, group_id, with_members=True)

    @_announces_refusals
    def patch_group(
        self, group_id: str, body: object, if_match: str | None, cause: Cause = SCIM
    ) -> GroupRecord:
        """RFC 7644 §3.5.2 on a Group; member changes cost O(changed members), not group size."""
        operations = scim_patch.parse_patch_request(body)
        with self.store.write() as tx, _mapped_errors():
            record = _require_group(tx, group_id, with_members=False)
            _check_etag(if_match, record.version)
            resource, delta = scim_patch.apply_group_patch(record.resource, operations)
            resource, _ = normalize_group(resource)
            renamed = record.resource.get("displayName") != resource["displayName"]
            now = self.clock()
            changed = resource != record.resource
            if changed:
                record = tx.groups.update(record, resource, now)
            removed: list[str] = []
            if delta.remove_all:
                removed = tx.groups.remove_all_members(group_id)
            elif delta.remove:
                removed = tx.groups.remove_members(group_id, delta.remove)
            added = tx.groups.add_members(group_id, delta.add) if delta.add else []
            if (removed or added) and not renamed:
                tx.groups.touch(group_id, now)
            affected = tx.groups.member_ids(group_id) if renamed else added
            self._resettle(tx, [*affected, *removed], cause)
            if changed or removed or added:
                self.seats.notifier.group_changed(tx, group_id)
            return _require_group(tx, group_id, with_members=False)

    @_announces_refusals
    def delete_group(self, group_id: str, if_match: str | None = None, cause: Cause = SCIM) -> None:
        with self.store.write() as tx, _mapped_errors():
            record = _require_group(tx, group_id, with_members=False)
            _check_etag(if_match, record.version)
            former = tx.groups.delete(group_id)
            self._resettle(tx, former, cause)
            self.seats.notifier.group_deleted(tx, group_id)

    def _resettle(self, tx: StoreTx, user_ids: Iterable[str], cause: Cause) -> None:
        """Group membership maps to roles (``[license] group_roles``): re-decide those users."""
        if not self.seats.policy.group_roles:
            return
        cause = replace(cause, path="group membership")
        ids = list(dict.fromkeys(user_ids))
        if not ids:
            return
        freed = False
        names = tx.groups.names_by_user(ids)
        for user in tx.users.get_many(ids):
            seat = self.seats.settle(
                tx,
                user_id=user.id,
                user_name=user.user_name,
                state=directory_state(user.resource, names.get(user.id, [])),
                previous=user.seat,
                cause=cause,
            )
            if seat != user.seat:
                tx.users.set_seat(user.id, seat, self.clock())
                self.seats.notifier.user_changed(tx, user.id)
                freed = freed or (user.seat.holds_seat and not seat.holds_seat)
        if freed:
            self.seats.promote_queue(tx, cause)


def _mentions_active(body: object) -> bool:
    """Whether a User body sets ``active`` (attribute names are case-insensitive, RFC 7643
    §2.1; URN-prefixed keys are ignored by ``normalize_user``, so they do not count)."""
    return isinstance(body, dict) and any(
        isinstance(k, str) and k.lower() == "active" for k in body
    )


def _ordered(col, descending: bool):
    """RFC 7644 §3.4.2.3: missing values sort last ascending and first descending, on both
    databases (SQLite and PostgreSQL place NULLs differently by default)."""
    return col.desc().nulls_first() if descending else col.asc().nulls_last()


def _require_user(tx: StoreTx, user_id: str) -> UserRecord:
    record = tx.users.get(user_id)
    if record is None:
        raise ScimError(404, f"User {user_id} not found")
    return record


def _reread_user(tx: StoreTx, user_id: str) -> UserRecord:
    return _require_user(tx, user_id)


def _require_group(tx: StoreTx, group_id: str, with_members: bool) -> GroupRecord:
    record = tx.groups.get(group_id, with_members=with_members)
    if record is None:
        raise ScimError(404, f"Group {group_id} not found")
    return record


def _check_etag(if_match: str | None, version: int) -> None:
    """RFC 7644 §3.14: a stale If-Match is 412 and changes nothing."""
    if if_match is None or if_match.strip() == "*":
        return
    tags = [t.strip() for t in if_match.split(",")]
    current = etag(version)
    if current not in tags and current.removeprefix("W/") not in tags:
        raise ScimError(412, f"Resource version is {current}, not {if_match}")


@contextmanager
def _mapped_errors() -> Iterator[None]:
    """Store and seat exceptions become SCIM errors here, inside the transaction (so it rolls
    back and nothing changes)."""
    try:
        yield
    except Conflict as exc:
        raise ScimError(409, str(exc), "uniqueness") from None
    except UnknownMembers as exc:
        raise ScimError(
            400, f"Unknown member id(s): {', '.join(exc.ids[:10])}", "invalidValue"
        ) from None
    except SeatRefused as exc:
        raise SeatRefusedError(exc) from None


class SeatRefusedError(ScimError):
    """HTTP 403 whose detail reads well in Okta's task list and Entra's provisioning log."""

    def __init__(self, refusal: SeatRefused):
        super().__init__(403, refusal.detail)
        self.refusal = refusal


def _keyset(position: Position | None) -> dict[str, int | None]:
    """``after``/``before`` of a keyset page from a cursor's position (None: the first page)."""
    if position is None:
        return {"after": None, "before": None}
    if position.backward:
        return {"after": None, "before": position.seq}
    return {"after": position.seq, "before": None}
