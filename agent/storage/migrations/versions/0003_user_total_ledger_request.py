"""seat_pool.users_total, the number of users kept in the write transaction; seat_ledger.request_id

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 07:50:00

An unfiltered list (RFC 7644 §3.4.2.4 totalResults) reads this instead of COUNT(*), which is
an index scan over every user on PostgreSQL. Every insert and delete of a user changes it in
the same transaction; reconcile recounts it. Each ledger entry names the request that caused it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("seat_pool") as batch:
        batch.add_column(sa.Column("users_total", sa.Integer(), nullable=False, server_default="0"))
    op.execute("UPDATE seat_pool SET users_total = (SELECT count(*) FROM users)")
    with op.batch_alter_table("seat_ledger") as batch:
        batch.add_column(sa.Column("request_id", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("seat_ledger") as batch:
        batch.drop_column("request_id")
    with op.batch_alter_table("seat_pool") as batch:
        batch.drop_column("users_total")
