"""Campaign lifecycle and resend: a status change, its immediate effects and its event, in one transaction."""

from __future__ import annotations

from sqlalchemy import select

from services.api.envelope import conflict
from services.api.repository import Repository
from shared import message_states
from shared.clock import utcnow
from shared.db import message_store
from shared.db.message_store import on_session
from shared.db.models import Campaign, CampaignStatus, Message, MessageStatus
from shared.events import CampaignPaused, CampaignResumed, CampaignStarted, CampaignStopped, Event
from shared.lifecycle import InvalidTransition, Requested, transition
from shared.messaging import enqueue

EVENTS: dict[Requested, type[Event]] = {
    "start": CampaignStarted,
    "pause": CampaignPaused,
    "resume": CampaignResumed,
    "stop": CampaignStopped,
}


async def change(repo: Repository, campaign: Campaign, action: Requested) -> Campaign:
    """Apply `action` or answer 409 changing nothing.

    The campaign row is locked first: a sender's claim holds it in share mode, so `pause` and `stop` return
    only once no claim can still see the campaign active, and none can start after."""
    await repo.session.refresh(campaign, with_for_update=True)
    anything_sent = await repo.session.scalar(
        select(Message.id).where(Message.campaign_id == campaign.id, Message.sent_at.is_not(None)).limit(1)
    )
    try:
        campaign.status = transition(CampaignStatus(campaign.status), action, anything_sent is not None)
    except InvalidTransition as error:
        raise conflict(str(error)) from error
    if action == "stop":
        await message_store.cancel_campaign(on_session(repo.session), campaign.id)
    await enqueue(repo.session, EVENTS[action](workspace_id=repo.workspace_id, campaign_id=campaign.id))
    await repo.session.flush()
    return campaign


async def resend(repo: Repository, message: Message) -> Message:
    """Plan a `failed` message again, like a retry: the scheduler gives it the next free slot from now. A
    completed campaign runs again."""
    try:
        message_states.transition(MessageStatus(message.status), "resend")
    except message_states.InvalidMessageTransition as error:
        raise conflict(f"only a failed message can be resent; this one is {message.status}") from error
    campaign = await repo.session.get_one(Campaign, message.campaign_id, with_for_update=True)
    if campaign.status == CampaignStatus.STOPPED:
        raise conflict("the campaign is stopped")
    await message_store.resend(on_session(repo.session), message.id, utcnow())
    await repo.session.refresh(message)
    return message
