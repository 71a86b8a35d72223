"""Changing and deleting sending domains, leads and templates, and previewing a template for a lead.

A delete that would take something from under a campaign answers 409 and says what to do instead.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from services.api.auth import CurrentPrincipal
from services.api.envelope import Envelope, conflict
from services.api.repository import Repository
from services.api.routes.deps import unit_of_work
from services.api.routes.resources import check_smtp_host, check_templates, domain_out, row_out, template_job
from services.api.schemas import (
    DeletedOut,
    DomainOut,
    DomainPatch,
    LeadOut,
    LeadPatch,
    PreviewIn,
    PreviewOut,
    TemplateOut,
    TemplatePatch,
)
from services.api.service import not_found_unless
from shared import crypto, tokens
from shared.db.models import Campaign, Lead, Message, SendingDomain, Template
from shared.lifecycle import FINAL
from shared.message_states import UNFINISHED
from shared.render import Letter, lead_variables
from shared.settings import Settings

router = APIRouter()


async def _changed(repo: Repository, row: Any, changes: dict[str, Any]) -> Any:
    for name, value in changes.items():
        setattr(row, name, value)
    await repo.session.flush()
    await repo.session.refresh(row)
    return row


def _deleted(row: Any) -> dict[str, Any]:
    return {"data": {"id": str(row.id), "deleted": True}}


async def _refuse_if_used(repo: Repository, what: str, *where: Any) -> None:
    using = await repo.campaigns_using(*where)
    live = [name for name, status in using if status not in FINAL]
    if live:
        raise conflict(f"{what} is used by unfinished campaigns ({', '.join(live)}); stop them first")
    if using:
        raise conflict(
            f"{what} is kept for the history of finished campaigns ({', '.join(n for n, _ in using)})"
        )


@router.patch("/domains/{domain_id}", response_model=Envelope[DomainOut], tags=["domains"])
async def update_domain(
    request: Request, principal: CurrentPrincipal, domain_id: str, body: DomainPatch
) -> dict[str, Any]:
    """Planned slots keep their times; a new interval or cap applies to what is planned from now on."""
    settings: Settings = request.app.state.runtime.settings
    changes = body.changes()
    smtp = changes.pop("smtp", None) or {}
    async with unit_of_work(request, principal) as repo:
        row = not_found_unless(await repo.get(SendingDomain, domain_id), "sending domain")
        if "host" in smtp or "port" in smtp:
            await check_smtp_host(settings, smtp.get("host", row.smtp_host), smtp.get("port", row.smtp_port))
        for name, value in smtp.items():
            if name == "password":
                encrypted = crypto.encrypt(settings.encryption_key, value) if value else None
                changes["smtp_password_encrypted"] = encrypted
            else:
                changes[f"smtp_{name}"] = value
        return {"data": domain_out(await _changed(repo, row, changes))}


@router.delete("/domains/{domain_id}", response_model=Envelope[DeletedOut], tags=["domains"])
async def delete_domain(request: Request, principal: CurrentPrincipal, domain_id: str) -> dict[str, Any]:
    """Only a domain no campaign names; otherwise deactivate it (`PATCH {"active": false}`)."""
    async with unit_of_work(request, principal) as repo:
        row = not_found_unless(await repo.get(SendingDomain, domain_id), "sending domain")
        await _refuse_if_used(repo, f"sending domain {row.domain}", Campaign.domains.contains([row.domain]))
        await repo.delete(row)
        return _deleted(row)


@router.patch("/leads/{lead_id}", response_model=Envelope[LeadOut], tags=["leads"])
async def update_lead(
    request: Request, principal: CurrentPrincipal, lead_id: str, body: LeadPatch
) -> dict[str, Any]:
    """Messages already planned go to the lead's address as it is when they are sent."""
    changes = body.changes()
    async with unit_of_work(request, principal) as repo:
        row = not_found_unless(await repo.get(Lead, lead_id), "lead")
        email = changes.get("email")
        if email and email.lower() != row.email.lower() and await repo.lead_by_email(email):
            raise conflict(f"a lead with e-mail {email} already exists")
        return {"data": row_out(await _changed(repo, row, changes))}


@router.delete("/leads/{lead_id}", response_model=Envelope[DeletedOut], tags=["leads"])
async def delete_lead(request: Request, principal: CurrentPrincipal, lead_id: str) -> dict[str, Any]:
    """Erases the lead with its message history; refused while a campaign still has mail for it."""
    async with unit_of_work(request, principal) as repo:
        row = not_found_unless(await repo.get(Lead, lead_id), "lead")
        if await repo.has_messages(Message.lead_id == row.id, Message.status.in_(UNFINISHED)):
            raise conflict(
                "a campaign still has mail planned for this lead; stop it or wait until it is sent"
            )
        await repo.delete(row)
        return _deleted(row)


@router.patch("/templates/{template_id}", response_model=Envelope[TemplateOut], tags=["templates"])
async def update_template(
    request: Request, principal: CurrentPrincipal, template_id: str, body: TemplatePatch
) -> dict[str, Any]:
    """Takes effect for every message rendered from now on, also in running campaigns."""
    await check_templates(request, body)
    async with unit_of_work(request, principal) as repo:
        row = not_found_unless(await repo.get(Template, template_id), "template")
        return {"data": row_out(await _changed(repo, row, body.changes()))}


@router.delete("/templates/{template_id}", response_model=Envelope[DeletedOut], tags=["templates"])
async def delete_template(request: Request, principal: CurrentPrincipal, template_id: str) -> dict[str, Any]:
    async with unit_of_work(request, principal) as repo:
        row = not_found_unless(await repo.get(Template, template_id), "template")
        await _refuse_if_used(repo, f"template {row.name!r}", Campaign.template_id == row.id)
        await repo.delete(row)
        return _deleted(row)


@router.post("/templates/{template_id}/preview", response_model=Envelope[PreviewOut], tags=["templates"])
async def preview_template(
    request: Request, principal: CurrentPrincipal, template_id: str, body: PreviewIn
) -> dict[str, Any]:
    """The subject and bodies as `lead_id` would receive them (tracking links shown as they would be sent,
    for a message id of zeros). A template that cannot render for this lead answers 422 with the reason."""
    settings: Settings = request.app.state.runtime.settings
    async with unit_of_work(request, principal) as repo:
        template = not_found_unless(await repo.get(Template, template_id), "template")
        lead = not_found_unless(await repo.get(Lead, body.lead_id), "lead")
    message_id = "00000000-0000-0000-0000-000000000000"
    letter = Letter(
        message_id=message_id,
        domain="example.com",
        from_email="sender@example.com",
        from_name="",
        to_email=lead.email,
        subject=(template.followup_subject or f"Re: {template.subject}")
        if body.followup
        else template.subject,
        body_html=(template.followup_body_html or template.body_html)
        if body.followup
        else template.body_html,
        body_text=None if body.followup and template.followup_body_html else template.body_text,
        variables=lead_variables(lead, ""),
        tracker_url=settings.public_tracker_url.rstrip("/"),
        open_token=None,
        unsubscribe_token=tokens.sign_message(settings.tracking_secret, "unsubscribe", message_id),
        smtp_message_id=f"<{message_id}@example.com>",
    )
    rendered = await template_job(request.app.state.templates.render(letter))
    return {"data": {"subject": rendered.subject, "html": rendered.html, "text": rendered.text}}
