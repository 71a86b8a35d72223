"""sending_domains.dkim_*: a domain's DKIM selector, private keys (encrypted) and the TXT records to publish

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("dkim_selector", "dkim_rsa_private_encrypted", "dkim_ed25519_private_encrypted", "dkim_records")


def upgrade() -> None:
    for column in COLUMNS:
        kind = JSONB() if column == "dkim_records" else sa.Text()
        op.add_column("sending_domains", sa.Column(column, kind, nullable=True))
    # A selector without its RSA key could not sign: both or neither.
    op.create_check_constraint(
        "dkim_keys_complete",
        "sending_domains",
        "(dkim_selector IS NULL) = (dkim_rsa_private_encrypted IS NULL)",
    )


def downgrade() -> None:
    op.drop_constraint("dkim_keys_complete", "sending_domains", type_="check")
    for column in reversed(COLUMNS):
        op.drop_column("sending_domains", column)
