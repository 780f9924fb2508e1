"""Rows of the ``reductions`` table: plain functions on a StoreTx returning plain dataclasses.

A workflow row carries its plan (JSON: candidates with reasons and per-user progress), the
reason it waits or stopped, and its history, so it resumes after a restart.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update

from agent.storage.rows import utc
from agent.storage.store import StoreTx
from agent.storage.tables import reductions


@dataclass
class ReductionRow:
    id: str
    target: int
    state: str
    created: datetime
    updated: datetime
    plan: dict[str, Any]
    reason: str | None
    history: list[dict[str, Any]] = field(default_factory=list)
    proposed_by: str = "admin"


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _row(r: Any) -> ReductionRow:
    return ReductionRow(
        id=r.id,
        target=r.target,
        state=r.state,
        created=utc(r.created),  # type: ignore[arg-type]
        updated=utc(r.updated),  # type: ignore[arg-type]
        plan=json.loads(r.plan),
        reason=r.reason,
        history=json.loads(r.history),
        proposed_by=r.proposed_by,
    )


def insert_reduction(tx: StoreTx, row: ReductionRow) -> None:
    tx.ceilings.clear()
    tx.conn.execute(
        insert(reductions).values(
            id=row.id,
            target=row.target,
            state=row.state,
            created=row.created,
            updated=row.updated,
            plan=_dump(row.plan),
            reason=row.reason,
            history=_dump(row.history),
            proposed_by=row.proposed_by,
        )
    )


def get_reduction(tx: StoreTx, reduction_id: str) -> ReductionRow | None:
    r = tx.conn.execute(select(reductions).where(reductions.c.id == reduction_id)).first()
    return _row(r) if r is not None else None


def list_reductions(
    tx: StoreTx, states: tuple[str, ...] | None = None, limit: int = 100
) -> list[ReductionRow]:
    """Newest first."""
    q = select(reductions)
    if states is not None:
        q = q.where(reductions.c.state.in_(states))
    q = q.order_by(reductions.c.created.desc(), reductions.c.id).limit(limit)
    return [_row(r) for r in tx.conn.execute(q)]


def latest_created(tx: StoreTx) -> datetime | None:
    r = tx.conn.execute(
        select(reductions.c.created).order_by(reductions.c.created.desc()).limit(1)
    ).first()
    return utc(r[0]) if r is not None else None


def save_reduction(tx: StoreTx, row: ReductionRow, expected_state: str) -> bool:
    """Write ``row`` only if the stored state is still ``expected_state`` (compare and set), so
    a cancel that slipped in between read and write is never overwritten."""
    tx.ceilings.clear()
    result = tx.conn.execute(
        update(reductions)
        .where(reductions.c.id == row.id, reductions.c.state == expected_state)
        .values(
            state=row.state,
            updated=row.updated,
            plan=_dump(row.plan),
            reason=row.reason,
            history=_dump(row.history),
        )
    )
    return bool(result.rowcount)


def reduction_ceiling(tx: StoreTx, states: Sequence[str]) -> int | None:
    """The lowest target of the reduction workflows in ``states``, None when there is none
    (the queue is not served above it while a workflow reduces consumption)."""
    key = tuple(states)
    if key in tx.ceilings:  # read with the seat-pool lock, or earlier in this transaction
        return tx.ceilings[key]
    found = tx.conn.execute(
        select(func.min(reductions.c.target)).where(reductions.c.state.in_(list(states)))
    ).scalar()
    ceiling = tx.ceilings[key] = int(found) if found is not None else None
    return ceiling
