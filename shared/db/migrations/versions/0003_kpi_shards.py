"""KPI counters in shards: concurrent writers of one campaign no longer queue on one row

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 20:55:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEYS = {"campaign_kpis": ["campaign_id"], "campaign_kpi_days": ["campaign_id", "day"]}
COUNTERS = {
    "campaign_kpis": [
        "planned",
        "cancelled",
        "sent",
        "opened",
        "opened_human",
        "opens_total",
        "bounced",
        "bounced_at_smtp",
        "failed",
        "unsubscribed",
    ],
    "campaign_kpi_days": ["planned", "sent", "opened", "bounced"],
}


def upgrade() -> None:
    for table, keys in KEYS.items():
        op.add_column(table, sa.Column("shard", sa.SmallInteger(), server_default="0", nullable=False))
        op.drop_constraint(f"{table}_pkey", table, type_="primary")
        op.create_primary_key(f"{table}_pkey", table, [*keys, "shard"])


def downgrade() -> None:
    """Fold every shard into shard 0, then drop the column."""
    for table, keys in KEYS.items():
        key = ", ".join(keys)
        sums = ", ".join(f"sum({c}) AS {c}" for c in COUNTERS[table])
        extra = ""
        if table == "campaign_kpis":
            sums += ", min(first_sent_at) AS first_sent_at, max(last_sent_at) AS last_sent_at"
            extra = ", first_sent_at, last_sent_at"
        columns = ", ".join(COUNTERS[table]) + extra
        op.execute(f"CREATE TEMP TABLE folded AS SELECT {key}, {sums} FROM {table} GROUP BY {key}")  # noqa: S608
        op.execute(f"DELETE FROM {table}")  # noqa: S608
        op.execute(f"INSERT INTO {table} ({key}, shard, {columns}) SELECT {key}, 0, {columns} FROM folded")  # noqa: S608
        op.execute("DROP TABLE folded")
        op.drop_constraint(f"{table}_pkey", table, type_="primary")
        op.drop_column(table, "shard")
        op.create_primary_key(f"{table}_pkey", table, keys)
