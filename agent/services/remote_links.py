"""Which downstream users are the agent's, for applications that keep no ``externalId``.

A SCIM application stores our user id in ``externalId`` (RFC 7643 §3.1); a vendor API such as
Kintone's User API has no such field. The delivery worker records, for every user it pushed,
the downstream id the application answered (``downstream_links``). ``LinkedConnector`` puts
that knowledge back into ``list_users``: a downstream user without an ``externalId`` whose id
the agent recorded is reported with our user id, so reconcile (drift) and the reduction
workflow recognise it; a user the agent never pushed stays "unknown" (never deleted).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from agent.connectors.base import Connector, EffectiveUser, RemoteUser
from agent.storage import outbox
from agent.storage.store import Store


class LinkedConnector:
    """A Connector whose ``list_users`` fills a missing ``external_id`` from the recorded
    downstream links; every other call goes to the wrapped connector unchanged."""

    def __init__(self, connector: Connector, store: Store):
        self.connector = connector
        self.store = store

    @property
    def reports_roles(self) -> bool:
        """False when the application's roles are not managed, so not compared."""
        return bool(getattr(self.connector, "reports_roles", True))

    def push_user(self, state: EffectiveUser, remote_id: str | None) -> str:
        return self.connector.push_user(state, remote_id)

    def delete_user(self, user_id: str, remote_id: str | None) -> None:
        self.connector.delete_user(user_id, remote_id)

    def describe(self) -> dict[str, Any]:
        return self.connector.describe()  # type: ignore[attr-defined, no-any-return]

    def dry_run(self, state: EffectiveUser) -> dict[str, Any]:
        return self.connector.dry_run(state)  # type: ignore[attr-defined, no-any-return]

    def close(self) -> None:
        close = getattr(self.connector, "close", None)
        if close is not None:
            close()

    def list_users(self) -> Iterator[RemoteUser]:
        ours: dict[str, str] | None = None  # read at the first user that needs it
        for remote in self.connector.list_users():
            if not remote.external_id:
                if ours is None:
                    with self.store.read() as tx:
                        ours = outbox.users_by_remote_id(tx)
                user_id = ours.get(remote.remote_id)
                if user_id is not None:
                    remote = dataclasses.replace(remote, external_id=user_id)
            yield remote
