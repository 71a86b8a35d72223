"""A campaign's replied messages, indexed: the stop rule "a reply from the lead's company" looks for them at
every due step of a sequence (`services.scheduler.repository.SEQUENCE_EVIDENCE`), and without the index it read
every message of the campaign to find the few that were answered

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01 10:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE INDEX messages_replied ON messages (campaign_id) WHERE replied_at IS NOT NULL")


def downgrade() -> None:
    op.execute("DROP INDEX messages_replied")
