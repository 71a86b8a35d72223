"""Every message between services, defined once (SPEC §5).

Commands are imperative (`SendMessage`), events past tense. Each carries `event_id` for idempotency,
`occurred_at` and `workspace_id`; its routing key is part of the type. New fields must be optional.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.clock import utcnow


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    routing_key: ClassVar[str]

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    occurred_at: datetime = Field(default_factory=utcnow)
    workspace_id: uuid.UUID


class CampaignEvent(Event):
    campaign_id: uuid.UUID


class CampaignStarted(CampaignEvent):
    """A campaign was started: its messages are to be planned from max(now, `start_at`)."""

    routing_key: ClassVar[str] = "campaign.started"


class CampaignPaused(CampaignEvent):
    """A campaign was paused: no new SMTP transaction of it starts until it is resumed."""

    routing_key: ClassVar[str] = "campaign.paused"


class CampaignResumed(CampaignEvent):
    """A paused campaign was resumed: its unsent messages are to be planned again from now."""

    routing_key: ClassVar[str] = "campaign.resumed"


class CampaignStopped(CampaignEvent):
    """A campaign was stopped for good: its unsent messages were cancelled."""

    routing_key: ClassVar[str] = "campaign.stopped"


class CampaignCompleted(CampaignEvent):
    """A campaign has nothing left to send: every message (follow-ups included) is sent, bounced, failed or
    cancelled."""

    routing_key: ClassVar[str] = "campaign.completed"


class MessageEvent(Event):
    message_id: uuid.UUID
    campaign_id: uuid.UUID
    lead_id: uuid.UUID | None = None


class SendMessage(MessageEvent):
    """Command: deliver this message now. Its slot is `scheduled_at`; it is void after `deadline`."""

    routing_key: ClassVar[str] = "message.send"
    scheduled_at: datetime
    deadline: datetime


class MessageSent(MessageEvent):
    """The mail server accepted the message (`smtp_message_id` is its Message-ID)."""

    routing_key: ClassVar[str] = "message.sent"
    sent_at: datetime
    smtp_message_id: str


class MessageBounced(MessageEvent):
    """A hard bounce (a 5xx at SMTP time, or a DSN later): the lead is bounced and suppressed."""

    routing_key: ClassVar[str] = "message.bounced"
    reason: str
    smtp_code: int | None = None
    enhanced_code: str | None = None


class MessageFailed(MessageEvent):
    """A temporary failure (4xx, connection, timeout). `retry_at` is set when a retry was planned."""

    routing_key: ClassVar[str] = "message.failed"
    reason: str
    smtp_code: int | None = None
    enhanced_code: str | None = None
    retry_at: datetime | None = None


class MessageOpened(MessageEvent):
    """The message's tracking pixel was fetched for the first time (`is_machine`: by a mail client's or
    scanner's prefetch, or too soon after sending to be a person)."""

    routing_key: ClassVar[str] = "message.opened"
    is_machine: bool = False


class MessageClicked(MessageEvent):
    """A tracked link of the message was followed for the first time (`url`: where it led)."""

    routing_key: ClassVar[str] = "message.clicked"
    url: str | None = None


class LeadUnsubscribed(Event):
    """The lead unsubscribed (the link, the one-click POST or the List-Unsubscribe mailto): it gets no more
    mail."""

    routing_key: ClassVar[str] = "lead.unsubscribed"
    lead_id: uuid.UUID
    message_id: uuid.UUID | None = None


class LeadReplied(Event):
    """A person answered `message_id`: the lead gets no more follow-ups. `source`: where the reply came in,
    `inbound` (`POST /inbound/replies`) or `mailbox` (the sending mailbox, read over IMAP)."""

    routing_key: ClassVar[str] = "lead.replied"
    lead_id: uuid.UUID
    message_id: uuid.UUID
    source: Literal["inbound", "mailbox"] = "inbound"


class LeadComplained(Event):
    """The lead reported `message_id` as spam (an ARF feedback report, a provider's complaint): the lead is
    suppressed and gets no more mail."""

    routing_key: ClassVar[str] = "lead.complained"
    lead_id: uuid.UUID
    message_id: uuid.UUID | None = None


class DomainEvent(Event):
    sending_domain_id: uuid.UUID
    domain: str


class DomainPaused(DomainEvent):
    """The sending domain's health crossed a threshold (`shared.reputation`): it sends nothing until resumed.
    `cause` is one of `shared.reputation.Cause`; `reason` says it to people."""

    routing_key: ClassVar[str] = "domain.paused"
    cause: str
    reason: str
    paused_at: datetime


class DomainResumed(DomainEvent):
    """The domain sends again: everything it holds is planned again from now. `automatic`: a probe send
    succeeded after a transient cause's cool-down; otherwise a person resumed it."""

    routing_key: ClassVar[str] = "domain.resumed"
    automatic: bool = False


ALL_EVENTS: tuple[type[Event], ...] = (
    CampaignStarted,
    CampaignPaused,
    CampaignResumed,
    CampaignStopped,
    CampaignCompleted,
    SendMessage,
    MessageSent,
    MessageBounced,
    MessageFailed,
    MessageOpened,
    MessageClicked,
    LeadUnsubscribed,
    LeadReplied,
    LeadComplained,
    DomainPaused,
    DomainResumed,
)
