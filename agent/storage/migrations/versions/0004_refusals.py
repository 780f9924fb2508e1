"""refusals: refused demand (refused, queued, fallback activations) as data

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 05:40:00

A full pool's 403s left no trace: this table keeps who was refused (or queued, or put on the
fallback role), when, on which path and with which pool state, for the admin API, the CLI,
the seat report and the metrics. An index on seat_ledger.user_id finds since when a user holds
its seat (the admin's user list).
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "refusals",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=True),
        sa.Column("user_name", sa.String(length=255), nullable=True),
        sa.Column("path", sa.String(length=64), nullable=False),
        sa.Column("licensed", sa.Integer(), nullable=False),
        sa.Column("consumed", sa.Integer(), nullable=False),
        sa.Column("queued", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_refusals")),
    )
    op.create_index(op.f("ix_refusals_at"), "refusals", ["at"])
    # The admin's user list shows since when each user holds its seat: its newest grant.
    op.create_index(op.f("ix_seat_ledger_user_id"), "seat_ledger", ["user_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_seat_ledger_user_id"), table_name="seat_ledger")
    op.drop_index(op.f("ix_refusals_at"), table_name="refusals")
    op.drop_table("refusals")
