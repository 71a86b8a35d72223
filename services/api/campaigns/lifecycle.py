"""Campaign lifecycle and resend: a status change, its immediate effects and its event, in one transaction."""

from __future__ import annotations

from typing import Any

from services.api.campaigns.repository import CampaignRepository, MessageRepository
from services.api.campaigns.service import campaign_out, message_out, steps_of
from services.api.kit.envelope import conflict
from shared import message_states
from shared.clock import utcnow
from shared.db.models import CampaignStatus, MessageStatus
from shared.events import CampaignPaused, CampaignResumed, CampaignStarted, CampaignStopped, Event
from shared.lifecycle import InvalidTransition, Requested, transition

EVENTS: dict[Requested, type[Event]] = {
    "start": CampaignStarted,
    "pause": CampaignPaused,
    "resume": CampaignResumed,
    "stop": CampaignStopped,
}


async def change(repo: CampaignRepository, raw_id: str, action: Requested) -> dict[str, Any]:
    """Apply `action` or answer 409 changing nothing.

    The campaign row is locked first: a sender's claim holds it in share mode, so `pause` and `stop` return
    only once no claim can still see the campaign active, and none can start after."""
    campaign = await repo.reload(await repo.require(raw_id), lock=True)
    try:
        status = transition(CampaignStatus(campaign.status), action, await repo.anything_sent(campaign))
    except InvalidTransition as error:
        raise conflict(str(error)) from error
    campaign = await repo.change(campaign, {"status": status})
    if action == "stop":
        await repo.cancel_unsent(campaign)
    await repo.announce(EVENTS[action](workspace_id=repo.workspace_id, campaign_id=campaign.id))
    campaign = await repo.reload(campaign)
    return campaign_out(campaign, await steps_of(repo, campaign))


async def resend(repo: MessageRepository, raw_id: str) -> dict[str, Any]:
    """Plan a `failed` message again, like a retry: the scheduler gives it the next free slot from now. A
    completed campaign runs again."""
    message = await repo.require(raw_id)
    try:
        message_states.transition(MessageStatus(message.status), "resend")
    except message_states.InvalidMessageTransition as error:
        raise conflict(f"only a failed message can be resent; this one is {message.status}") from error
    campaign = await repo.campaign_for_update(message)
    if campaign.status == CampaignStatus.STOPPED:
        raise conflict("the campaign is stopped")
    message = await repo.resend(message, utcnow())
    return message_out(message, await repo.lead_email(message))
