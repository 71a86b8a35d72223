"""ESP event webhooks (issue 17): each workspace's configuration per ESP, and the events that took effect

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PROVIDERS = "provider IN ('ses', 'postmark', 'sendgrid', 'mailgun')"


def _uuid() -> postgresql.UUID:  # type: ignore[type-arg]
    return postgresql.UUID(as_uuid=True)


def _workspace(primary_key: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        "workspace_id",
        _uuid(),
        sa.ForeignKey("workspaces.id", ondelete="CASCADE"),
        nullable=False,
        primary_key=primary_key,
    )


def upgrade() -> None:
    op.create_table(
        "esp_webhooks",
        sa.Column("id", _uuid(), primary_key=True),
        _workspace(),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("token", sa.Text(), nullable=False, unique=True),
        sa.Column("topic_arns", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("username", sa.Text(), nullable=True),
        sa.Column("secret_encrypted", sa.Text(), nullable=True),
        sa.Column("public_key", sa.Text(), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.UniqueConstraint("workspace_id", "provider", name="esp_webhooks_provider_key"),
        sa.CheckConstraint(PROVIDERS, name="esp_provider_valid"),
    )
    op.create_index("ix_esp_webhooks_workspace_id", "esp_webhooks", ["workspace_id"])
    op.create_table(
        "esp_events",
        _workspace(primary_key=True),
        sa.Column("provider", sa.String(16), primary_key=True),
        sa.Column("event_id", sa.Text(), primary_key=True),
        sa.Column("message_id", _uuid(), sa.ForeignKey("messages.id", ondelete="SET NULL"), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint(PROVIDERS, name="esp_provider_valid"),
    )
    op.create_index("esp_events_message", "esp_events", ["message_id"])


def downgrade() -> None:
    op.drop_index("esp_events_message", table_name="esp_events")
    op.drop_table("esp_events")
    op.drop_index("ix_esp_webhooks_workspace_id", table_name="esp_webhooks")
    op.drop_table("esp_webhooks")
