"""The scheduler's reads; what it changes is a transition of `shared.db.message_store`."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from shared.db.models import Campaign, CampaignLead, CampaignStep, Lead, Message, SendingDomain
from shared.db.providers import recipient_domain_sql
from shared.db.slots import audience_windows
from shared.lifecycle import FINAL, SENDS
from shared.message_states import TRANSITIONS, UNFINISHED, UNSENT, CampaignStatus, LeadStatus, MessageStatus
from shared.planning import Reservation, Window
from shared.planning.slots import unplanned_reason
from shared.reputation import TRANSIENT, DomainState
from shared.sequences import FREE_MAIL, SKIPPED, Condition, Evidence, StopRules

# A message its sending domain may send: the domain is active, or paused and this is its probe.
DOMAIN_SENDS: ColumnElement[bool] = or_(
    SendingDomain.state == DomainState.ACTIVE, SendingDomain.probe_message_id == Message.id
)
IN_SENDING_CAMPAIGN = Message.campaign_id.in_(select(Campaign.id).where(Campaign.status.in_(SENDS)))


async def campaign_for_update(session: AsyncSession, campaign_id: uuid.UUID) -> Campaign | None:
    return await session.get(Campaign, campaign_id, with_for_update=True)


async def has_messages(session: AsyncSession, campaign_id: uuid.UUID) -> bool:
    found = await session.scalar(select(Message.id).where(Message.campaign_id == campaign_id).limit(1))
    return found is not None


async def audience(
    session: AsyncSession, campaign: Campaign, window: Window, year: int
) -> tuple[list[uuid.UUID], dict[uuid.UUID, Window]]:
    """The campaign's leads in audience order, and their own windows in recipient mode (`window`'s hours in
    their zones, plans starting in `year`): `shared.db.slots.audience_windows`."""
    leads = select(CampaignLead.lead_id).where(CampaignLead.campaign_id == campaign.id)
    return await audience_windows(session, leads, window, campaign.window_mode, year)


async def sending_domains(
    session: AsyncSession, workspace_id: uuid.UUID, names: list[str]
) -> dict[str, SendingDomain]:
    rows = await session.scalars(
        select(SendingDomain).where(
            SendingDomain.workspace_id == workspace_id, SendingDomain.domain.in_(names)
        )
    )
    return {row.domain: row for row in rows}


def new_message(
    campaign: Campaign,
    lead_id: uuid.UUID,
    domain_id: uuid.UUID,
    domain_name: str,
    slot: Reservation | None,
    not_before: datetime,
    parent_id: uuid.UUID | None = None,
    step: int = 0,
) -> tuple[Any, ...]:
    """A planned message as a COPY record (columns in `message_store.COPY_COLUMNS` order); without a slot
    (none free within the planner's horizon) a failed one that says so, holding no slot."""
    start, end = (slot.start, slot.end) if slot else (not_before, not_before)
    status = TRANSITIONS["plan" if slot else "plan_without_slot"].target
    assert status is not None
    return (
        uuid.uuid4(),
        campaign.workspace_id,
        campaign.id,
        lead_id,
        domain_id,
        domain_name,
        start,
        end,
        not_before,
        status.value,
        step,
        parent_id,
        0,
        None if slot else unplanned_reason(not_before),
    )


async def claim_due(session: AsyncSession, now: datetime, limit: int) -> list[Any]:
    """Planned messages of active campaigns whose slot has come, locked for this transaction."""
    query = (
        select(
            Message.id,
            Message.workspace_id,
            Message.campaign_id,
            Message.sending_domain_id,
            Message.scheduled_at,
            Message.not_before,
            Message.step,
            SendingDomain.min_interval_seconds,
        )
        .join(Campaign, Campaign.id == Message.campaign_id)
        .join(SendingDomain, SendingDomain.id == Message.sending_domain_id)
        .where(
            Message.status == MessageStatus.PLANNED,
            Message.scheduled_at <= now,
            Campaign.status.in_(SENDS),
            DOMAIN_SENDS,
        )
        .order_by(Message.scheduled_at)
        .limit(limit)
        .with_for_update(of=Message, skip_locked=True)
    )
    return list((await session.execute(query)).all())


async def unsent_for_update(session: AsyncSession, *where: Any) -> list[Message]:
    """Unsent messages (planned or dispatched), oldest slot first, locked."""
    rows = await session.scalars(
        select(Message)
        .where(Message.status.in_(UNSENT), *where)
        .order_by(Message.scheduled_at, Message.id)
        .with_for_update()
    )
    return list(rows)


async def next_due(session: AsyncSession) -> datetime | None:
    return await session.scalar(
        select(func.min(Message.scheduled_at))
        .join(Campaign, Campaign.id == Message.campaign_id)
        .join(SendingDomain, SendingDomain.id == Message.sending_domain_id)
        .where(Message.status == MessageStatus.PLANNED, Campaign.status.in_(SENDS), DOMAIN_SENDS)
    )


async def paused_domain(session: AsyncSession, domain_id: uuid.UUID) -> SendingDomain | None:
    """The domain, locked, if it is paused."""
    domain = await session.get(SendingDomain, domain_id, with_for_update=True)
    return domain if domain is not None and domain.state == DomainState.PAUSED else None


async def reassigning_campaigns(session: AsyncSession, domain_id: uuid.UUID) -> list[Campaign]:
    """Unfinished campaigns that move their mail off a paused domain and have unsent initial messages on this
    one, locked."""
    on_domain = select(Message.campaign_id).where(
        Message.sending_domain_id == domain_id, Message.status.in_(UNSENT), Message.is_followup.is_(False)
    )
    rows = await session.scalars(
        select(Campaign)
        .where(
            Campaign.reassign_on_domain_pause.is_(True),
            Campaign.status.not_in(FINAL),
            Campaign.id.in_(on_domain),
        )
        .order_by(Campaign.id)
        .with_for_update()
    )
    return list(rows)


async def active_domains(session: AsyncSession, campaign: Campaign) -> list[SendingDomain]:
    """The campaign's sending domains that send, in its order."""
    found = await sending_domains(session, campaign.workspace_id, campaign.domains)
    return [
        found[name]
        for name in campaign.domains
        if name in found and found[name].active and found[name].state == DomainState.ACTIVE
    ]


async def domains_to_probe(session: AsyncSession, cooled_before: datetime) -> list[SendingDomain]:
    """Domains paused for a transient cause before `cooled_before` without a probe under way (none chosen, or
    its message finished or its campaign stopped sending), locked; skipped while a sender holds one."""
    probe_under_way = (
        select(Message.id)
        .join(Campaign, Campaign.id == Message.campaign_id)
        .where(
            Message.id == SendingDomain.probe_message_id,
            Message.status.in_(UNFINISHED),
            Campaign.status.in_(SENDS),
        )
        .exists()
    )
    rows = await session.scalars(
        select(SendingDomain)
        .where(
            SendingDomain.state == DomainState.PAUSED,
            SendingDomain.paused_cause.in_(TRANSIENT),
            SendingDomain.paused_at <= cooled_before,
            ~probe_under_way,
        )
        .order_by(SendingDomain.id)
        .with_for_update(skip_locked=True)
    )
    return list(rows)


async def first_unsent(session: AsyncSession, domain_id: uuid.UUID) -> Message | None:
    """The domain's next message of a campaign that sends, locked: a paused domain's probe."""
    message: Message | None = await session.scalar(
        select(Message)
        .where(Message.sending_domain_id == domain_id, Message.status.in_(UNSENT), IN_SENDING_CAMPAIGN)
        .order_by(Message.scheduled_at, Message.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return message


async def active_campaigns_of_lead(session: AsyncSession, lead_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await session.scalars(
        select(Message.campaign_id)
        .join(Campaign, Campaign.id == Message.campaign_id)
        .where(Message.lead_id == lead_id, Campaign.status.in_(SENDS))
        .distinct()
    )
    return sorted(rows)


async def step_context(
    session: AsyncSession, message_id: uuid.UUID
) -> tuple[Message, Campaign, CampaignStep] | None:
    """A sent (or skipped) message, its campaign (locked) and the step that follows it, when the campaign
    has one, still sends or is paused, and the lead may still get it."""
    query = (
        select(Message, Campaign, CampaignStep)
        .join(Campaign, Campaign.id == Message.campaign_id)
        .join(Lead, Lead.id == Message.lead_id)
        .join(
            CampaignStep,
            (CampaignStep.campaign_id == Message.campaign_id) & (CampaignStep.position == Message.step + 1),
        )
        .where(
            Message.id == message_id,
            _goes_on(Message),
            Campaign.status.in_(SENDS | {CampaignStatus.PAUSED}),
            Lead.status == LeadStatus.ACTIVE,
        )
        .execution_options(populate_existing=True)
    )
    # Most sends have no next step: they take no lock (a step an edit adds is planned by `owed_steps`).
    if (found := (await session.execute(query)).first()) is None:
        return None
    # Then the campaign locked on its own, and the step read again: a step edit that held the campaign has
    # committed by then. Read with the lock in one statement, the step would be the one from before the edit
    # (PostgreSQL re-reads only the locked row once the lock is granted).
    await session.execute(select(Campaign.id).where(Campaign.id == found[1].id).with_for_update())
    row = (await session.execute(query)).first()
    return None if row is None else (row[0], row[1], row[2])


# What the lead (and its company) did in its campaign, for the messages $1 of steps after the first: the
# step's condition, the campaign's stop rules, and the evidence `shared.sequences.at_dispatch` weighs.
SEQUENCE_EVIDENCE = text(f"""
SELECT m.id, coalesce(s.condition, '{Condition.ALWAYS}') AS condition, c.stop_on_auto_reply,
  c.stop_on_click, c.stop_on_company_reply,
  EXISTS (
    SELECT FROM messages AS o WHERE o.lead_id = m.lead_id AND o.campaign_id = m.campaign_id
      AND o.step < m.step AND o.human_opened_at IS NOT NULL
  ) AS opened_human,
  EXISTS (
    SELECT FROM messages AS o WHERE o.lead_id = m.lead_id AND o.campaign_id = m.campaign_id
      AND o.step < m.step AND o.clicked_at IS NOT NULL
  ) AS clicked,
  c.stop_on_auto_reply AND EXISTS (
    SELECT FROM messages AS o JOIN message_events AS e ON e.message_id = o.id
    WHERE o.lead_id = m.lead_id AND o.campaign_id = m.campaign_id AND e.kind = 'auto_replied'
  ) AS auto_replied,
  c.stop_on_company_reply AND EXISTS (
    SELECT FROM messages AS o JOIN leads AS ol ON ol.id = o.lead_id
    WHERE o.campaign_id = m.campaign_id AND o.replied_at IS NOT NULL AND o.lead_id <> m.lead_id
      AND {recipient_domain_sql("ol.email")} = {recipient_domain_sql("l.email")}
      AND NOT {recipient_domain_sql("l.email")} = ANY(:free_mail)
  ) AS company_replied
FROM messages AS m
JOIN campaigns AS c ON c.id = m.campaign_id
JOIN leads AS l ON l.id = m.lead_id
LEFT JOIN campaign_steps AS s ON s.campaign_id = m.campaign_id AND s.position = m.step
WHERE m.id = ANY(:ids)
""")  # noqa: S608 -- our own constants


async def sequence_evidence(
    session: AsyncSession, message_ids: list[uuid.UUID]
) -> dict[uuid.UUID, tuple[Condition, StopRules, Evidence]]:
    """Per message: its step's condition, its campaign's stop rules and what its lead did by now."""
    if not message_ids:
        return {}
    rows = await session.execute(SEQUENCE_EVIDENCE, {"ids": message_ids, "free_mail": sorted(FREE_MAIL)})
    return {
        row.id: (
            Condition(row.condition),
            StopRules(row.stop_on_auto_reply, row.stop_on_click, row.stop_on_company_reply),
            Evidence(row.opened_human, row.clicked, row.auto_replied, row.company_replied),
        )
        for row in rows
    }


async def edited_campaigns(session: AsyncSession) -> list[tuple[uuid.UUID, datetime]]:
    """Campaigns that send and whose steps were edited: (id, when), oldest edit first."""
    rows = await session.execute(
        select(Campaign.id, Campaign.steps_edited_at)
        .where(Campaign.steps_edited_at.is_not(None), Campaign.status.in_(SENDS))
        .order_by(Campaign.steps_edited_at)
    )
    return [(row.id, row.steps_edited_at) for row in rows]


def _goes_on(message: type[Message]) -> ColumnElement[bool]:
    """A message its lead's next step follows: sent, or skipped (the next step counts from its slot). The
    same rule as `message_store.COMPLETE`'s."""
    return or_(
        message.status == MessageStatus.SENT,
        (message.status == MessageStatus.CANCELLED) & message.last_error.startswith(SKIPPED),
    )


async def owed_steps(session: AsyncSession, campaign_id: uuid.UUID, limit: int) -> list[uuid.UUID]:
    """Sent (or skipped) messages of the campaign whose next step exists and is not planned, to active leads:
    the steps an edit added after what some leads were sent."""
    later = aliased(Message)
    child = select(later.id).where(later.parent_message_id == Message.id).exists()
    rows = await session.scalars(
        select(Message.id)
        .join(Lead, Lead.id == Message.lead_id)
        .join(
            CampaignStep,
            (CampaignStep.campaign_id == Message.campaign_id) & (CampaignStep.position == Message.step + 1),
        )
        .where(
            Message.campaign_id == campaign_id,
            _goes_on(Message),
            Lead.status == LeadStatus.ACTIVE,
            ~child,
        )
        .limit(limit)
    )
    return list(rows)


async def edit_handled(session: AsyncSession, campaign_id: uuid.UUID, edited_at: datetime) -> None:
    """The edit of `edited_at` has its owed steps planned (a later edit stays to be handled)."""
    await session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.steps_edited_at == edited_at)
        .values(steps_edited_at=None)
    )


async def has_followup(session: AsyncSession, message_id: uuid.UUID) -> bool:
    found = await session.scalar(select(Message.id).where(Message.parent_message_id == message_id).limit(1))
    return found is not None


async def backlog(session: AsyncSession, now: datetime) -> tuple[int, int]:
    """Unsent messages the dispatcher would send (their campaign and domain send): (waiting for their slot,
    slot come and not sent yet). From the few campaigns that send, through `messages_campaign_status`."""
    due = Message.scheduled_at <= now
    query = (
        select(
            func.count().filter(Message.status == MessageStatus.PLANNED, ~due),
            func.count().filter(due),
        )
        .join(Campaign, Campaign.id == Message.campaign_id)
        .join(SendingDomain, SendingDomain.id == Message.sending_domain_id)
        .where(Message.status.in_(UNSENT), Campaign.status.in_(SENDS), DOMAIN_SENDS)
    )
    planned, late = (await session.execute(query)).one()
    return int(planned), int(late)
