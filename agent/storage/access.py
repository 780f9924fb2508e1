"""The two kinds of connection the store opens, by execution option, and the error a write on
a read connection raises (agent.storage.engine enforces it for statements, and
agent.storage.write_behind for queued writes)."""

from __future__ import annotations

WRITE = "seat_write"
READ = "seat_read"  # a read: only SELECT may run on the connection


class WriteInRead(RuntimeError):
    """A statement other than SELECT on a read connection: a store bug, never run."""
