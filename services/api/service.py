"""Use cases of the api service: accounts and campaigns. Routes call these; SQL lives in the repository."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import ValidationError
from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api import repository
from services.api.auth import Passwords, Principal
from services.api.envelope import ApiError, conflict, invalid, not_found
from services.api.repository import Repository, parse_id
from services.api.schemas import CampaignIn, WindowIn
from shared import kpis
from shared.clock import utcnow
from shared.db import message_store
from shared.db.message_store import on_session
from shared.db.models import (
    Campaign,
    CampaignLead,
    CampaignStatus,
    LoginFailure,
    SendingDomain,
    Template,
    User,
    Workspace,
)
from shared.db.slots import domain_schedules, held_slots
from shared.events import CampaignStarted
from shared.messaging import enqueue
from shared.planning import DomainSchedule, audience, plan_round_robin
from shared.planning.slots import NoSlotError, Reservation, unplanned_reason
from shared.planning.summary import summarize
from shared.planning.window import Window
from shared.settings import Settings

PAST_TOLERANCE = timedelta(seconds=60)
MAX_LOGIN_FAILURES = 5
LOGIN_WINDOW = timedelta(minutes=15)
# Each login attempt deletes at most this many expired failures: a steady cost per attempt that still outpaces
# the one row an attempt adds, so the table holds little more than the attempts of the last window.
EXPIRED_FAILURES_PER_ATTEMPT = 100
LOGIN_LOCKS = 0x4C4F47  # advisory lock class of the per-address login locks ("LOG")


class Accounts:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], passwords: Passwords) -> None:
        self._sessions = sessions
        self._passwords = passwords

    async def ensure_superuser(self, email: str, password: str) -> None:
        """First start: the bootstrap superuser in a workspace named `default`."""
        async with self._sessions() as session:
            if await repository.user_by_email(session, email):
                return
        password_hash = await self._passwords.hash(password)
        async with self._sessions() as session, session.begin():
            if await repository.user_by_email(session, email):
                return  # another api process started at the same time
            default = await session.scalar(select(Workspace).where(Workspace.name == "default"))
            if default is None:
                default = Workspace(name="default")
                session.add(default)
                await session.flush()
            session.add(
                User(workspace_id=default.id, email=email, password_hash=password_hash, is_superuser=True)
            )

    async def authenticate(self, email: str, password: str) -> Principal | None:
        """The user, or None for a wrong e-mail or password; 429 after too many recent failures, 403 for a
        deactivated user's right password. Unknown addresses cost the same time and count the same way, so
        that neither tells whether an account exists."""
        email = email.lower()
        with self._passwords.admitted():
            user = await self._count_attempt(email)
            verified = await self._passwords.verify(password, user.password_hash if user else None)
        if user is None or not verified:
            return None
        async with self._sessions() as session, session.begin():
            await session.execute(delete(LoginFailure).where(LoginFailure.email == email))
        if not user.active:
            raise ApiError(403, "forbidden", "this account is deactivated; ask an administrator")
        return Principal(user.id, user.workspace_id, user.email, user.is_superuser)

    async def _count_attempt(self, email: str) -> User | None:
        """Count this attempt as a failure before its password is checked (a success clears the count), under
        a lock on the address: parallel guesses, in any number of api processes, get at most
        MAX_LOGIN_FAILURES passwords checked per window. Also deletes a few expired failures."""
        async with self._sessions() as session, session.begin():
            await session.execute(select(func.pg_advisory_xact_lock(LOGIN_LOCKS, func.hashtext(email))))
            since = utcnow() - LOGIN_WINDOW
            recent = list(
                await session.scalars(
                    select(LoginFailure.at)
                    .where(LoginFailure.email == email, LoginFailure.at > since)
                    .order_by(LoginFailure.at.desc())
                    .limit(MAX_LOGIN_FAILURES)
                )
            )
            if len(recent) >= MAX_LOGIN_FAILURES:
                retry_after = max(1, int((recent[-1] + LOGIN_WINDOW - utcnow()).total_seconds()) + 1)
                raise ApiError(
                    429,
                    "too_many_requests",
                    f"too many failed logins for this address; try again in {retry_after} s",
                    {"Retry-After": str(retry_after)},
                )
            session.add(LoginFailure(email=email))
            expired = (
                select(LoginFailure.id)
                .where(LoginFailure.at <= since)
                .limit(EXPIRED_FAILURES_PER_ATTEMPT)
                .with_for_update(skip_locked=True)
            )
            await session.execute(delete(LoginFailure).where(LoginFailure.id.in_(expired.scalar_subquery())))
            return await repository.user_by_email(session, email)

    async def principal(self, user_id: uuid.UUID) -> Principal | None:
        """The user as they are now, or None when deleted or deactivated: one indexed read per request."""
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(User.id, User.workspace_id, User.email, User.is_superuser).where(
                        User.id == user_id, User.active
                    )
                )
            ).first()
        return Principal(*row) if row else None

    async def set_active(self, by: Principal, email: str, *, active: bool) -> dict[str, Any]:
        """Deactivate (or reactivate) a user: their tokens stop working with the next request."""
        if not active and email.lower() == by.email.lower():
            raise conflict("you cannot deactivate yourself")
        async with self._sessions() as session, session.begin():
            user = await repository.user_by_email(session, email)
            if user is None:
                raise not_found("user")
            user.active = active
            return user_out(user)

    async def create_workspace(self, name: str, admin_email: str, admin_password: str) -> dict[str, Any]:
        """A workspace and its first admin, in one transaction: both or neither."""
        password_hash = await self._passwords.hash(admin_password)
        async with self._sessions() as session, session.begin():
            if await session.scalar(select(Workspace.id).where(func.lower(Workspace.name) == name.lower())):
                raise conflict(f"a workspace named {name!r} already exists")
            if await repository.user_by_email(session, admin_email):
                raise conflict(f"a user with e-mail {admin_email} already exists")
            workspace = Workspace(name=name)
            session.add(workspace)
            await session.flush()
            admin = User(
                workspace_id=workspace.id,
                email=admin_email.lower(),
                password_hash=password_hash,
            )
            session.add(admin)
            await session.flush()
            return {
                "workspace": {"id": str(workspace.id), "name": workspace.name},
                "admin": {"id": str(admin.id), "email": admin.email},
            }

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


def user_out(user: User) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "email": user.email,
        "workspace_id": str(user.workspace_id),
        "is_superuser": user.is_superuser,
        "active": user.active,
    }


def window_dict(payload: CampaignIn, settings: Settings) -> dict[str, Any]:
    """The campaign window: what the wizard set, the configured defaults (MAILDASH_WINDOW_*) for the rest."""
    given = payload.schedule.window
    defaults = {
        "timezone": settings.window_timezone,
        "days": settings.window_days,
        "start": settings.window_start,
        "end": settings.window_end,
        "holidays": settings.window_holidays,
    }
    try:
        merged = WindowIn(**{**defaults, **given.model_dump(include=given.model_fields_set)})
    except ValidationError as error:
        raise invalid(error.errors()[0]["msg"], ["body", "schedule", "window"]) from error
    return merged.model_dump()


@dataclass(frozen=True)
class Wizard:
    """A wizard payload checked against the workspace, with its audience resolved."""

    template: Template
    domains: list[SendingDomain]
    audience: audience.Audience
    window_spec: dict[str, Any]  # as stored on the campaign
    start_at: datetime | None

    @property
    def window(self) -> Window:
        return Window.from_dict(self.window_spec)


async def check_wizard(repo: Repository, payload: CampaignIn, settings: Settings) -> Wizard:
    """Every rule a campaign must meet before it is stored (or dry-run); 422 naming the field otherwise."""
    now = utcnow()
    schedule = payload.schedule
    if schedule.start_mode == "at" and schedule.start_at and schedule.start_at < now - PAST_TOLERANCE:
        raise invalid("start_at is in the past", ["body", "schedule", "start_at"])
    # Whatever the start mode, a campaign starts at max(now, start_at): keep that within the horizon.
    horizon = settings.start_horizon_days
    if schedule.start_at and schedule.start_at > now + timedelta(days=horizon):
        raise invalid(
            f"start_at is more than {horizon} days ahead (MAILDASH_START_HORIZON_DAYS)",
            ["body", "schedule", "start_at"],
        )
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
    window = window_dict(payload, settings)
    return Wizard(template, [known[n] for n in names], resolved, window, schedule.start_at)


async def create_campaign(repo: Repository, payload: CampaignIn, settings: Settings) -> Campaign:
    """Store the campaign with its resolved audience and, unless it is a draft, its `CampaignStarted` in the
    same transaction (outbox)."""
    wizard = await check_wizard(repo, payload, settings)
    campaign = Campaign(
        name=payload.name,
        status=CampaignStatus.DRAFT if payload.schedule.start_mode == "draft" else CampaignStatus.SCHEDULED,
        template_id=wizard.template.id,
        followup_enabled=payload.followup.enabled,
        followup_days=payload.followup.days,
        followup_attach_report=payload.followup.attach_report,
        track_opens=payload.tracking.opens,
        track_clicks=payload.tracking.clicks,
        start_at=wizard.start_at,
        window=wizard.window_spec,
        domains=[d.domain for d in wizard.domains],
        audience_count=len(wizard.audience.lead_ids),
        audience_excluded=wizard.audience.excluded,
    )
    repo.add(campaign)
    await repo.session.flush()
    lead_ids = wizard.audience.lead_ids
    if lead_ids:
        rows = [
            {"campaign_id": campaign.id, "position": i, "lead_id": lead} for i, lead in enumerate(lead_ids)
        ]
        await repo.session.execute(insert(CampaignLead), rows)
    await message_store.open_counters(on_session(repo.session), campaign.id)
    if campaign.status == CampaignStatus.SCHEDULED:
        await enqueue(repo.session, CampaignStarted(workspace_id=repo.workspace_id, campaign_id=campaign.id))
    return campaign


@contextlib.contextmanager
def _fitting() -> Iterator[None]:
    """A plan that finds no free slot within the planner's horizon answers 422 with the reason."""
    try:
        yield
    except NoSlotError as error:
        raise invalid(
            f"the audience does not fit: {error} (the window, the domains' intervals and daily caps)"
        ) from error


L = TypeVar("L")
D = TypeVar("D")


def _every_lead_fits(
    planned: list[tuple[L, D, Reservation | None]], earliest: datetime
) -> list[tuple[L, D, Reservation]]:
    """The plan, or NoSlotError when a lead got no slot (a start would fail that lead's message)."""
    fitting = [(lead, domain, slot) for lead, domain, slot in planned if slot is not None]
    if len(fitting) < len(planned):
        raise NoSlotError(unplanned_reason(earliest))
    return fitting


async def dry_run(repo: Repository, payload: CampaignIn, settings: Settings) -> dict[str, Any]:
    """What creating this campaign now would plan, through the planner and reservations a start uses."""
    wizard = await check_wizard(repo, payload, settings)
    earliest = max(utcnow(), wizard.start_at or utcnow())
    schedules = await domain_schedules(repo.session, wizard.domains, wizard.window, earliest, lock=False)
    with _fitting():
        planned = _every_lead_fits(
            plan_round_robin(wizard.audience.lead_ids, [d.id for d in wizard.domains], schedules, earliest),
            earliest,
        )
    names = {d.id: d.domain for d in wizard.domains}
    return {
        "audience_count": len(wizard.audience.lead_ids),
        "excluded": wizard.audience.excluded,
        **summarize(
            [(lead, names[d], slot) for lead, d, slot in planned], wizard.window, payload.followup.enabled
        ),
    }


async def campaign_dry_run(repo: Repository, campaign: Campaign) -> dict[str, Any]:
    """What a start or resume now would plan: the leads not yet sent to, re-planned from max(now, start_at)
    with the campaign's own unsent reservations left out."""
    window = Window.from_dict(campaign.window)
    earliest = max(utcnow(), campaign.start_at or utcnow())
    by_name = await repo.domains_named(campaign.domains)
    domains = [by_name[n] for n in campaign.domains]
    unsent = await repo.unsent_initial_messages(campaign.id)
    if unsent or await repo.campaign_has_messages(campaign.id):
        held = await held_slots(repo.session, domains, earliest, excluding=[m.id for m in unsent], lock=False)
        schedules = {
            d.id: DomainSchedule(window, d.min_interval_seconds, held[d.id], d.daily_cap) for d in domains
        }
        with _fitting():
            planned = [
                (m.lead_id, m.domain_used, schedules[m.sending_domain_id].take(max(earliest, m.not_before)))
                for m in unsent
            ]
    else:
        leads = await repo.audience_of(campaign.id)
        schedules = await domain_schedules(repo.session, domains, window, earliest, lock=False)
        names = {d.id: d.domain for d in domains}
        with _fitting():
            plan = plan_round_robin(leads, [d.id for d in domains], schedules, earliest)
            planned = [(lead, names[d], slot) for lead, d, slot in _every_lead_fits(plan, earliest)]
    return {
        "audience_count": campaign.audience_count,
        "excluded": {**dict.fromkeys(audience.EXCLUSION_ORDER, 0), **campaign.audience_excluded},
        **summarize(planned, window, campaign.followup_enabled),
    }


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
    counters, days = await repo.kpis(campaign.id)
    window = Window.from_dict(campaign.window)
    return {
        **campaign_out(campaign),
        "audience_count": campaign.audience_count,
        "domains_used": campaign.domains[: campaign.audience_count],
        "kpis": kpis.kpis(counters, window),
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
