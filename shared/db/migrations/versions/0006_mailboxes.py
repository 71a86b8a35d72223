"""Sending mailboxes read over IMAP (issue 16): accounts, leases, readers, checkpoints and processed mails; the
lead status `complained`; a message's first reply and click; KPI counters for replies, clicks and complaints

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW_COUNTERS = ("replied", "clicked", "complained")
LEAD_STATUSES = ("active", "unsubscribed", "bounced", "replied")


def _uuid() -> postgresql.UUID:  # type: ignore[type-arg]
    return postgresql.UUID(as_uuid=True)


def _account() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        "account_id", _uuid(), sa.ForeignKey("mailbox_accounts.id", ondelete="CASCADE"), nullable=False
    )


def _lead_statuses(statuses: Sequence[str]) -> None:
    op.drop_constraint("status_valid", "leads", type_="check")
    allowed = ", ".join(f"'{s}'" for s in statuses)
    op.create_check_constraint("status_valid", "leads", f"status IN ({allowed})")


def upgrade() -> None:
    _lead_statuses((*LEAD_STATUSES, "complained"))
    op.add_column("messages", sa.Column("replied_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("messages", sa.Column("clicked_at", sa.DateTime(timezone=True), nullable=True))
    for table in ("campaign_kpis", "campaign_kpi_days"):
        for counter in NEW_COUNTERS:
            op.add_column(table, sa.Column(counter, sa.Integer(), server_default="0", nullable=False))

    op.create_table(
        "mailbox_accounts",
        sa.Column("id", _uuid(), primary_key=True),
        sa.Column(
            "workspace_id", _uuid(), sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "sending_domain_id",
            _uuid(),
            sa.ForeignKey("sending_domains.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("security", sa.String(16), nullable=False),
        sa.Column("username", sa.Text(), nullable=False),
        sa.Column("password_encrypted", sa.Text(), nullable=False),
        sa.Column("folders", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{INBOX}'"), nullable=False),
        sa.Column("reports_folder", sa.Text(), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("idle_supported", sa.Boolean(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("security IN ('none', 'starttls', 'tls')", name="imap_security_valid"),
    )
    op.create_index("ix_mailbox_accounts_workspace_id", "mailbox_accounts", ["workspace_id"])
    op.create_table(
        "mailbox_leases",
        sa.Column(
            "account_id", _uuid(), sa.ForeignKey("mailbox_accounts.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("holder", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "mailbox_readers",
        sa.Column("holder", sa.Text(), primary_key=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "mailbox_checkpoints",
        _account(),
        sa.Column("folder", sa.Text(), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "folder"),
    )
    op.create_table(
        "mailbox_mails",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        _account(),
        sa.Column("folder", sa.Text(), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("mail_key", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("message_id", _uuid(), sa.ForeignKey("messages.id", ondelete="SET NULL"), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.UniqueConstraint("account_id", "folder", "uidvalidity", "uid", name="mailbox_mails_place_key"),
        sa.UniqueConstraint("account_id", "mail_key", name="mailbox_mails_mail_key"),
    )


def downgrade() -> None:
    for table in ("mailbox_mails", "mailbox_checkpoints", "mailbox_readers", "mailbox_leases"):
        op.drop_table(table)
    op.drop_index("ix_mailbox_accounts_workspace_id", table_name="mailbox_accounts")
    op.drop_table("mailbox_accounts")
    for table in ("campaign_kpis", "campaign_kpi_days"):
        for counter in NEW_COUNTERS:
            op.drop_column(table, counter)
    op.drop_column("messages", "clicked_at")
    op.drop_column("messages", "replied_at")
    # A complained lead stays out of every audience, as the next best thing: unsubscribed.
    op.execute("UPDATE leads SET status = 'unsubscribed' WHERE status = 'complained'")
    _lead_statuses(LEAD_STATUSES)
