"""Leads: create, list, read, change, delete; import from CSV; a lead's report."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Request, UploadFile

from services.api.kit.auth import CurrentPrincipal
from services.api.kit.deps import PageNumber, PageSize, Search, page_of, searchable, unit_of_work
from services.api.kit.envelope import Envelope, Page
from services.api.kit.openapi import errors
from services.api.kit.reads import add_reads, each, row_out
from services.api.kit.schemas import DeletedOut
from services.api.kit.uploads import file_chunks, upload_doc
from services.api.leads import imports, service
from services.api.leads.repository import LeadRepository
from services.api.leads.schemas import ImportOut, LeadIn, LeadOut, LeadPatch, ReportOut
from shared.db.models import Lead, LeadStatus

router = APIRouter(tags=["leads"])


@router.post("/leads", status_code=201, response_model=Envelope[LeadOut], responses=errors(409))
async def create_lead(request: Request, principal: CurrentPrincipal, body: LeadIn) -> dict[str, Any]:
    async with unit_of_work(request, principal, LeadRepository) as repo:
        return {"data": await service.create(repo, body)}


@router.get("/leads", response_model=Envelope[Page[LeadOut]])
async def list_leads(
    request: Request,
    principal: CurrentPrincipal,
    page: PageNumber = 1,
    page_size: PageSize = 20,
    search: Search = None,
    status: LeadStatus | None = None,
    tag: Search = None,
) -> dict[str, Any]:
    """Newest first; `search` matches e-mail, names and company, `tag` one of the lead's tags."""
    where = [] if status is None else [Lead.status == status]
    if wanted := searchable(tag, "tag"):
        where.append(Lead.tags.contains([wanted]))
    return await page_of(request, principal, LeadRepository, each(row_out), page, page_size, search, *where)


add_reads(router, "leads", "lead", LeadRepository, LeadOut, each(row_out), listed=False)


@router.put("/leads/{lead_id}/report", response_model=Envelope[ReportOut])
async def upload_report(
    request: Request, principal: CurrentPrincipal, lead_id: str, file: Annotated[UploadFile, File()]
) -> dict[str, Any]:
    """The lead's report (a PDF of at most MAILDASH_REPORT_MAX_BYTES, 5 MB), attached to follow-ups of
    campaigns with `attach_report`."""
    most = request.app.state.runtime.settings.report_max_bytes
    content = await file.read(most + 1)
    service.check_report(content, most)
    filename = searchable((file.filename or "report.pdf").rsplit("/", 1)[-1][:200], "file") or "report.pdf"
    async with unit_of_work(request, principal, LeadRepository) as repo:
        return {"data": await service.store_report(repo, lead_id, filename, content)}


@router.post(
    "/leads/import",
    response_model=Envelope[ImportOut],
    openapi_extra=upload_doc("file"),
)
async def import_leads(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    """CSV in UTF-8 whose first row names the columns: `email` (required), `first_name`, `last_name`,
    `company`, `tags` (separated by `;`), `timezone` (IANA) and `country` (ISO 3166 alpha-2 or English
    name; an empty cell is none), any other column a custom field. A row with an unknown zone or country is
    a row error. Existing leads (same address) are updated, a repeated address in the file is skipped, and
    at most 1,000 row errors are listed. The file (multipart part `file`) may have up to
    MAILDASH_IMPORT_MAX_BYTES and MAILDASH_IMPORT_MAX_ROWS rows."""
    chunks = file_chunks(request, "file")
    work = unit_of_work(request, principal, LeadRepository)
    max_rows = request.app.state.runtime.settings.import_max_rows
    return {"data": await imports.import_csv(chunks, work, max_rows)}


@router.patch("/leads/{lead_id}", response_model=Envelope[LeadOut], responses=errors(409))
async def update_lead(
    request: Request, principal: CurrentPrincipal, lead_id: str, body: LeadPatch
) -> dict[str, Any]:
    """Messages already planned go to the lead's address as it is when they are sent."""
    async with unit_of_work(request, principal, LeadRepository) as repo:
        return {"data": await service.update(repo, lead_id, body)}


@router.delete("/leads/{lead_id}", response_model=Envelope[DeletedOut], responses=errors(409))
async def delete_lead(request: Request, principal: CurrentPrincipal, lead_id: str) -> dict[str, Any]:
    """Erases the lead with its message history; refused while a campaign still has mail for it."""
    async with unit_of_work(request, principal, LeadRepository) as repo:
        return {"data": await service.delete(repo, lead_id)}
