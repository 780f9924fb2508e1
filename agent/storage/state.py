"""The agent's own key-value state (``agent_state``): markers such as the last reconcile."""

from __future__ import annotations

from sqlalchemy import insert, select, update

from agent.storage.tables import agent_state
from agent.storage.transaction import Transaction


class AgentState:
    """The key-value state of one transaction."""

    def __init__(self, tx: Transaction):
        self.conn = tx.conn

    def get(self, key: str) -> str | None:
        return self.conn.execute(
            select(agent_state.c.value).where(agent_state.c.key == key)
        ).scalar()

    def put(self, key: str, value: str) -> None:
        if self.get(key) is None:
            self.conn.execute(insert(agent_state).values(key=key, value=value))
        else:
            self.conn.execute(
                update(agent_state).where(agent_state.c.key == key).values(value=value)
            )
