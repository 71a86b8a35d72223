"""Indexes by age for what is kept only for a while (`shared.db.retention`): finished webhook deliveries and
ESP event ids, so the reconcile beat finds the expired ones without reading the tables

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-01 10:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (created_at) WHERE status <> 'pending'"
    )
    op.execute("CREATE INDEX esp_events_received ON esp_events (received_at)")


def downgrade() -> None:
    op.execute("DROP INDEX esp_events_received")
    op.execute("DROP INDEX webhook_deliveries_finished")
