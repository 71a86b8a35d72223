"""Lead import from CSV: read as it streams in, each row validated on its own, one transaction for the file.

A bad row is reported with its line number and never stops the others; a file that is not CSV in UTF-8 at
all, or larger than MAILDASH_IMPORT_MAX_BYTES / MAILDASH_IMPORT_MAX_ROWS, is refused as a whole, with nothing
written. Rows are parsed and stored as the upload arrives: the file is never held whole, in memory or on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import structlog
from pydantic import ValidationError

from services.api.kit.csv_stream import CsvStream
from services.api.kit.envelope import ApiError, invalid
from services.api.leads.repository import NAMED, PLACE, TEXT, LeadRepository
from services.api.leads.schemas import LeadIn

log = structlog.get_logger()

BATCH = 5000
MAX_REPORTED_ERRORS = 1000
YIELD_EVERY = 200  # rows, about 5 ms of validation
MAX_RECORD_CHARS = 1024 * 1024  # far beyond any lead; bounds the re-reading of a record cut by a chunk


def _lead(record: dict[str, str]) -> LeadIn:
    tags = [t.strip() for t in record.get("tags", "").replace("|", ";").split(";") if t.strip()]
    fields = {k: v for k, v in record.items() if k not in NAMED and v != ""}
    named = {k: record[k] for k in TEXT if k in record}
    place = {k: record[k].strip() or None for k in PLACE if k in record}  # an empty cell: none
    return LeadIn(**named, **place, tags=tags, fields=fields)


def _reason(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


class _Import:
    def __init__(self, repo: LeadRepository, columns: list[str]) -> None:
        self.repo = repo
        self.columns = columns
        self.created = self.updated = self.skipped = 0
        self.errors: list[dict[str, Any]] = []
        self._seen: set[str] = set()
        self._batch: list[tuple[Any, ...]] = []

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
        self._batch.append(self.repo.import_record(lead))
        if len(self._batch) >= BATCH:
            await self.flush()
        return None

    async def flush(self) -> None:
        """Store the batch: new leads are inserted, existing ones get only the columns the file has (their
        custom fields merged)."""
        if not self._batch:
            return
        created, total = await self.repo.upsert_imported(self._batch, self.columns)
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


async def _records(
    chunks: AsyncIterator[bytes], csv_stream: CsvStream
) -> AsyncGenerator[tuple[int, list[str]], None]:
    async for chunk in chunks:
        for record in csv_stream.feed(chunk):
            yield record
    for record in csv_stream.feed(b"", final=True):
        yield record


async def import_csv(
    chunks: AsyncIterator[bytes],
    unit_of_work: AbstractAsyncContextManager[LeadRepository],
    max_rows: int,
) -> dict[str, Any]:
    """Read the file from `chunks` and store its leads in the unit of work (committed only when the whole
    file was read); the counts and the first row errors."""
    csv_stream = CsvStream(MAX_RECORD_CHARS)
    try:
        async with contextlib.aclosing(_records(chunks, csv_stream)) as records, unit_of_work as repo:
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
                if rows > max_rows:
                    raise ApiError(
                        413,
                        "payload_too_large",
                        f"the file has more than {max_rows:,} rows"
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
    return job.result()
