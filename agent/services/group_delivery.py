"""Group delivery (``[downstream] push_groups``): the outbox's ``push_group`` and
``delete_group`` rows, sent to a connector that takes groups.

Like a user push, a group push sends the group as it is at delivery time: its name and its
members by their downstream ids. A member whose own push has not reached the application yet
makes the group wait (a temporary error, retried with backoff), so the application never sees
a group that names a user it does not have; a member the application does not hold (never
delivered, or deleted there) is left out.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from agent.connectors.base import DeliveryError, EffectiveGroup
from agent.services.delivery import Completion, Handler
from agent.services.outbox_notifier import DELETE_GROUP, DELETE_USER, PUSH_GROUP, PUSH_USER
from agent.storage import outbox
from agent.storage.outbox import OutboxMessage
from agent.storage.store import Store, StoreTx


class GroupConnector(Protocol):
    def push_group(self, group: EffectiveGroup, remote_id: str | None) -> str: ...

    def delete_group(self, group_id: str, remote_id: str | None) -> None: ...


class GroupHandlers:
    def __init__(self, connector: GroupConnector, store: Store):
        self.connector = connector
        self.store = store

    def handlers(self) -> dict[str, Handler]:
        return {PUSH_GROUP: self.push_group, DELETE_GROUP: self.delete_group}

    @staticmethod
    def _group_id(message: OutboxMessage) -> str:
        return str(message.payload.get("group_id") or message.key)

    def push_group(self, message: OutboxMessage) -> Completion:
        group_id = self._group_id(message)
        with self.store.read() as tx:
            record = tx.groups.get(group_id, with_members=False)
            remote = outbox.remote_id(tx, group_id)
            if record is None:
                group = None
            else:
                members = tx.groups.member_ids(group_id)
                linked = outbox.remote_ids(tx, members)
                unlinked = [m for m in members if m not in linked]
                waiting = outbox.pending_keys(tx, unlinked, (PUSH_USER, DELETE_USER))
                group = EffectiveGroup(
                    group_id,
                    str(record.resource.get("displayName") or ""),
                    [linked[m] for m in members if m in linked],
                )
        if group is None:
            self.connector.delete_group(group_id, remote)
            return _unlink(group_id)
        if waiting:
            raise DeliveryError(
                f"group {group.display_name!r}: waiting for {waiting} members to reach the"
                " application first"
            )
        return _link(group_id, self.connector.push_group(group, remote))

    def delete_group(self, message: OutboxMessage) -> Completion:
        group_id = self._group_id(message)
        with self.store.read() as tx:
            remote = outbox.remote_id(tx, group_id)
        self.connector.delete_group(group_id, remote)
        return _unlink(group_id)


def _link(group_id: str, remote: str) -> Completion:
    def complete(tx: StoreTx, now: datetime) -> None:
        outbox.link(tx, group_id, remote, now)

    return complete


def _unlink(group_id: str) -> Completion:
    def complete(tx: StoreTx, now: datetime) -> None:
        outbox.unlink(tx, group_id)

    return complete
