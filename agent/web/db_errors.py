"""A database error that is not an outage (a bug, a constraint the code did not expect) is a 500
whose log line carries no request data.

Flask's default log of an unhandled exception prints its message, and a driver's message can
quote the data: PostgreSQL's ``DETAIL: Key (user_name_ci)=(ada@example.com) already exists``.
Statement parameters are already hidden (``hide_parameters``, agent.storage.engine); this log
line keeps the driver's error class, its SQLSTATE (or SQLite error name), the statement with
its placeholders and the stack, and leaves the message out. The transaction rolled back, so
the request changed nothing.
"""

from __future__ import annotations

import logging
import traceback

from sqlalchemy.exc import DBAPIError

log = logging.getLogger("seat_agent.database")

__all__ = ["DETAIL", "log_database_error"]

DETAIL = (
    "Internal database error; the request changed nothing. Retry it, and if it fails again "
    "give the administrator its X-Request-Id"
)
_MAX_STATEMENT = 400


def log_database_error(err: DBAPIError) -> None:
    """Log ``err`` without its message (see the module docstring)."""
    orig = err.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "sqlite_errorname", None)
    statement = " ".join(str(err.statement or "").split())[:_MAX_STATEMENT]
    stack = "".join(traceback.format_tb(err.__traceback__))
    log.error(
        "database error %s (%s) in statement: %s\n%s",
        type(orig).__name__,
        code or "no code",
        statement,
        stack.rstrip(),
    )
