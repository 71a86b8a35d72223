"""Use cases of the api service: accounts and campaigns. Routes call these; SQL lives in the repository."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import exists, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api import repository
from services.api.auth import Principal, passwords
from services.api.envelope import ApiError, invalid
from services.api.repository import Repository, parse_id
from services.api.schemas import CampaignIn
from shared import kpis
from shared.clock import utcnow
from shared.db.models import Campaign, CampaignKpi, CampaignLead, CampaignStatus, Template, User, Workspace
from shared.events import CampaignStarted
from shared.messaging import enqueue
from shared.planning import audience
from shared.planning.window import Window

PAST_TOLERANCE = timedelta(seconds=60)


class Accounts:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def ensure_superuser(self, email: str, password: str) -> None:
        """First start: the bootstrap superuser in a workspace named `default`."""
        async with self._sessions() as session, session.begin():
            if await repository.user_by_email(session, email):
                return
            default = await session.scalar(select(Workspace).where(Workspace.name == "default"))
            if default is None:
                default = Workspace(name="default")
                session.add(default)
                await session.flush()
            session.add(
                User(
                    workspace_id=default.id,
                    email=email,
                    password_hash=passwords.hash(password),
                    is_superuser=True,
                )
            )

    async def authenticate(self, email: str, password: str) -> Principal | None:
        async with self._sessions() as session:
            user = await repository.user_by_email(session, email)
        if user is None or not passwords.verify(password, user.password_hash):
            return None
        return Principal(user.id, user.workspace_id, user.email, user.is_superuser)

    async def user_exists(self, user_id: uuid.UUID) -> bool:
        async with self._sessions() as session:
            return bool(await session.scalar(select(exists().where(User.id == user_id))))

    async def me(self, principal: Principal) -> dict[str, Any]:
        async with self._sessions() as session:
            workspace = await repository.workspace(session, principal.workspace_id)
        return {
            "user": {
                "id": str(principal.user_id),
                "email": principal.email,
                "is_superuser": principal.is_superuser,
            },
            "workspace": {"id": str(principal.workspace_id), "name": workspace.name if workspace else None},
        }


def window_dict(payload: CampaignIn) -> dict[str, Any]:
    return payload.schedule.window.model_dump()


async def create_campaign(repo: Repository, payload: CampaignIn) -> Campaign:
    """Validate the wizard payload against the workspace, resolve the audience once, store the campaign and,
    unless it is a draft, its `CampaignStarted` in the same transaction (outbox)."""
    now = utcnow()
    schedule = payload.schedule
    if schedule.start_mode == "at" and schedule.start_at and schedule.start_at < now - PAST_TOLERANCE:
        raise invalid("start_at is in the past", ["body", "schedule", "start_at"])
    template = await repo.get(Template, payload.template_id)
    if template is None:
        raise invalid("template not found in this workspace", ["body", "template_id"])
    names = [d.lower() for d in payload.domains]
    if len(set(names)) != len(names):
        raise invalid("domains are listed twice", ["body", "domains"])
    known = await repo.domains_named(names)
    unusable = [n for n in names if n not in known or not known[n].active]
    if unusable:
        raise invalid(
            f"not active sending domains of this workspace: {', '.join(unusable)}", ["body", "domains"]
        )

    resolved = await _resolve_audience(repo, payload, now)
    campaign = Campaign(
        name=payload.name,
        status=CampaignStatus.DRAFT if schedule.start_mode == "draft" else CampaignStatus.SCHEDULED,
        template_id=template.id,
        followup_enabled=payload.followup.enabled,
        followup_days=payload.followup.days,
        followup_attach_report=payload.followup.attach_report,
        track_opens=payload.tracking.opens,
        track_clicks=payload.tracking.clicks,
        start_at=schedule.start_at,
        window=window_dict(payload),
        domains=names,
        audience_count=len(resolved.lead_ids),
    )
    repo.add(campaign)
    await repo.session.flush()
    if resolved.lead_ids:
        await repo.session.execute(
            insert(CampaignLead),
            [
                {"campaign_id": campaign.id, "position": i, "lead_id": lead}
                for i, lead in enumerate(resolved.lead_ids)
            ],
        )
    repo.session.add(CampaignKpi(campaign_id=campaign.id))
    if campaign.status == CampaignStatus.SCHEDULED:
        await enqueue(repo.session, CampaignStarted(workspace_id=repo.workspace_id, campaign_id=campaign.id))
    return campaign


async def _resolve_audience(repo: Repository, payload: CampaignIn, now: Any) -> audience.Audience:
    spec = payload.audience
    if spec.mode == "static":
        ids = [parse_id(raw) for raw in spec.lead_ids]
        found = await repo.candidates_by_ids([i for i in ids if i is not None])
        missing = [raw for raw, i in zip(spec.lead_ids, ids, strict=True) if i is None or i not in found]
        if missing:
            raise invalid(f"unknown lead ids: {', '.join(missing[:20])}", ["body", "audience", "lead_ids"])
        candidates = [found[i] for i in dict.fromkeys(ids) if i is not None]
    else:
        if not spec.tags:
            raise invalid("audience mode 'tags' needs at least one tag", ["body", "audience", "tags"])
        candidates = await repo.candidates_by_tags(spec.tags)
    emails, domains = await repo.suppressions()
    rules = audience.AudienceRules(
        exclude_suppressed=spec.exclude_suppressed,
        recent_since=now - timedelta(days=spec.exclude_recent_days) if spec.exclude_recent_days else None,
        one_per_domain=spec.one_per_domain,
    )
    return audience.resolve(candidates, rules, emails, domains)


async def campaign_detail(repo: Repository, campaign: Campaign) -> dict[str, Any]:
    counters, days = await repo.kpi_rows(campaign.id)
    window = Window.from_dict(campaign.window)
    values = (
        kpis.Counters(**{f: getattr(counters, f) for f in kpis.Counters.__dataclass_fields__})
        if counters
        else kpis.Counters()
    )
    return {
        **campaign_out(campaign),
        "audience_count": campaign.audience_count,
        "domains_used": campaign.domains[: campaign.audience_count],
        "kpis": kpis.kpis(values, window),
        "timeline": kpis.timeline(days, window.local_date(utcnow())),
    }


def campaign_out(campaign: Campaign) -> dict[str, Any]:
    return {
        "id": str(campaign.id),
        "name": campaign.name,
        "status": campaign.status,
        "template_id": str(campaign.template_id),
        "followup_enabled": campaign.followup_enabled,
        "followup_days": campaign.followup_days,
        "followup_attach_report": campaign.followup_attach_report,
        "start_at": campaign.start_at,
        "window": campaign.window,
        "domains": campaign.domains,
        "created_at": campaign.created_at,
        "updated_at": campaign.updated_at,
    }


def not_found_unless(row: Any, what: str) -> Any:
    if row is None:
        raise ApiError(404, "not_found", f"{what} not found")
    return row
