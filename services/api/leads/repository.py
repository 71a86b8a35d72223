"""All SQL of leads, their reports and their import, scoped to the workspace (`WorkspaceRepository`)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import LargeBinary, func, literal, text
from sqlalchemy.dialects.postgresql import insert

from services.api.kit.repository import WorkspaceRepository
from services.api.leads.schemas import LeadIn
from shared.db.models import Lead, LeadReport, LeadStatus, Message
from shared.message_states import SMTP_DONE, UNFINISHED
from shared.planning.audience import Candidate

TEXT = ("email", "first_name", "last_name", "company")
PLACE = ("timezone", "country")  # where the lead works; an empty cell is none
NAMED = (*TEXT, *PLACE, "tags")  # any other column of a file is a custom field
COPIED = [
    "id", "workspace_id", "email", "first_name", "last_name", "company", "tags", "fields", "status",
    "timezone", "country",
]  # fmt: skip
SCRATCH = "lead_import"


class LeadRepository(WorkspaceRepository[Lead]):
    model = Lead
    noun = "lead"
    searched = (Lead.email, Lead.first_name, Lead.last_name, Lead.company)

    async def by_email(self, email: str) -> Lead | None:
        rows = await self.session.scalars(self.scoped().where(func.lower(Lead.email) == email.lower()))
        return rows.first()

    async def has_unfinished_mail(self, lead: Lead) -> bool:
        unfinished = Message.status.in_(UNFINISHED)
        return await self.exists(
            self.scoped(Message.id, model=Message).where(Message.lead_id == lead.id, unfinished)
        )

    async def candidates_by_ids(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, Candidate]:
        rows = await self.session.execute(self._candidates().where(Lead.id.in_(ids)))
        return {r[0]: Candidate(r[0], r[1], r[2], r[3]) for r in rows}

    async def candidates_by_tags(self, tags: list[str]) -> list[Candidate]:
        rows = await self.session.execute(
            self._candidates().where(Lead.tags.overlap(tags)).order_by(Lead.created_at, Lead.id)
        )
        return [Candidate(r[0], r[1], r[2], r[3]) for r in rows]

    def _candidates(self) -> Any:
        """Leads as the audience rules see them: with the time they were last sent to."""
        last_sent = (
            self.scoped(func.max(Message.sent_at), model=Message)
            .where(Message.lead_id == Lead.id, Message.status.in_(SMTP_DONE))
            .scalar_subquery()
        )
        return self.scoped(Lead.id, Lead.email, Lead.status, last_sent)

    async def store_report(self, lead: Lead, filename: str, content: bytes) -> datetime:
        """The lead's report, replacing the one it had (which keeps its upload time); when it was uploaded."""
        report = self.scoped(Lead.id, literal(filename), literal(content, LargeBinary)).where(
            Lead.id == lead.id
        )
        statement = insert(LeadReport).from_select(["lead_id", "filename", "content"], report)
        statement = statement.on_conflict_do_update(
            index_elements=[LeadReport.lead_id],
            set_={"filename": statement.excluded.filename, "content": statement.excluded.content},
        )
        uploaded_at: datetime = (
            await self.session.execute(statement.returning(LeadReport.uploaded_at))
        ).scalar_one()
        return uploaded_at

    # ── import: COPY into a scratch table, then one upsert per batch ───────────────────────────────────────
    def import_record(self, lead: LeadIn) -> tuple[Any, ...]:
        """A lead of an imported file as a row of COPIED, in this workspace."""
        return (
            uuid.uuid4(),
            self.workspace_id,
            lead.email,
            lead.first_name,
            lead.last_name,
            lead.company,
            lead.tags,
            json.dumps(lead.fields),
            LeadStatus.ACTIVE.value,
            lead.timezone,
            lead.country,
        )

    async def upsert_imported(
        self, records: list[tuple[Any, ...]], file_columns: list[str]
    ) -> tuple[int, int]:
        """Insert new leads and update existing ones (same address) with only the columns the file has, their
        custom fields merged; (created, created + updated). The scratch table lives until the commit."""
        await self.session.execute(
            text(f"CREATE TEMP TABLE IF NOT EXISTS {SCRATCH} (LIKE leads INCLUDING DEFAULTS) ON COMMIT DROP")
        )
        # asyncpg's COPY, on the connection of the transaction the statement above began.
        driver = (await (await self.session.connection()).get_raw_connection()).driver_connection
        assert driver is not None
        await driver.copy_records_to_table(SCRATCH, records=records, columns=COPIED)
        updated = [f"{c} = excluded.{c}" for c in NAMED if c in file_columns and c != "email"]
        updated += ["fields = leads.fields || excluded.fields", "updated_at = now()"]
        columns = ", ".join(COPIED)
        created, total = (
            await self.session.execute(
                text(
                    f"WITH upserted AS (INSERT INTO leads ({columns}) SELECT {columns} FROM {SCRATCH}"  # noqa: S608
                    f" WHERE {SCRATCH}.workspace_id = :workspace_id"
                    " ON CONFLICT (workspace_id, lower(email)) DO UPDATE SET "
                    + ", ".join(updated)
                    + " RETURNING xmax = 0 AS created)"  # xmax 0: the row was inserted, not updated
                    " SELECT count(*) FILTER (WHERE created), count(*) FROM upserted"
                ),
                {"workspace_id": self.workspace_id},
            )
        ).one()
        await self.session.execute(text(f"TRUNCATE {SCRATCH}"))
        return created, total
