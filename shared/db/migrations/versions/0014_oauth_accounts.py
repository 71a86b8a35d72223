"""OAuth2 mailboxes (issue 17): a sending domain's OAuth2 grant (one per domain, for SMTP and IMAP alike, the
refresh and access tokens encrypted), the connections under way, the pause cause `needs_reauth`, and a
mailbox without a password (it logs in with the domain's grant)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 02:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CAUSES = (
    "hard_bounces", "complaints", "policy_rejections", "authentication_failures", "connection_failures",
    "deferrals",
)  # fmt: skip


def _check(causes: Sequence[str]) -> None:
    op.drop_constraint("paused_cause_valid", "sending_domains", type_="check")
    listed = ", ".join(f"'{cause}'" for cause in causes)
    op.create_check_constraint("paused_cause_valid", "sending_domains", f"paused_cause IN ({listed})")


def _uuid() -> postgresql.UUID:  # type: ignore[type-arg]
    return postgresql.UUID(as_uuid=True)


def _owners() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column("id", _uuid(), primary_key=True),
        sa.Column(
            "workspace_id",
            _uuid(),
            sa.ForeignKey("workspaces.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
    ]


def upgrade() -> None:
    _check((*CAUSES, "needs_reauth"))
    op.create_table(
        "oauth_accounts",
        *_owners(),
        sa.Column(
            "sending_domain_id",
            _uuid(),
            sa.ForeignKey("sending_domains.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("refresh_token_encrypted", sa.Text(), nullable=False),
        sa.Column("access_token_encrypted", sa.Text(), nullable=True),
        sa.Column("access_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.String(16), nullable=False, server_default="active"),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("provider IN ('google', 'microsoft', 'oidc')", name="oauth_provider_valid"),
        sa.CheckConstraint("state IN ('active', 'needs_reauth')", name="oauth_state_valid"),
    )
    op.create_table(
        "oauth_flows",
        *_owners(),
        sa.Column(
            "sending_domain_id",
            _uuid(),
            sa.ForeignKey("sending_domains.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("state_hash", sa.String(64), nullable=False, unique=True),  # sha256 of `state`, hex
        sa.Column("verifier_encrypted", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.alter_column("mailbox_accounts", "password_encrypted", nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM mailbox_accounts WHERE password_encrypted IS NULL")
    op.alter_column("mailbox_accounts", "password_encrypted", nullable=False)
    op.drop_table("oauth_flows")
    op.drop_table("oauth_accounts")
    op.execute(
        "UPDATE sending_domains SET paused_cause = 'authentication_failures'"
        " WHERE paused_cause = 'needs_reauth'"
    )
    _check(CAUSES)
