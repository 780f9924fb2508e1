"""Exactly one scheduler across processes and hosts: a lease row in the shared database.

Every scheduler process renews the lease on a short interval; only the holder runs jobs. A
holder that dies stops renewing and another takes over once the lease lapses. (APScheduler 3
cannot share a job store between schedulers, so the lease, not the job store, decides.)
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from agent.storage import outbox
from agent.storage.store import Store

SCHEDULER_LEASE = "scheduler"


def holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Lease:
    def __init__(
        self,
        store: Store,
        holder: str,
        seconds: float,
        clock: Callable[[], datetime],
        name: str = SCHEDULER_LEASE,
    ):
        self.store = store
        self.holder = holder
        self.seconds = seconds
        self.clock = clock
        self.name = name
        self.held = False
        self.until: datetime | None = None

    def renew(self) -> bool:
        """Take or renew the lease; returns whether this process holds it now."""
        now = self.clock()
        until = now + timedelta(seconds=self.seconds)
        with self.store.write() as tx:
            self.held = outbox.acquire_lease(tx, self.name, self.holder, now, until)
        self.until = until if self.held else None
        return self.held

    def valid(self) -> bool:
        """Whether this process may still act: it holds the lease and the lease has not
        lapsed by the clock (a renewal that is late or failing does not extend it). Jobs ask
        this between batches."""
        return self.held and self.until is not None and self.clock() < self.until

    def release(self) -> None:
        if self.held:
            with self.store.write() as tx:
                outbox.release_lease(tx, self.name, self.holder)
            self.held = False
            self.until = None

    def current_holder(self) -> str | None:
        with self.store.read() as tx:
            return outbox.lease_holder(tx, self.name, self.clock())
