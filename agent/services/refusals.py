"""Refused demand (issue 14): what a full pool turned away, for the admin API, the CLI, the
seat report, the metrics and the status page.

The seat engine records each refusal, queueing and fallback (agent.services.seats); this module
only reads them.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from agent.storage import refusals as rows
from agent.storage.refusals import OUTCOMES, RefusalRow
from agent.storage.store import StoreTx

__all__ = ["OUTCOMES", "RefusalRow", "refusal_json", "refusals_per_day", "refused_counts"]

DAY = timedelta(days=1)


def refusals_per_day(tx: StoreTx, since: datetime) -> list[tuple[date, dict[str, int]]]:
    """Counts per outcome (``refused``, ``queued``, ``fallback``; each present) per UTC day from
    ``since``, oldest first; days with none are left out."""
    return rows.per_day(tx, since)


def refused_counts(tx: StoreTx, now: datetime) -> dict[str, int]:
    """Refusals (403s) ever and in the last 24 hours: the seat report's ``refused``."""
    return {
        "total": rows.totals(tx)["refused"],
        "last_24h": rows.totals(tx, now - DAY)["refused"],
    }


def refusal_json(r: RefusalRow) -> dict[str, Any]:
    """One refusal as ``GET /admin/refusals`` and ``seat-agent refusals --json`` show it."""
    return {
        "at": r.at.isoformat(),
        "userId": r.user_id,
        "userName": r.user_name,
        "outcome": r.outcome,
        "path": r.path,
        "licensed": r.licensed,
        "consumed": r.consumed,
        "queued": r.queued,
    }
