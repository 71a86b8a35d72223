"""Statuses of campaigns, messages and leads, and every message transition, each declared once (SPEC §2.5–2.7,
§7). Pure: no database, no IO.

A transition names the statuses it leaves, the status it reaches and what it causes in the same transaction:
counters, the lead, a suppression, a history row, an outbox event, the cancelling of the lead's other mail and
a campaign transition (`shared/lifecycle.py`). `shared/db/message_store.py` runs each one as SQL written from
this table; no other module writes `messages.status`, the KPI counters or the message history.

What happens when a message bounces: `TRANSITIONS["bounced"]` (at SMTP time) and `TRANSITIONS["dsn_bounced"]`
(a delivery status notification later); when its lead answers or complains: `["replied"]`, `["complained"]`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from shared import events


class CampaignStatus(enum.StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    STOPPED = "stopped"


class MessageStatus(enum.StrEnum):
    PLANNED = "planned"
    DISPATCHED = "dispatched"
    SENDING = "sending"
    SENT = "sent"
    BOUNCED = "bounced"
    FAILED = "failed"
    CANCELLED = "cancelled"


class LeadStatus(enum.StrEnum):
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    REPLIED = "replied"
    COMPLAINED = "complained"


M = MessageStatus
# Not handed to a sender yet: a stop, an unsubscribe or a bounce cancels these, a re-plan moves them.
UNSENT = frozenset({M.PLANNED, M.DISPATCHED})
# Still owed an outcome: a campaign with one of these is not completed, a lead with one cannot be deleted.
UNFINISHED = UNSENT | {M.SENDING}
# An SMTP transaction was completed ("sent a message" for the audience's `exclude_recent_days`).
SMTP_DONE = frozenset({M.SENT, M.BOUNCED})
# Hold their slot on the domain (the throttle's exclusion constraint): every status but cancelled. A tuple in
# declaration order, as the constraint's SQL is written from it.
SLOT_HOLDING = tuple(status for status in M if status != M.CANCELLED)
# The lead will take no more mail of any kind.
LEAD_GONE = frozenset({LeadStatus.UNSUBSCRIBED, LeadStatus.BOUNCED, LeadStatus.COMPLAINED})

ANY = frozenset(M)
Counter = Literal[
    "planned", "cancelled", "sent", "opened", "opened_human", "opens_total", "bounced", "bounced_at_smtp",
    "failed", "unsubscribed", "replied", "clicked", "complained",
]  # fmt: skip
DayCounter = Literal["planned", "sent", "opened", "bounced", "replied", "clicked", "complained"]
CampaignAction = Literal["first_send", "reopen"]


class InvalidMessageTransition(ValueError):
    pass


@dataclass(frozen=True)
class Transition:
    """From `sources` to `target` (None: the status stays, e.g. an open), and its effects."""

    sources: frozenset[MessageStatus]
    target: MessageStatus | None
    counters: Mapping[Counter, int] = field(default_factory=dict)  # added per message
    day: DayCounter | None = None  # the timeline column that gains one on the local day it happens
    lead: LeadStatus | None = None  # the lead's new status
    lead_sources: frozenset[LeadStatus] = frozenset(LeadStatus)  # the lead statuses it changes
    suppress: bool = False  # the lead's address is never mailed again
    history: str | None = None  # the kind of the message_events row it writes
    announce: type[events.Event] | None = None  # the event it writes to the outbox
    cancels: Literal["unsent", "followups"] | None = None  # the lead's other mail it cancels at once
    campaign: CampaignAction | None = None  # the campaign transition it causes (shared/lifecycle.py)
    spends_retry: bool = False  # retry_count + 1: one of the message's tries is used up
    followup: bool = False  # the scheduler plans the follow-up when it hears the announcement


CLAIMED = frozenset({M.SENDING})

TRANSITIONS: dict[str, Transition] = {
    # The scheduler plans a message (a campaign's audience, a follow-up): a new row, on its slot's day.
    "plan": Transition(frozenset(), M.PLANNED, counters={"planned": 1}, day="planned"),
    # No slot is free within the planner's horizon: a new row that failed, saying so, holding no slot.
    "plan_without_slot": Transition(frozenset(), M.FAILED, counters={"planned": 1, "failed": 1}),
    # Its slot has come: a sender is told to send it.
    "dispatch": Transition(frozenset({M.PLANNED}), M.DISPATCHED, announce=events.SendMessage),
    # A sender takes it, while its campaign is one that sends (`shared.lifecycle.SENDS`).
    "claim": Transition(frozenset({M.DISPATCHED}), M.SENDING),
    # Nobody took it by its deadline, or its campaign or sending domain paused: planned again, to get a new
    # slot.
    "release": Transition(frozenset({M.DISPATCHED}), M.PLANNED),
    # Its domain's turn has not come (the sender's throttle): planned again, no try spent.
    "defer": Transition(CLAIMED, M.PLANNED),
    # A new slot (late, resumed, retried; or on another of its campaign's domains, its own paused): its
    # planned count moves to the new slot's day.
    "reslot": Transition(UNSENT, M.PLANNED, day="planned"),
    # ... or none is free within the horizon: failed, saying so (it may finish the campaign).
    "no_slot": Transition(UNSENT, M.FAILED, counters={"failed": 1}),
    # The SMTP transaction's outcomes. The scheduler cancels a bounced lead's other mail when it hears of it.
    "sent": Transition(
        CLAIMED, M.SENT, counters={"sent": 1}, day="sent", history="sent", announce=events.MessageSent,
        campaign="first_send", followup=True,
    ),
    "bounced": Transition(
        CLAIMED, M.BOUNCED, counters={"bounced": 1, "bounced_at_smtp": 1}, day="bounced",
        lead=LeadStatus.BOUNCED, suppress=True, history="bounced", announce=events.MessageBounced,
        campaign="first_send",
    ),
    "failed": Transition(
        CLAIMED, M.FAILED, counters={"failed": 1}, history="failed", announce=events.MessageFailed,
        campaign="first_send",
    ),
    # A temporary failure with tries left: planned again at or after its backoff, retry_count + 1.
    "retry": Transition(
        CLAIMED, M.PLANNED, history="failed", announce=events.MessageFailed, campaign="first_send",
        spends_retry=True,
    ),
    # The recipient's server refused it by policy (5.7.x, a spam block): the sending domain's problem, not the
    # lead's. Planned again after a backoff without spending a try; it counts towards the domain's health.
    "rejected": Transition(CLAIMED, M.PLANNED, history="rejected", campaign="first_send"),
    # The receiving provider asked us to slow down (421, 4.7.x): planned again at its slower pace, no try
    # spent (SPEC §8); the pace itself is the sender's (`shared/db/providers.py`).
    "deferred": Transition(CLAIMED, M.PLANNED, history="deferred", campaign="first_send"),
    # The lead may not receive it any more (found at the claim): cancelled instead of sent.
    "withheld": Transition(CLAIMED, M.CANCELLED, counters={"cancelled": 1}),
    # A sender died mid-transaction (the reconciler): at most once, so failed, never sent again by itself.
    "interrupted": Transition(CLAIMED, M.FAILED, counters={"failed": 1}, campaign="first_send"),
    # A stop, an unsubscribe, a bounce or a reply.
    "cancel": Transition(UNSENT, M.CANCELLED, counters={"cancelled": 1}),
    # A step of a sequence whose condition does not hold when it falls due (`shared.sequences`): cancelled,
    # saying why (`skipped: …`), and the lead's sequence goes on with the next step.
    "skip": Transition(UNSENT, M.CANCELLED, counters={"cancelled": 1}, history="skipped"),
    # A step due after a stop rule of its campaign took hold (a click, an automatic reply, a reply from the
    # lead's company): cancelled, saying why (`stopped: …`), and the lead's sequence ends.
    "stop_sequence": Transition(UNSENT, M.CANCELLED, counters={"cancelled": 1}, history="sequence_stopped"),
    # A 5.x.x delivery status notification after the server accepted the e-mail.
    "dsn_bounced": Transition(
        frozenset({M.SENT}), M.BOUNCED, counters={"bounced": 1}, day="bounced", lead=LeadStatus.BOUNCED,
        suppress=True, history="bounced", announce=events.MessageBounced, cancels="unsent",
    ),
    # By hand, like a retry: it no longer counts as failed; a completed campaign runs again.
    "resend": Transition(
        frozenset({M.FAILED}), M.PLANNED, counters={"failed": -1}, campaign="reopen", spends_retry=True
    ),
    # Tracking, the status stays. Every hit counts in opens_total; `opened` counts a message's first hit (on
    # its local day) and `opened_human` its first hit not from a machine;
    # the first hit is announced.
    "open": Transition(
        frozenset({M.SENT}), None, counters={"opens_total": 1, "opened": 1, "opened_human": 1}, day="opened",
        history="opened", announce=events.MessageOpened,
    ),
    # Every click is history; `clicked` counts a message's first click (on its local day), announced once.
    "click": Transition(
        ANY, None, counters={"clicked": 1}, day="clicked", history="clicked", announce=events.MessageClicked
    ),
    # Returning mail or ESP events that change nothing: a 4.x.x notification, an automatic reply, an ESP's
    # report that the receiving server took the e-mail.
    "soft_bounced": Transition(ANY, None, history="soft_bounced"),
    "auto_replied": Transition(ANY, None, history="auto_replied"),
    "delivered": Transition(ANY, None, history="delivered"),
    # A person answered: `replied` counts a message's first human reply (on its local day); an active lead
    # becomes replied, once, and gets no more follow-ups (no later step of any sequence).
    "replied": Transition(
        ANY, None, counters={"replied": 1}, day="replied", lead=LeadStatus.REPLIED,
        lead_sources=frozenset({LeadStatus.ACTIVE}), history="replied", announce=events.LeadReplied,
        cancels="followups",
    ),
    # The lead reported the message as spam (ARF, a provider's complaint), counted once per lead: like an
    # unsubscribe, and the campaign's complaint rate.
    "complained": Transition(
        ANY, None, counters={"complained": 1}, day="complained", lead=LeadStatus.COMPLAINED,
        lead_sources=frozenset(LeadStatus) - {LeadStatus.COMPLAINED}, suppress=True, history="complained",
        announce=events.LeadComplained, cancels="unsent",
    ),
    # The lead unsubscribed (link, one-click or mailto), counted once per lead.
    "unsubscribed": Transition(
        ANY, None, counters={"unsubscribed": 1}, lead=LeadStatus.UNSUBSCRIBED,
        lead_sources=frozenset(LeadStatus) - {LeadStatus.UNSUBSCRIBED}, suppress=True,
        announce=events.LeadUnsubscribed, cancels="unsent",
    ),
}  # fmt: skip


def transition(current: MessageStatus, name: str) -> MessageStatus:
    """The status after transition `name`, or InvalidMessageTransition (and the store changes nothing)."""
    declared = TRANSITIONS[name]
    if current not in declared.sources:
        raise InvalidMessageTransition(f"cannot {name} a message that is {current.value}")
    return declared.target or current
