"""Lead import from CSV: read as it streams in, each row validated on its own, one transaction for the file.

A bad row is reported with its line number and never stops the others; a file that is not CSV in UTF-8 at
all, or larger than MAILDASH_IMPORT_MAX_BYTES / MAILDASH_IMPORT_MAX_ROWS, is refused as a whole, with nothing
written. Rows are parsed and stored as the upload arrives: the file is never held whole, in memory or on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import structlog
from fastapi import APIRouter, Request
from pydantic import ValidationError
from sqlalchemy import text

from services.api.auth import CurrentPrincipal
from services.api.csv_stream import CsvStream
from services.api.envelope import ApiError, Envelope, invalid
from services.api.repository import Repository
from services.api.routes.deps import unit_of_work
from services.api.schemas import ImportOut, LeadIn
from services.api.uploads import file_chunks, upload_doc
from shared.db.models import LeadStatus
from shared.settings import Settings

router = APIRouter(tags=["leads"])
log = structlog.get_logger()

NAMED = ("email", "first_name", "last_name", "company", "tags")  # any other column is a custom field
COPIED = ["id", "workspace_id", "email", "first_name", "last_name", "company", "tags", "fields", "status"]
SCRATCH = "lead_import"
BATCH = 5000
MAX_REPORTED_ERRORS = 1000
YIELD_EVERY = 200  # rows, about 5 ms of validation
MAX_RECORD_CHARS = 1024 * 1024  # far beyond any lead; bounds the re-reading of a record cut by a chunk


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


async def _records(request: Request, csv_stream: CsvStream) -> AsyncGenerator[tuple[int, list[str]], None]:
    async for chunk in file_chunks(request, "file"):
        for record in csv_stream.feed(chunk):
            yield record
    for record in csv_stream.feed(b"", final=True):
        yield record


@router.post("/leads/import", response_model=Envelope[ImportOut], openapi_extra=upload_doc("file"))
async def import_leads(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    """CSV in UTF-8 whose first row names the columns: `email` (required), `first_name`, `last_name`,
    `company`, `tags` (separated by `;`), any other column a custom field. Existing leads (same address) are
    updated, a repeated address in the file is skipped, and at most 1,000 row errors are listed. The file
    (multipart part `file`) may have up to MAILDASH_IMPORT_MAX_BYTES and MAILDASH_IMPORT_MAX_ROWS rows."""
    settings: Settings = request.app.state.runtime.settings
    csv_stream = CsvStream(MAX_RECORD_CHARS)
    try:
        async with (
            contextlib.aclosing(_records(request, csv_stream)) as records,
            unit_of_work(request, principal) as repo,
        ):
            try:
                _, header = await records.__anext__()  # (not anext(records, default): bpo-46092 in 3.11)
            except StopAsyncIteration:
                header = []
            columns = [c.strip().lower() for c in header]
            if "email" not in columns:
                raise invalid("the first row must name the columns, one of them `email`", ["body", "file"])
            if len(set(columns)) != len(columns):
                raise invalid("a column is named twice in the first row", ["body", "file"])
            job = _Import(repo, columns)
            rows = 0
            async for line, values in records:
                rows += 1
                if rows > settings.import_max_rows:
                    raise ApiError(
                        413,
                        "payload_too_large",
                        f"the file has more than {settings.import_max_rows:,} rows"
                        " (MAILDASH_IMPORT_MAX_ROWS); split it. Nothing was imported",
                    )
                if any(v.strip() for v in values):
                    await job.add(line, values)
                if rows % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # validating rows is CPU work: let other requests in between
                if rows % 50_000 == 0:
                    log.info("api.leads.import.progress", rows=rows)
            await job.flush()
    except UnicodeDecodeError as error:
        raise invalid(
            f"the file is not UTF-8 (byte {error.start} of a chunk); nothing was imported"
        ) from error
    except csv.Error as error:
        raise invalid(f"line {csv_stream.line_num} is not CSV ({error}); nothing was imported") from error
    log.info("api.leads.import.done", **{k: v for k, v in job.result().items() if k != "errors"})
    return {"data": job.result()}
