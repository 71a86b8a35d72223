"""The declarations of message and campaign transitions: one function applies each table."""

from __future__ import annotations

import pytest

from shared import events
from shared.lifecycle import FINAL, RULES, SENDS, InvalidTransition
from shared.lifecycle import transition as campaign_transition
from shared.message_states import (
    LEAD_GONE,
    TRANSITIONS,
    CampaignStatus,
    InvalidMessageTransition,
    LeadStatus,
    MessageStatus,
    transition,
)


@pytest.mark.parametrize("status", list(MessageStatus))
@pytest.mark.parametrize("name", list(TRANSITIONS))
def test_a_message_transition_applies_only_from_its_declared_statuses(
    name: str, status: MessageStatus
) -> None:
    declared = TRANSITIONS[name]
    if status in declared.sources:
        assert transition(status, name) == (declared.target or status)
    else:
        with pytest.raises(InvalidMessageTransition):
            transition(status, name)


def test_no_transition_leaves_a_final_message_status_but_resend_and_a_later_bounce() -> None:
    """sent, bounced, failed and cancelled are final, except a failed message resent by hand and a sent one
    bounced by a later delivery status notification."""
    moving = {name for name, t in TRANSITIONS.items() if t.target is not None}
    leaving_final = {
        name
        for name in moving
        for status in TRANSITIONS[name].sources
        if status
        in {MessageStatus.SENT, MessageStatus.BOUNCED, MessageStatus.FAILED, MessageStatus.CANCELLED}
    }
    assert leaving_final == {"resend", "dsn_bounced"}


def test_every_transition_a_message_causes_in_its_campaign_is_a_lifecycle_rule() -> None:
    caused = {t.campaign for t in TRANSITIONS.values() if t.campaign is not None}
    assert caused <= set(RULES)
    assert campaign_transition(CampaignStatus.SCHEDULED, "first_send") == CampaignStatus.RUNNING
    assert campaign_transition(CampaignStatus.RUNNING, "complete") == CampaignStatus.COMPLETED
    assert campaign_transition(CampaignStatus.COMPLETED, "reopen") == CampaignStatus.RUNNING
    with pytest.raises(InvalidTransition):
        campaign_transition(CampaignStatus.STOPPED, "reopen")


@pytest.mark.parametrize("status", list(CampaignStatus))
def test_stop_leaves_only_final_campaigns_alone_and_only_sending_ones_pause(status: CampaignStatus) -> None:
    if status in FINAL:
        with pytest.raises(InvalidTransition):
            campaign_transition(status, "stop")
    else:
        assert campaign_transition(status, "stop") == CampaignStatus.STOPPED
    if status in SENDS:
        assert campaign_transition(status, "pause") == CampaignStatus.PAUSED
    else:
        with pytest.raises(InvalidTransition):
            campaign_transition(status, "pause")


def test_a_complaint_is_an_unsubscribe_that_is_also_counted_as_a_complaint() -> None:
    complained, unsubscribed = TRANSITIONS["complained"], TRANSITIONS["unsubscribed"]
    assert complained.lead == LeadStatus.COMPLAINED
    assert LeadStatus.COMPLAINED in LEAD_GONE
    assert (complained.suppress, complained.cancels) == (unsubscribed.suppress, unsubscribed.cancels)
    assert complained.lead_sources == frozenset(LeadStatus) - {LeadStatus.COMPLAINED}
    assert (dict(complained.counters), complained.day) == ({"complained": 1}, "complained")
    assert complained.announce is events.LeadComplained


def test_a_reply_and_a_click_count_per_message_on_their_day() -> None:
    assert (dict(TRANSITIONS["replied"].counters), TRANSITIONS["replied"].day) == ({"replied": 1}, "replied")
    assert (dict(TRANSITIONS["click"].counters), TRANSITIONS["click"].day) == ({"clicked": 1}, "clicked")
