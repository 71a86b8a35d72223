"""Lead import from CSV: read as it streams in, each row validated on its own, one transaction for the file.

A bad row is reported with its line number and never stops the others; a file that is not CSV in UTF-8 at
all is refused as a whole, with nothing written.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, File, Request, UploadFile
from pydantic import ValidationError
from sqlalchemy import text

from services.api.auth import CurrentPrincipal
from services.api.envelope import Envelope, invalid
from services.api.repository import Repository
from services.api.routes.deps import unit_of_work
from services.api.schemas import ImportOut, LeadIn
from shared.db.models import LeadStatus

router = APIRouter(tags=["leads"])
log = structlog.get_logger()

NAMED = ("email", "first_name", "last_name", "company", "tags")  # any other column is a custom field
COPIED = ["id", "workspace_id", "email", "first_name", "last_name", "company", "tags", "fields", "status"]
SCRATCH = "lead_import"
BATCH = 5000
MAX_REPORTED_ERRORS = 1000


def _lead(record: dict[str, str]) -> LeadIn:
    tags = [t.strip() for t in record.get("tags", "").replace("|", ";").split(";") if t.strip()]
    fields = {k: v for k, v in record.items() if k not in NAMED and v != ""}
    named = {k: record[k] for k in NAMED[:4] if k in record}
    return LeadIn(**named, tags=tags, fields=fields)


def _reason(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


class _Import:
    def __init__(self, repo: Repository, columns: list[str]) -> None:
        self.repo = repo
        self.columns = columns
        self.created = self.updated = self.skipped = 0
        self.errors: list[dict[str, Any]] = []
        self._seen: set[str] = set()
        self._batch: list[tuple[Any, ...]] = []
        self._scratch = False

    def error(self, row: int, reason: str) -> None:
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append({"row": row, "error": reason})

    async def add(self, row: int, values: list[str]) -> None:
        if len(values) > len(self.columns):
            return self.error(row, f"{len(values)} values for {len(self.columns)} columns")
        try:
            lead = _lead(dict(zip(self.columns, values, strict=False)))
        except ValidationError as error:
            return self.error(row, _reason(error))
        email = str(lead.email).lower()
        if email in self._seen:
            self.skipped += 1  # the file named this address before: its first row counts
            return None
        self._seen.add(email)
        self._batch.append(
            (
                uuid.uuid4(),
                self.repo.workspace_id,
                lead.email,
                lead.first_name,
                lead.last_name,
                lead.company,
                lead.tags,
                json.dumps(lead.fields),
                LeadStatus.ACTIVE.value,
            )
        )
        if len(self._batch) >= BATCH:
            await self.flush()
        return None

    async def flush(self) -> None:
        """COPY the batch into a scratch table, then upsert it: new leads are inserted, existing ones get
        only the columns the file has (their custom fields merged)."""
        if not self._batch:
            return
        session = self.repo.session
        if not self._scratch:
            scratch = f"CREATE TEMP TABLE {SCRATCH} (LIKE leads INCLUDING DEFAULTS) ON COMMIT DROP"
            await session.execute(text(scratch))
            self._scratch = True
        # asyncpg's COPY, on the connection of the transaction the statement above began.
        driver = (await (await session.connection()).get_raw_connection()).driver_connection
        assert driver is not None
        await driver.copy_records_to_table(SCRATCH, records=self._batch, columns=COPIED)
        updated = [f"{c} = excluded.{c}" for c in NAMED if c in self.columns and c != "email"]
        updated += ["fields = leads.fields || excluded.fields", "updated_at = now()"]
        columns = ", ".join(COPIED)
        created, total = (
            await session.execute(
                text(
                    f"WITH upserted AS (INSERT INTO leads ({columns}) SELECT {columns} FROM {SCRATCH}"  # noqa: S608
                    " ON CONFLICT (workspace_id, lower(email)) DO UPDATE SET "
                    + ", ".join(updated)
                    + " RETURNING xmax = 0 AS created)"  # xmax 0: the row was inserted, not updated
                    " SELECT count(*) FILTER (WHERE created), count(*) FROM upserted"
                )
            )
        ).one()
        await session.execute(text(f"TRUNCATE {SCRATCH}"))
        self.created += created
        self.updated += total - created
        self._batch.clear()

    def result(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "updated": self.updated,
            "skipped": self.skipped,
            "errors": self.errors,
        }


@router.post("/leads/import", response_model=Envelope[ImportOut])
async def import_leads(
    request: Request, principal: CurrentPrincipal, file: Annotated[UploadFile, File()]
) -> dict[str, Any]:
    """CSV in UTF-8 whose first row names the columns: `email` (required), `first_name`, `last_name`,
    `company`, `tags` (separated by `;`), any other column a custom field. Existing leads (same address) are
    updated, a repeated address in the file is skipped, and at most 1,000 row errors are listed."""
    rows = csv.reader(io.TextIOWrapper(file.file, encoding="utf-8-sig", newline=""))
    try:
        async with unit_of_work(request, principal) as repo:
            header = next(rows, None)
            columns = [c.strip().lower() for c in header or []]
            if "email" not in columns:
                raise invalid("the first row must name the columns, one of them `email`", ["body", "file"])
            if len(set(columns)) != len(columns):
                raise invalid("a column is named twice in the first row", ["body", "file"])
            job = _Import(repo, columns)
            for values in rows:
                if any(v.strip() for v in values):
                    await job.add(rows.line_num, values)
                if rows.line_num % 50_000 == 0:
                    log.info("api.leads.import.progress", lines=rows.line_num)
            await job.flush()
    except UnicodeDecodeError as error:
        raise invalid(
            f"the file is not UTF-8 (byte {error.start} of a chunk); nothing was imported"
        ) from error
    except csv.Error as error:
        raise invalid(f"line {rows.line_num} is not CSV ({error}); nothing was imported") from error
    log.info("api.leads.import.done", **{k: v for k, v in job.result().items() if k != "errors"})
    return {"data": job.result()}
