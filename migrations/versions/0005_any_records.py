"""process_large_file loads any header (issue 21): a loaded record is its JSON object, in
``loaded_records.data``, instead of the fixed id/name/email/amount/date columns. Records
loaded before are carried over as ``{"id", "name", "email", "amount", "date"}``.

Revision ID: 0005_any_records
Revises: 0004_documents
Create Date: 2026-12-07
"""

from __future__ import annotations

import json

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

revision = "0005_any_records"
down_revision = "0004_documents"
branch_labels = None
depends_on = None

LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mariadb").with_variant(mysql.LONGTEXT(), "mysql")
BATCH = 5000
OLD = ("record_id", "name", "email", "amount", "day")


def upgrade() -> None:
    with op.batch_alter_table("loaded_records") as batch:
        batch.add_column(sa.Column("data", LONG_TEXT, nullable=True))
    conn = op.get_bind()
    table = sa.table("loaded_records", sa.column("id"), sa.column("data"), *(sa.column(c) for c in OLD))
    last = 0
    while True:
        rows = conn.execute(
            sa.select(table.c.id, *(table.c[c] for c in OLD))
            .where(table.c.id > last)
            .order_by(table.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        conn.execute(
            table.update().where(table.c.id == sa.bindparam("rid")).values(data=sa.bindparam("value")),
            [
                {
                    "rid": r.id,
                    "value": json.dumps(
                        {"id": r.record_id, "name": r.name, "email": r.email, "amount": r.amount, "date": r.day},
                        separators=(",", ":"),
                    ),
                }
                for r in rows
            ],
        )
        last = rows[-1].id
    with op.batch_alter_table("loaded_records") as batch:
        batch.alter_column("data", existing_type=LONG_TEXT, nullable=False)
        for column in OLD:
            batch.drop_column(column)


def downgrade() -> None:
    # Records of any other shape cannot go back into the fixed columns: they are dropped.
    with op.batch_alter_table("loaded_records") as batch:
        batch.add_column(sa.Column("record_id", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("name", sa.String(length=200), nullable=False, server_default=""))
        batch.add_column(sa.Column("email", sa.String(length=320), nullable=False, server_default=""))
        batch.add_column(sa.Column("amount", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("day", sa.String(length=10), nullable=False, server_default=""))
    conn = op.get_bind()
    table = sa.table("loaded_records", sa.column("id"), sa.column("data"), *(sa.column(c) for c in OLD))
    keep, drop = [], []
    for rid, data in conn.execute(sa.select(table.c.id, table.c.data)):
        try:
            value = json.loads(data)
            keep.append(
                {
                    "rid": rid,
                    "record_id": int(value["id"]),
                    "name": str(value["name"]),
                    "email": str(value["email"]),
                    "amount": float(value["amount"]),
                    "day": str(value["date"]),
                }
            )
        except (ValueError, TypeError, KeyError):
            drop.append(rid)
    if keep:
        conn.execute(
            table.update()
            .where(table.c.id == sa.bindparam("rid"))
            .values(**{c: sa.bindparam(c) for c in OLD}),
            keep,
        )
    if drop:
        conn.execute(table.delete().where(table.c.id.in_(drop)))
    with op.batch_alter_table("loaded_records") as batch:
        for column in OLD:
            batch.alter_column(column, server_default=None)
        batch.drop_column("data")
