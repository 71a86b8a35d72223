"""Use cases of templates. A template is tenant code: it is compiled and rendered only in the render pool's
worker processes (`shared/render_pool.py`), never in the api's own."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from sqlalchemy import or_, select

from services.api.campaigns.usage import refuse_if_used
from services.api.kit.envelope import ApiError, invalid
from services.api.kit.reads import row_out
from services.api.leads.repository import LeadRepository
from services.api.templates.repository import TemplateRepository
from services.api.templates.schemas import PreviewIn, TemplateIn, TemplatePatch
from shared import tokens
from shared.db.models import Campaign, CampaignStep, Lead, Template
from shared.render import Letter, RenderError, lead_variables
from shared.render_pool import RendererUnavailable, RenderPool
from shared.settings import Settings

T = TypeVar("T")
TEMPLATE_PARTS = ("subject", "body_html", "body_text", "followup_subject", "followup_body_html")
PREVIEW_MESSAGE_ID = "00000000-0000-0000-0000-000000000000"


async def check_sources(pool: RenderPool, body: TemplateIn | TemplatePatch) -> None:
    """422 unless every template field sent compiles within its limits (in a render worker: compiling a
    tenant's template is running its code)."""
    sources = {name: source for name in TEMPLATE_PARTS if (source := getattr(body, name)) is not None}
    if sources:
        await template_job(pool.check(sources))


async def template_job(job: Awaitable[T]) -> T:
    """A render pool job, its template's failure answered 422 and a pool that cannot work 503."""
    try:
        return await job
    except RenderError as error:
        raise invalid(str(error), ["body", error.part] if error.part else ["body"]) from error
    except RendererUnavailable as error:
        raise ApiError(503, "unavailable", "templates cannot be rendered right now; try again") from error


async def create(repo: TemplateRepository, body: TemplateIn) -> dict[str, Any]:
    return row_out(await repo.add(Template(**body.model_dump())))


async def update(repo: TemplateRepository, raw_id: str, body: TemplatePatch) -> dict[str, Any]:
    """Takes effect for every message rendered from now on, also in running campaigns."""
    row = await repo.require(raw_id)
    return row_out(await repo.change(row, body.changes()))


async def delete(repo: TemplateRepository, raw_id: str) -> dict[str, Any]:
    row = await repo.require(raw_id)
    in_a_step = select(CampaignStep.campaign_id).where(CampaignStep.template_id == row.id)
    await refuse_if_used(
        repo, f"template {row.name!r}", or_(Campaign.template_id == row.id, Campaign.id.in_(in_a_step))
    )
    await repo.delete(row)
    return {"id": str(row.id), "deleted": True}


async def preview_parts(repo: TemplateRepository, raw_id: str, body: PreviewIn) -> tuple[Template, Lead]:
    """The template and the lead of a preview, both of the workspace (404 otherwise)."""
    return await repo.require(raw_id), await repo.sibling(LeadRepository).require(body.lead_id)


async def preview(
    pool: RenderPool, settings: Settings, template: Template, lead: Lead, followup: bool
) -> dict[str, Any]:
    """The subject and bodies as `lead` would receive them, rendered by the sender's own code (tracking links
    as they would be sent, for a message id of zeros)."""
    letter = Letter(
        message_id=PREVIEW_MESSAGE_ID,
        domain="example.com",
        from_email="sender@example.com",
        from_name="",
        to_email=lead.email,
        subject=(template.followup_subject or f"Re: {template.subject}") if followup else template.subject,
        body_html=(template.followup_body_html or template.body_html) if followup else template.body_html,
        body_text=None if followup and template.followup_body_html else template.body_text,
        variables=lead_variables(lead, ""),
        tracker_url=settings.public_tracker_url.rstrip("/"),
        open_token=None,
        unsubscribe_token=tokens.sign_message(settings.tracking_secret, "unsubscribe", PREVIEW_MESSAGE_ID),
        smtp_message_id=f"<{PREVIEW_MESSAGE_ID}@example.com>",
    )
    rendered = await template_job(pool.render(letter))
    return {"subject": rendered.subject, "html": rendered.html, "text": rendered.text}
