"""Sending domains, leads and templates: workspace-scoped CRUD."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, File, Request, UploadFile

from services.api.auth import CurrentPrincipal
from services.api.envelope import ApiError, Envelope, Page, conflict, invalid
from services.api.routes.deps import PageNumber, PageSize, Search, page_of, searchable, unit_of_work
from services.api.schemas import (
    DomainIn,
    DomainOut,
    LeadIn,
    LeadOut,
    ReportOut,
    TemplateIn,
    TemplateOut,
    TemplatePatch,
)
from services.api.service import not_found_unless
from shared import crypto
from shared.db.models import Lead, LeadReport, LeadStatus, SendingDomain, Template
from shared.public_address import UnusableHost, resolve_public
from shared.render import RenderError
from shared.render_pool import RendererUnavailable
from shared.settings import Settings

router = APIRouter()
T = TypeVar("T")


def domain_out(row: SendingDomain) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "domain": row.domain,
        "from_email": row.from_email,
        "from_name": row.from_name,
        "smtp": {
            "host": row.smtp_host,
            "port": row.smtp_port,
            "username": row.smtp_username,
            "security": row.smtp_security,
            "has_password": row.smtp_password_encrypted is not None,
        },
        "min_interval_seconds": row.min_interval_seconds,
        "daily_cap": row.daily_cap,
        "active": row.active,
        "created_at": row.created_at,
    }


def row_out(row: Lead | Template) -> dict[str, Any]:
    return {
        c.key: (str(v) if c.key == "id" else v)
        for c in row.__table__.columns
        if (v := getattr(row, c.key)) is not None or c.nullable
    }


async def check_smtp_host(settings: Settings, host: str, port: int) -> None:
    """Refuse an SMTP host that does not resolve, or resolves to an address that is not public (in production,
    unless the operator allows private hosts). The sender judges it again at every connection."""
    if settings.private_hosts_allowed:
        return
    try:
        await resolve_public(host, port, allow_private=False, timeout=5)
    except UnusableHost as error:
        raise invalid(f"SMTP host {error}", ["body", "smtp", "host"]) from error


@router.post("/domains", status_code=201, response_model=Envelope[DomainOut], tags=["domains"])
async def create_domain(request: Request, principal: CurrentPrincipal, body: DomainIn) -> dict[str, Any]:
    settings = request.app.state.runtime.settings
    await check_smtp_host(settings, body.smtp.host, body.smtp.port)
    async with unit_of_work(request, principal) as repo:
        if await repo.domains_named([body.domain]):
            raise conflict(f"sending domain {body.domain} already exists")
        row = SendingDomain(
            domain=body.domain,
            from_email=str(body.from_email),
            from_name=body.from_name,
            smtp_host=body.smtp.host,
            smtp_port=body.smtp.port,
            smtp_username=body.smtp.username,
            smtp_password_encrypted=crypto.encrypt(settings.encryption_key, body.smtp.password)
            if body.smtp.password
            else None,
            smtp_security=body.smtp.security,
            min_interval_seconds=settings.min_interval_seconds
            if body.min_interval_seconds is None
            else body.min_interval_seconds,
            daily_cap=body.daily_cap,
            active=body.active,
        )
        repo.add(row)
        await repo.session.flush()
        await repo.session.refresh(row)
        return {"data": domain_out(row)}


@router.post("/leads", status_code=201, response_model=Envelope[LeadOut], tags=["leads"])
async def create_lead(request: Request, principal: CurrentPrincipal, body: LeadIn) -> dict[str, Any]:
    async with unit_of_work(request, principal) as repo:
        if await repo.lead_by_email(str(body.email)):
            raise conflict(f"a lead with e-mail {body.email} already exists")
        row = Lead(**body.model_dump(mode="json"))
        repo.add(row)
        await repo.session.flush()
        await repo.session.refresh(row)
        return {"data": row_out(row)}


TEMPLATE_PARTS = ("subject", "body_html", "body_text", "followup_subject", "followup_body_html")


async def check_templates(request: Request, body: TemplateIn | TemplatePatch) -> None:
    """422 unless every template field sent compiles within its limits (in a render worker: compiling a
    tenant's template is running its code)."""
    sources = {name: source for name in TEMPLATE_PARTS if (source := getattr(body, name)) is not None}
    if sources:
        await template_job(request.app.state.templates.check(sources))


async def template_job(job: Awaitable[T]) -> T:
    """A render pool job, its template's failure answered 422 and a pool that cannot work 503."""
    try:
        return await job
    except RenderError as error:
        raise invalid(str(error), ["body", error.part] if error.part else ["body"]) from error
    except RendererUnavailable as error:
        raise ApiError(503, "unavailable", "templates cannot be rendered right now; try again") from error


@router.post("/templates", status_code=201, response_model=Envelope[TemplateOut], tags=["templates"])
async def create_template(request: Request, principal: CurrentPrincipal, body: TemplateIn) -> dict[str, Any]:
    await check_templates(request, body)
    async with unit_of_work(request, principal) as repo:
        row = Template(**body.model_dump())
        repo.add(row)
        await repo.session.flush()
        await repo.session.refresh(row)
        return {"data": row_out(row)}


def add_reads(
    router: APIRouter,
    path: str,
    model: type[Any],
    schema: type[Any],
    to_out: Callable[[Any], dict[str, Any]],
    what: str,
    listed: bool = True,
) -> None:
    """`GET /<path>` (a page, newest first; `search` over its text columns) and `GET /<path>/{id}`, scoped to
    the caller's workspace."""

    async def list_rows(
        request: Request,
        principal: CurrentPrincipal,
        page: PageNumber = 1,
        page_size: PageSize = 20,
        search: Search = None,
    ) -> dict[str, Any]:
        return await page_of(request, principal, model, to_out, page, page_size, search)

    if listed:
        router.add_api_route(
            f"/{path}",
            list_rows,
            response_model=Envelope[Page[schema]],  # type: ignore[valid-type]
            tags=[path],
            name=f"list_{path}",
        )

    @router.get(f"/{path}/{{row_id}}", response_model=Envelope[schema], tags=[path], name=f"get_{path}")  # type: ignore[valid-type]
    async def get_row(request: Request, principal: CurrentPrincipal, row_id: str) -> dict[str, Any]:
        async with unit_of_work(request, principal) as repo:
            return {"data": to_out(not_found_unless(await repo.get(model, row_id), what))}


@router.get("/leads", response_model=Envelope[Page[LeadOut]], tags=["leads"])
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
    return await page_of(request, principal, Lead, row_out, page, page_size, search, *where)


add_reads(router, "domains", SendingDomain, DomainOut, domain_out, "sending domain")
add_reads(router, "leads", Lead, LeadOut, row_out, "lead", listed=False)
add_reads(router, "templates", Template, TemplateOut, row_out, "template")


@router.put("/leads/{lead_id}/report", response_model=Envelope[ReportOut], tags=["leads"])
async def upload_report(
    request: Request, principal: CurrentPrincipal, lead_id: str, file: Annotated[UploadFile, File()]
) -> dict[str, Any]:
    """The lead's report (a PDF of at most MAILDASH_REPORT_MAX_BYTES, 5 MB), attached to follow-ups of
    campaigns with `attach_report`."""
    most = request.app.state.runtime.settings.report_max_bytes
    content = await file.read(most + 1)
    if len(content) > most:
        raise ApiError(413, "payload_too_large", f"a report may be at most {most:,} bytes")
    if not content.startswith(b"%PDF-"):
        raise invalid("the report must be a PDF file", ["body", "file"])
    filename = searchable((file.filename or "report.pdf").rsplit("/", 1)[-1][:200], "file") or "report.pdf"
    async with unit_of_work(request, principal) as repo:
        lead = not_found_unless(await repo.get(Lead, lead_id), "lead")
        row = await repo.session.merge(LeadReport(lead_id=lead.id, filename=filename, content=content))
        await repo.session.flush()
        await repo.session.refresh(row)
        out = {
            "lead_id": str(lead.id),
            "filename": row.filename,
            "size": len(content),
            "uploaded_at": row.uploaded_at,
        }
    return {"data": out}
