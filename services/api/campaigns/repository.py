"""All SQL of campaigns and their messages, scoped to the workspace (`WorkspaceRepository`).

Message transitions, the KPI store and slot reservations are shared with the other services
(`shared/db/message_store.py`, `kpi.py`, `slots.py`); they are called from here only, with rows this
repository read in the workspace.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, literal, text, true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PgUUID

from services.api.kit.repository import WorkspaceRepository
from shared.db import kpi, message_store
from shared.db.message_store import on_session
from shared.db.models import (
    Campaign,
    CampaignLead,
    CampaignStep,
    CampaignStepKpi,
    Lead,
    Message,
    SendingDomain,
)
from shared.db.slots import (
    DomainLoad,
    audience_windows,
    domain_schedules,
    lead_providers,
    lead_windows,
    load_domains,
)
from shared.events import Event
from shared.kpis import Counters
from shared.lifecycle import FINAL
from shared.message_states import UNSENT
from shared.messaging import enqueue
from shared.planning import DomainSchedule, Window
from shared.planning.pacing import PaceRules
from shared.sequences import Step

STEP_COUNTERS = (
    "planned", "sent", "opened", "opened_human", "replied", "clicked", "bounced", "cancelled", "skipped",
)  # fmt: skip

# One step's timeline: the same columns as the campaign's counters, from its messages and their history.
STEP_DAYS = text("""
SELECT day, kind, count(*)::int AS n FROM (
  SELECT (m.scheduled_at AT TIME ZONE :zone)::date AS day, 'planned' AS kind FROM messages AS m
  WHERE m.campaign_id = :campaign AND m.step = :step AND m.workspace_id = :workspace
  UNION ALL
  SELECT (e.occurred_at AT TIME ZONE :zone)::date, e.kind
  FROM messages AS m JOIN message_events AS e ON e.message_id = m.id
  WHERE m.campaign_id = :campaign AND m.step = :step AND m.workspace_id = :workspace
    AND e.kind IN ('sent', 'bounced', 'complained')
  UNION ALL
  SELECT (at AT TIME ZONE :zone)::date, kind FROM messages AS m,
    LATERAL (VALUES (m.opened_at, 'opened'), (m.replied_at, 'replied'), (m.clicked_at, 'clicked'))
      AS t(at, kind)
  WHERE m.campaign_id = :campaign AND m.step = :step AND m.workspace_id = :workspace AND at IS NOT NULL
) AS happened GROUP BY 1, 2
""")


class CampaignRepository(WorkspaceRepository[Campaign]):
    model = Campaign
    noun = "campaign"
    searched = (Campaign.name,)

    async def using(self, *where: Any) -> list[tuple[str, str]]:
        """(name, status) of the campaigns matching `where`, unfinished ones first (five at most)."""
        rows = await self.session.execute(
            self.scoped(Campaign.name, Campaign.status)
            .where(*where)
            .order_by(Campaign.status.in_(FINAL), Campaign.created_at.desc())
            .limit(5)
        )
        return [(r.name, r.status) for r in rows]

    async def add_audience(self, campaign: Campaign, lead_ids: list[uuid.UUID]) -> None:
        """The campaign's leads in audience order (their position from 0), in one statement."""
        if not lead_ids:
            return
        ids = bindparam("lead_ids", lead_ids, type_=ARRAY(PgUUID(as_uuid=True)))
        audience = func.unnest(ids).table_valued("lead_id", with_ordinality="n").render_derived()
        rows = (
            self.scoped(Campaign.id, audience.c.n - 1, audience.c.lead_id)
            .join(audience, true())
            .where(Campaign.id == campaign.id)
        )
        await self.session.execute(
            insert(CampaignLead).from_select(["campaign_id", "position", "lead_id"], rows)
        )

    async def audience_of(
        self, campaign: Campaign, window: Window, year: int
    ) -> tuple[list[uuid.UUID], dict[uuid.UUID, Window]]:
        """The campaign's leads in audience order, and in recipient mode their own windows (`window`'s hours
        in their zones, plans starting in `year`), in one query (`shared.db.slots.audience_windows`)."""
        audience = (
            self.scoped(CampaignLead.lead_id)
            .join(CampaignLead, CampaignLead.campaign_id == Campaign.id)
            .where(Campaign.id == campaign.id)
        )
        return await audience_windows(
            self.session, audience, window, campaign.window_mode, year, self.owns(Lead)
        )

    async def anything_sent(self, campaign: Campaign) -> bool:
        sent = Message.sent_at.is_not(None)
        return await self.exists(
            self.scoped(Message.id, model=Message).where(Message.campaign_id == campaign.id, sent)
        )

    async def has_messages(self, campaign: Campaign) -> bool:
        return await self.exists(
            self.scoped(Message.id, model=Message).where(Message.campaign_id == campaign.id)
        )

    async def unsent_initial_messages(self, campaign: Campaign) -> list[Message]:
        rows = await self.session.scalars(
            self.scoped(model=Message)
            .where(
                Message.campaign_id == campaign.id,
                Message.is_followup.is_(False),
                Message.status.in_(UNSENT),
            )
            .order_by(Message.scheduled_at, Message.id)
        )
        return list(rows)

    async def kpis(self, campaign: Campaign) -> tuple[Counters, dict[date, dict[str, int]]]:
        return await kpi.totals(self.session, campaign.id), await kpi.days(self.session, campaign.id)

    async def step_kpis(self, campaign: Campaign) -> list[dict[str, int]]:
        """Per step that has messages, its figures: the shards of `campaign_step_kpis` added up."""
        sums = [func.sum(getattr(CampaignStepKpi, name)).label(name) for name in STEP_COUNTERS]
        rows = await self.session.execute(
            self.scoped(CampaignStepKpi.step, *sums)
            .join(CampaignStepKpi, CampaignStepKpi.campaign_id == Campaign.id)
            .where(Campaign.id == campaign.id)
            .group_by(CampaignStepKpi.step)
            .order_by(CampaignStepKpi.step)
        )
        return [{name: int(value) for name, value in row._mapping.items()} for row in rows]

    async def step_days(self, campaign: Campaign, step: int) -> dict[date, dict[str, int]]:
        """One step's timeline columns per local day of the campaign window."""
        zone = campaign.window["timezone"]
        found = {"campaign": campaign.id, "step": step, "zone": zone, "workspace": self.workspace_id}
        rows = await self.session.execute(STEP_DAYS, found)
        days: dict[date, dict[str, int]] = {}
        for row in rows:
            days.setdefault(row.day, {})[row.kind] = row.n
        return days

    async def steps_of(self, campaigns: list[Campaign]) -> dict[uuid.UUID, list[CampaignStep]]:
        """The campaigns' sequences, each in order (an empty one for a campaign without steps)."""
        rows = await self.session.scalars(
            self.scoped(CampaignStep)
            .join(CampaignStep, CampaignStep.campaign_id == Campaign.id)
            .where(Campaign.id.in_([c.id for c in campaigns]))
            .order_by(CampaignStep.campaign_id, CampaignStep.position)
        )
        found: dict[uuid.UUID, list[CampaignStep]] = {c.id: [] for c in campaigns}
        for row in rows:
            found[row.campaign_id].append(row)
        return found

    async def replace_steps(self, campaign: Campaign, steps: list[Step], first: int) -> None:
        """The campaign's steps from position `first` on become `steps` (those from `first` on)."""
        mine = self.scoped(Campaign.id).where(Campaign.id == campaign.id)
        await self.session.execute(
            delete(CampaignStep).where(CampaignStep.campaign_id.in_(mine), CampaignStep.position >= first),
            execution_options={"synchronize_session": False},
        )
        columns = ["campaign_id", "position", "template_id", "delay_days", "attach_report", "condition"]
        for step in steps:
            if step.position < first:
                continue
            values = (step.position, uuid.UUID(step.template_id), step.delay_days, step.attach_report)
            row = self.scoped(Campaign.id, *map(literal, values), literal(str(step.condition)))
            await self.session.execute(
                insert(CampaignStep).from_select(columns, row.where(Campaign.id == campaign.id))
            )

    async def planned_up_to(self, campaign: Campaign) -> int:
        """The highest step any lead of the campaign has a message of (0: none beyond the first e-mail)."""
        found = await self.session.scalar(
            self.scoped(func.max(Message.step), model=Message).where(Message.campaign_id == campaign.id)
        )
        return int(found or 0)

    async def open_counters(self, campaign: Campaign) -> None:
        await message_store.open_counters(on_session(self.session), campaign.id)

    async def cancel_unsent(self, campaign: Campaign) -> None:
        await message_store.cancel_campaign(on_session(self.session), campaign.id)

    async def announce(self, event: Event) -> None:
        """The event goes out with this transaction (outbox)."""
        await enqueue(self.session, event)

    async def schedules(
        self,
        domains: list[SendingDomain],
        window: Window,
        earliest: datetime,
        rules: PaceRules,
        lead_ids: list[uuid.UUID],
    ) -> tuple[dict[uuid.UUID, DomainSchedule], dict[uuid.UUID, str]]:
        """What planning these leads on these domains from `earliest` would find free, and the leads'
        providers that keep a pace of their own there; read without locking."""
        return await domain_schedules(self.session, domains, window, earliest, rules, lead_ids, lock=False)

    async def lead_windows(
        self, window: Window, mode: str, lead_ids: list[uuid.UUID], year: int
    ) -> dict[uuid.UUID, Window]:
        """The leads' own windows in recipient mode (`shared.db.slots.lead_windows`); the ids are the
        workspace's (an audience, or its messages' leads)."""
        return await lead_windows(self.session, window, mode, lead_ids, year)

    async def domain_loads(
        self, domains: list[SendingDomain], earliest: datetime, rules: PaceRules, excluding: list[Message]
    ) -> tuple[dict[uuid.UUID, DomainLoad], dict[uuid.UUID, str]]:
        """These domains as a re-plan of `excluding` would find them, and the paced providers of those
        messages' leads; read without locking."""
        ids = [m.id for m in excluding]
        loads = await load_domains(self.session, domains, earliest, rules, excluding=ids, lock=False)
        return loads, await lead_providers(self.session, loads.values(), [m.lead_id for m in excluding])


class MessageRepository(WorkspaceRepository[Message]):
    model = Message
    noun = "message"

    async def page_with_emails(
        self, page: int, page_size: int, filters: dict[str, Any]
    ) -> tuple[list[tuple[Message, str]], int]:
        """Messages with their lead's address, newest slot first; `filters` are exact matches on columns."""
        where = [getattr(Message, name) == value for name, value in filters.items() if value is not None]
        total = await self.session.scalar(self.scoped(func.count()).where(*where))
        rows = await self.session.execute(
            self.scoped(Message, Lead.email)
            .join(Lead, (Lead.id == Message.lead_id) & self.owns(Lead))
            .where(*where)
            .order_by(Message.scheduled_at.desc(), Message.id)
            .offset((page - 1) * page_size)
            .limit(page_size)
        )
        return [(message, email) for message, email in rows], total or 0

    async def lead_email(self, message: Message) -> str:
        return str(
            await self.session.scalar(self.scoped(Lead.email, model=Lead).where(Lead.id == message.lead_id))
        )

    async def campaign_for_update(self, message: Message) -> Campaign:
        """The message's campaign, locked until the transaction ends."""
        campaign: Campaign = (
            await self.session.scalars(
                self.scoped(model=Campaign).where(Campaign.id == message.campaign_id).with_for_update(),
                execution_options={"populate_existing": True},
            )
        ).one()
        return campaign

    async def resend(self, message: Message, now: datetime) -> Message:
        await message_store.resend(on_session(self.session), message.id, now)
        return await self.reload(message)
