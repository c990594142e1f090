"""Transactional enqueue (issue 21): the outbox of jobs enqueued inside a caller's transaction.

Revision ID: 0006_job_outbox
Revises: 0005_any_records
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

revision = "0006_job_outbox"
down_revision = "0005_any_records"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_outbox",
        sa.Column("job_id", sa.String(length=128), nullable=False),
        sa.Column("task", sa.String(length=200), nullable=False),
        sa.Column(
            "kwargs",
            sa.Text().with_variant(mysql.LONGTEXT(), "mariadb").with_variant(mysql.LONGTEXT(), "mysql"),
            nullable=False,
        ),
        sa.Column("options", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_job_outbox")),
    )


def downgrade() -> None:
    op.drop_table("job_outbox")
