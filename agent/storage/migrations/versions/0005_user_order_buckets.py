"""user_order_buckets: the number of users in each run of 8,192 seq values

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 08:20:00

An unfiltered GET /Users page at offset k walked k index entries (from the nearer end: up to
half the users). With the users of each bucket of seq counted, a page finds the bucket holding
position k by a running sum over the buckets and walks fewer than 8,192 entries
(agent.storage.user_order). Filled here from the users already stored; every insert and delete
keeps it from then on, in the same transaction.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# agent.storage.user_order.BUCKET_SIZE when this migration was written: the buckets it fills.
BUCKET_SIZE = 8192


def upgrade() -> None:
    op.create_table(
        "user_order_buckets",
        sa.Column("bucket", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("users", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", name=op.f("pk_user_order_buckets")),
    )
    op.execute(
        f"INSERT INTO user_order_buckets (bucket, users)"
        f" SELECT seq / {BUCKET_SIZE}, count(*) FROM users GROUP BY seq / {BUCKET_SIZE}"
    )


def downgrade() -> None:
    op.drop_table("user_order_buckets")
