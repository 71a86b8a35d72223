"""SQLAlchemy models: PostgreSQL is the source of truth.

Invariants held by the schema itself, not by any one process:
- `messages_domain_throttle`: no two live slots of one sending domain overlap, where a slot spans
  [scheduled_at, slot_ends_at) = one `min_interval_seconds`. Two schedulers, two campaigns or a resend racing
  each other get an exclusion violation instead of a burst.
- `messages_one_followup`: a message has at most one follow-up (the next step of its sequence).
- KPI counters change in the same transaction as the status change that causes them, guarded by that
  status change, so a repeated event never counts twice.
"""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID, ExcludeConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# The statuses live in pure code; importing them from here still works for the routes.
from shared.message_states import SLOT_HOLDING
from shared.message_states import CampaignStatus as CampaignStatus
from shared.message_states import LeadStatus as LeadStatus
from shared.message_states import MessageStatus as MessageStatus
from shared.oauth import AccountState
from shared.planning.zones import WindowMode
from shared.reputation import SENDS, Cause, DomainState
from shared.sequences import Condition


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: DateTime(timezone=True),
        uuid.UUID: UUID(as_uuid=True),
        dict[str, Any]: JSONB,
        list[str]: ARRAY(Text),
    }


def _id() -> Mapped[uuid.UUID]:
    return mapped_column(primary_key=True, default=uuid.uuid4)


def _created() -> Mapped[datetime]:
    return mapped_column(server_default=func.now())


def _counter() -> Mapped[int]:
    return mapped_column(Integer, default=0, server_default=text("0"))


def _workspace() -> Mapped[uuid.UUID]:
    return mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)


def _check_in(column: str, values: type[enum.StrEnum]) -> CheckConstraint:
    allowed = ", ".join(f"'{v.value}'" for v in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=f"{column}_valid")


class Workspace(Base):
    __tablename__ = "workspaces"
    id: Mapped[uuid.UUID] = _id()
    name: Mapped[str] = mapped_column(Text, unique=True)
    created_at: Mapped[datetime] = _created()


class WorkspaceSetting(Base):
    """A workspace's own settings; a workspace without a row has the defaults."""

    __tablename__ = "workspace_settings"
    id: Mapped[uuid.UUID] = _id()
    workspace_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), unique=True
    )
    # Its sending domains' health thresholds (`shared.reputation.Thresholds`): only those it sets.
    health_thresholds: Mapped[dict[str, Any]] = mapped_column(
        default=dict, server_default=text("'{}'::jsonb")
    )


class User(Base):
    __tablename__ = "users"
    __table_args__ = (Index("users_email_key", func.lower(text("email")), unique=True),)
    id: Mapped[uuid.UUID] = _id()
    workspace_id: Mapped[uuid.UUID] = _workspace()
    email: Mapped[str] = mapped_column(Text)
    password_hash: Mapped[str] = mapped_column(Text)
    is_superuser: Mapped[bool] = mapped_column(Boolean, default=False)
    # A deactivated user can neither log in nor use a token issued before (checked on every request).
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_at: Mapped[datetime] = _created()


class LoginFailure(Base):
    """Failed logins per address, for throttling password guessing across every api process. An attempt
    counts here from before its password is checked until it succeeds; rows older than the throttle window
    are deleted by later attempts."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("login_failures_email_at", "email", "at"), Index("login_failures_at", "at"))
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(Text)  # lower-cased
    at: Mapped[datetime] = mapped_column(server_default=func.now())


WARMUP_COLUMNS = ("warmup_start_per_day", "warmup_growth_percent", "warmup_max_per_day", "warmup_start_date")


class SendingDomain(Base):
    __tablename__ = "sending_domains"
    __table_args__ = (
        UniqueConstraint("workspace_id", "domain"),
        CheckConstraint("min_interval_seconds BETWEEN 0 AND 86400", name="min_interval_range"),
        CheckConstraint("smtp_security IN ('none', 'starttls', 'tls')", name="smtp_security_valid"),
        CheckConstraint(
            "(dkim_selector IS NULL) = (dkim_rsa_private_encrypted IS NULL)", name="dkim_keys_complete"
        ),
        _check_in("state", DomainState),
        _check_in("paused_cause", Cause),
        CheckConstraint(
            f"(state = '{DomainState.PAUSED}') = (paused_at IS NOT NULL AND paused_cause IS NOT NULL)",
            name="paused_since",
        ),
        CheckConstraint(
            " AND ".join(f"({c} IS NULL) = (warmup_start_per_day IS NULL)" for c in WARMUP_COLUMNS),
            name="warmup_complete",
        ),
        CheckConstraint(
            "warmup_start_per_day >= 1 AND warmup_max_per_day >= warmup_start_per_day"
            " AND warmup_growth_percent BETWEEN 0 AND 1000",
            name="warmup_valid",
        ),
    )
    id: Mapped[uuid.UUID] = _id()
    workspace_id: Mapped[uuid.UUID] = _workspace()
    domain: Mapped[str] = mapped_column(Text)
    from_email: Mapped[str] = mapped_column(Text)
    from_name: Mapped[str] = mapped_column(Text, default="")
    smtp_host: Mapped[str] = mapped_column(Text)
    smtp_port: Mapped[int] = mapped_column(Integer)
    smtp_username: Mapped[str | None] = mapped_column(Text)
    smtp_password_encrypted: Mapped[str | None] = mapped_column(Text)
    smtp_security: Mapped[str] = mapped_column(String(16), default="starttls")
    min_interval_seconds: Mapped[int] = mapped_column(Integer)
    daily_cap: Mapped[int | None] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # When a sender last began an SMTP transaction for this domain: the sender's own throttle guard.
    last_send_at: Mapped[datetime | None]
    # DKIM (`shared.dkim`): the selector and private keys, encrypted like the SMTP password (none: unsigned).
    dkim_selector: Mapped[str | None] = mapped_column(Text)
    dkim_rsa_private_encrypted: Mapped[str | None] = mapped_column(Text)
    dkim_ed25519_private_encrypted: Mapped[str | None] = mapped_column(Text)
    dkim_records: Mapped[list[dict[str, str]] | None] = mapped_column(JSONB)  # [{name, value}] to publish
    # Its reputation (`shared.reputation`, written by `shared.db.domain_health`): a paused domain sends
    # nothing but, after a transient cause's cool-down, its one probe message.
    state: Mapped[str] = mapped_column(String(16), default=DomainState.ACTIVE, server_default="active")
    paused_cause: Mapped[str | None] = mapped_column(String(32))
    paused_reason: Mapped[str | None] = mapped_column(Text)
    paused_at: Mapped[datetime | None]
    probe_message_id: Mapped[uuid.UUID | None]
    # The thresholds this domain sets for itself (`shared.reputation.Thresholds`), over its workspace's.
    health_thresholds: Mapped[dict[str, Any]] = mapped_column(
        default=dict, server_default=text("'{}'::jsonb")
    )
    # Its warm-up plan (`shared.planning.warmup`): all four or none.
    warmup_start_per_day: Mapped[int | None] = mapped_column(Integer)
    warmup_growth_percent: Mapped[int | None] = mapped_column(Integer)
    warmup_max_per_day: Mapped[int | None] = mapped_column(Integer)
    warmup_start_date: Mapped[date | None] = mapped_column(Date)
    # Its IMAP mailbox: the api reads it joined, under the workspace filter; never loaded by accident.
    mailbox: Mapped[MailboxAccount | None] = relationship(lazy="raise", viewonly=True)
    # Its OAuth2 grant, for SMTP and IMAP alike (`shared.oauth_tokens`): read joined like the mailbox.
    oauth: Mapped[OAuthAccount | None] = relationship(lazy="raise", viewonly=True)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class Lead(Base):
    __tablename__ = "leads"
    __table_args__ = (
        Index("leads_workspace_email_key", "workspace_id", func.lower(text("email")), unique=True),
        _check_in("status", LeadStatus),
    )
    id: Mapped[uuid.UUID] = _id()
    workspace_id: Mapped[uuid.UUID] = _workspace()
    email: Mapped[str] = mapped_column(Text)
    first_name: Mapped[str] = mapped_column(Text, default="")
    last_name: Mapped[str] = mapped_column(Text, default="")
    company: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[str]] = mapped_column(default=list)
    fields: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default=LeadStatus.ACTIVE)
    # Where the lead works, for campaigns in its own working hours (`shared.planning.zones`): an IANA zone
    # and an ISO 3166 alpha-2 country, each optional.
    timezone: Mapped[str | None] = mapped_column(Text)
    country: Mapped[str | None] = mapped_column(String(2))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class LeadReport(Base):
    """The lead's report (a PDF), attached to follow-ups of campaigns that ask for it."""

    __tablename__ = "lead_reports"
    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), primary_key=True)
    filename: Mapped[str] = mapped_column(Text)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    uploaded_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Template(Base):
    __tablename__ = "templates"
    id: Mapped[uuid.UUID] = _id()
    workspace_id: Mapped[uuid.UUID] = _workspace()
    name: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str] = mapped_column(Text)
    body_text: Mapped[str | None] = mapped_column(Text)
    followup_subject: Mapped[str | None] = mapped_column(Text)
    followup_body_html: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class Suppression(Base):
    __tablename__ = "suppressions"
    __table_args__ = (
        CheckConstraint("(email IS NULL) <> (domain IS NULL)", name="exactly_one_target"),
        Index("suppressions_email_key", "workspace_id", func.lower(text("email")), unique=True),
        Index("suppressions_domain_key", "workspace_id", func.lower(text("domain")), unique=True),
    )
    id: Mapped[uuid.UUID] = _id()
    workspace_id: Mapped[uuid.UUID] = _workspace()
    email: Mapped[str | None] = mapped_column(Text)
    domain: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text, default="manual")
    created_at: Mapped[datetime] = _created()


class Campaign(Base):
    __tablename__ = "campaigns"
    __table_args__ = (
        _check_in("status", CampaignStatus),
        _check_in("window_mode", WindowMode),
        Index("campaigns_name_trgm", "name", postgresql_using="gin", postgresql_ops={"name": "gin_trgm_ops"}),
        Index("campaigns_listing", "workspace_id", "status", text("created_at DESC"), "id"),
    )
    id: Mapped[uuid.UUID] = _id()
    workspace_id: Mapped[uuid.UUID] = _workspace()
    name: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    template_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("templates.id"))
    track_opens: Mapped[bool] = mapped_column(Boolean, default=True)
    track_clicks: Mapped[bool] = mapped_column(Boolean, default=False)
    # When one of its domains is paused, its unsent initial messages move to its domains still active.
    reassign_on_domain_pause: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    # Stop rules of its sequences (`shared.sequences`), beside the ones that always hold.
    stop_on_auto_reply: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    stop_on_click: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    stop_on_company_reply: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    # Its steps were edited while leads may have finished the steps it had: the scheduler plans what they owe.
    steps_edited_at: Mapped[datetime | None]
    start_at: Mapped[datetime | None]
    window: Mapped[dict[str, Any]] = mapped_column()
    # Whose working hours its messages go in: the window's, or each lead's (`shared.planning.zones`).
    window_mode: Mapped[str] = mapped_column(
        String(16), default=WindowMode.CAMPAIGN, server_default=text("'campaign'")
    )
    domains: Mapped[list[str]] = mapped_column()
    audience_count: Mapped[int] = mapped_column(Integer, default=0)
    audience_excluded: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The W3C trace context it was planned in: each `SendMessage` for it joins that trace (shared/tracing.py).
    trace_context: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class CampaignStep(Base):
    """A step of a campaign's sequence after its first e-mail (position 1, 2 …), planned when the previous
    step of the lead is sent (`shared.sequences`)."""

    __tablename__ = "campaign_steps"
    __table_args__ = (
        CheckConstraint("position >= 1", name="step_position_positive"),
        _check_in("condition", Condition),
        Index("campaign_steps_template", "template_id"),
    )
    campaign_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    template_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("templates.id"))
    delay_days: Mapped[int] = mapped_column(Integer)
    attach_report: Mapped[bool] = mapped_column(Boolean)
    condition: Mapped[str] = mapped_column(String(16))


class CampaignLead(Base):
    """The audience, resolved once at creation, in round-robin order."""

    __tablename__ = "campaign_leads"
    __table_args__ = (UniqueConstraint("campaign_id", "lead_id"),)
    campaign_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        _check_in("status", MessageStatus),
        ExcludeConstraint(
            (text("sending_domain_id"), "="),
            (text("tstzrange(scheduled_at, slot_ends_at)"), "&&"),
            name="messages_domain_throttle",
            using="gist",
            where=text("status IN (" + ", ".join(f"'{s}'" for s in SLOT_HOLDING) + ")"),
        ),
        Index("messages_due", "scheduled_at", postgresql_where=text("status = 'planned'")),
        Index("messages_in_flight", "status", "claimed_at", postgresql_where=text("status = 'sending'")),
        Index("messages_campaign_status", "campaign_id", "status"),
        Index("messages_lead", "lead_id"),
        # The few answered ones, for a sequence's stop rule "a reply from the lead's company".
        Index("messages_replied", "campaign_id", postgresql_where=text("replied_at IS NOT NULL")),
        # One follow-up per original; not partial, so it also serves the self-referencing foreign key.
        Index("messages_one_followup", "parent_message_id", unique=True),
        Index("messages_smtp_message_id", "smtp_message_id", unique=True),
    )
    id: Mapped[uuid.UUID] = _id()
    workspace_id: Mapped[uuid.UUID] = _workspace()
    campaign_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    sending_domain_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sending_domains.id"))
    domain_used: Mapped[str] = mapped_column(Text)
    scheduled_at: Mapped[datetime]
    slot_ends_at: Mapped[datetime]
    # The earliest moment this message may go (start_at, follow-up due time, retry backoff): every re-plan
    # takes the domain's earliest free slot at or after max(now, not_before).
    not_before: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16), default=MessageStatus.PLANNED)
    # 0: the campaign's first e-mail; n: step n of its sequence (`campaign_steps.position`).
    step: Mapped[int] = mapped_column(SmallInteger, default=0, server_default=text("0"))
    is_followup: Mapped[bool] = mapped_column(Boolean, Computed("step > 0", persisted=True))
    # The message of the previous step (its thread).
    parent_message_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("messages.id"))
    retry_count: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    smtp_message_id: Mapped[str | None] = mapped_column(Text)
    claimed_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    opened_at: Mapped[datetime | None]
    human_opened_at: Mapped[datetime | None]
    replied_at: Mapped[datetime | None]  # its first human reply
    clicked_at: Mapped[datetime | None]  # its first click
    created_at: Mapped[datetime] = _created()


class MessageEventRow(Base):
    """Every outcome and tracking hit of a message, as it happened (audit trail and recomputation)."""

    __tablename__ = "message_events"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    message_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    campaign_id: Mapped[uuid.UUID] = mapped_column(index=True)
    kind: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(server_default=func.now())
    is_machine: Mapped[bool] = mapped_column(Boolean, default=False)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class CampaignKpi(Base):
    __tablename__ = "campaign_kpis"
    campaign_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True, default=0)  # see shared/db/kpi.py
    planned: Mapped[int] = _counter()
    cancelled: Mapped[int] = _counter()
    sent: Mapped[int] = _counter()
    opened: Mapped[int] = _counter()
    opened_human: Mapped[int] = _counter()
    opens_total: Mapped[int] = _counter()
    bounced: Mapped[int] = _counter()
    bounced_at_smtp: Mapped[int] = _counter()
    failed: Mapped[int] = _counter()
    unsubscribed: Mapped[int] = _counter()
    replied: Mapped[int] = _counter()
    clicked: Mapped[int] = _counter()
    complained: Mapped[int] = _counter()
    first_sent_at: Mapped[datetime | None]
    last_sent_at: Mapped[datetime | None]


class CampaignStepKpi(Base):
    """Each step's figures (step 0: the first e-mail), kept by triggers on `messages` (migration 0016) in the
    campaign counters' shards."""

    __tablename__ = "campaign_step_kpis"
    campaign_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    step: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    planned: Mapped[int] = _counter()
    sent: Mapped[int] = _counter()
    opened: Mapped[int] = _counter()
    opened_human: Mapped[int] = _counter()
    replied: Mapped[int] = _counter()
    clicked: Mapped[int] = _counter()
    bounced: Mapped[int] = _counter()
    cancelled: Mapped[int] = _counter()
    skipped: Mapped[int] = _counter()


class CampaignKpiDay(Base):
    """Timeline counters per local calendar day of the campaign window."""

    __tablename__ = "campaign_kpi_days"
    campaign_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True, default=0)
    planned: Mapped[int] = _counter()
    sent: Mapped[int] = _counter()
    opened: Mapped[int] = _counter()
    bounced: Mapped[int] = _counter()
    replied: Mapped[int] = _counter()
    clicked: Mapped[int] = _counter()
    complained: Mapped[int] = _counter()


class OutboxRow(Base):
    """Events written in the same transaction as the change they announce; a relay publishes them."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    routing_key: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column()
    # The W3C trace context of the transaction that wrote it (shared/tracing.py); null while tracing is off.
    trace_context: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    created_at: Mapped[datetime] = _created()


class DomainHealth(Base):
    """A sending domain's running totals since it was created, and its failures in a row: written with every
    signal (`shared.db.domain_health`), in the transaction of the outcome it comes from."""

    __tablename__ = "domain_health"
    sending_domain_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("sending_domains.id", ondelete="CASCADE"), primary_key=True
    )
    signals: Mapped[int] = mapped_column(BigInteger, default=0)  # the last `domain_signals.seq`
    sends: Mapped[int] = mapped_column(BigInteger, default=0)
    hard_bounces: Mapped[int] = mapped_column(BigInteger, default=0)
    complaints: Mapped[int] = mapped_column(BigInteger, default=0)
    policy_rejections: Mapped[int] = mapped_column(BigInteger, default=0)
    consecutive_connection_failures: Mapped[int] = _counter()
    consecutive_authentication_failures: Mapped[int] = _counter()
    consecutive_deferrals: Mapped[int] = _counter()
    last_signal_at: Mapped[datetime | None]  # the latest time logged: a signal is never logged before it
    counting_since: Mapped[datetime | None]  # its last resume: the figures count from then on


class DomainSignal(Base):
    """Each signal that changed a domain's totals, with the totals as they stood before it: the figures of a
    window are the totals now minus those of the window's first row. Rows outside every window are pruned."""

    __tablename__ = "domain_signals"
    __table_args__ = (
        Index("domain_signals_at", "sending_domain_id", "at", "seq"),
        Index(
            "domain_signals_sends",
            "sending_domain_id",
            "sends",
            postgresql_where=text("signal IN (" + ", ".join(f"'{s}'" for s in sorted(SENDS)) + ")"),
        ),
    )
    sending_domain_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("sending_domains.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[datetime]
    signal: Mapped[str] = mapped_column(String(32))
    sends: Mapped[int] = mapped_column(BigInteger)
    hard_bounces: Mapped[int] = mapped_column(BigInteger)
    complaints: Mapped[int] = mapped_column(BigInteger)
    policy_rejections: Mapped[int] = mapped_column(BigInteger)


class MailboxAccount(Base):
    """The IMAP mailbox of a sending domain, where its replies, bounces and complaints come back. Written by
    `shared.db.mailboxes`; the tracker's mailbox reader keeps `failures`, `last_error` and the rest."""

    __tablename__ = "mailbox_accounts"
    __table_args__ = (CheckConstraint("security IN ('none', 'starttls', 'tls')", name="imap_security_valid"),)
    id: Mapped[uuid.UUID] = _id()
    workspace_id: Mapped[uuid.UUID] = _workspace()
    sending_domain_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("sending_domains.id", ondelete="CASCADE"), unique=True
    )
    host: Mapped[str] = mapped_column(Text)
    port: Mapped[int] = mapped_column(Integer)
    security: Mapped[str] = mapped_column(String(16), default="tls")
    username: Mapped[str] = mapped_column(Text)
    # shared.crypto, like the SMTP password; none when the mailbox logs in with its domain's OAuth2 grant
    password_encrypted: Mapped[str | None] = mapped_column(Text)
    folders: Mapped[list[str]] = mapped_column(server_default=text("'{INBOX}'"))
    reports_folder: Mapped[str | None] = mapped_column(Text)  # where DSNs and complaints are moved, if set
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    failures: Mapped[int] = _counter()  # connection or login failures in a row
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
    idle_supported: Mapped[bool | None] = mapped_column(Boolean)  # as the server last said
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class OAuthAccount(Base):
    """A sending domain's OAuth2 grant (`shared.oauth`): its SMTP and IMAP log in with its access token.
    Both tokens are encrypted like the SMTP password; the refresh token is never shown. Its row is the lock
    under which one process at a time refreshes it (`shared.db.oauth_accounts`)."""

    __tablename__ = "oauth_accounts"
    __table_args__ = (
        CheckConstraint("provider IN ('google', 'microsoft', 'oidc')", name="oauth_provider_valid"),
        CheckConstraint("state IN ('active', 'needs_reauth')", name="oauth_state_valid"),
    )
    id: Mapped[uuid.UUID] = _id()
    workspace_id: Mapped[uuid.UUID] = _workspace()
    sending_domain_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("sending_domains.id", ondelete="CASCADE"), unique=True
    )
    provider: Mapped[str] = mapped_column(String(16))
    email: Mapped[str] = mapped_column(Text)
    refresh_token_encrypted: Mapped[str] = mapped_column(Text)
    access_token_encrypted: Mapped[str | None] = mapped_column(Text)
    access_expires_at: Mapped[datetime | None]
    state: Mapped[str] = mapped_column(String(16), default=AccountState.ACTIVE, server_default="active")
    last_error: Mapped[str | None] = mapped_column(Text)
    refreshed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class OAuthFlow(Base):
    """A connection under way: the `state` it was started with (hashed) and its PKCE verifier (encrypted),
    until the callback takes it or it expires."""

    __tablename__ = "oauth_flows"
    id: Mapped[uuid.UUID] = _id()
    workspace_id: Mapped[uuid.UUID] = _workspace()
    sending_domain_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sending_domains.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(16))
    state_hash: Mapped[str] = mapped_column(String(64), unique=True)
    verifier_encrypted: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime] = _created()


class MailboxLease(Base):
    """Which reader process holds an account, until when: one reader per mailbox across processes."""

    __tablename__ = "mailbox_leases"
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("mailbox_accounts.id", ondelete="CASCADE"), primary_key=True
    )
    holder: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime]


class MailboxReader(Base):
    """The reader processes alive (each renews `seen_at`): the accounts are shared out among them."""

    __tablename__ = "mailbox_readers"
    holder: Mapped[str] = mapped_column(Text, primary_key=True)
    seen_at: Mapped[datetime]


class MailboxCheckpoint(Base):
    """How far a folder is read: its UIDVALIDITY and the last UID processed (a UID means something only with
    its UIDVALIDITY)."""

    __tablename__ = "mailbox_checkpoints"
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("mailbox_accounts.id", ondelete="CASCADE"), primary_key=True
    )
    folder: Mapped[str] = mapped_column(Text, primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class MailboxMail(Base):
    """Every mail a reader processed, written in the transaction of what it caused: a mail is matched at most
    once, by its place (folder, UIDVALIDITY, UID) and by its key (its Message-ID, or a digest of its bytes),
    which stays the same when UIDVALIDITY changes or the mail is in two folders."""

    __tablename__ = "mailbox_mails"
    __table_args__ = (
        UniqueConstraint("account_id", "folder", "uidvalidity", "uid", name="mailbox_mails_place_key"),
        UniqueConstraint("account_id", "mail_key", name="mailbox_mails_mail_key"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("mailbox_accounts.id", ondelete="CASCADE"))
    folder: Mapped[str] = mapped_column(Text)
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    mail_key: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(32))
    message_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    reason: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[datetime] = _created()


ESP_PROVIDERS = "provider IN ('ses', 'postmark', 'sendgrid', 'mailgun')"  # shared.esp.PROVIDERS


class EspWebhook(Base):
    """A workspace's event webhook of one ESP: what the tracker checks its requests with. `token` names it in
    the tracker's URL (`/webhooks/esp/<provider>/<token>`); `secret_encrypted` (Postmark's password,
    Mailgun's signing key) is encrypted like an SMTP password (`shared.crypto`) and never shown."""

    __tablename__ = "esp_webhooks"
    __table_args__ = (
        UniqueConstraint("workspace_id", "provider", name="esp_webhooks_provider_key"),
        CheckConstraint(ESP_PROVIDERS, name="esp_provider_valid"),
    )
    id: Mapped[uuid.UUID] = _id()
    workspace_id: Mapped[uuid.UUID] = _workspace()
    provider: Mapped[str] = mapped_column(String(16))
    token: Mapped[str] = mapped_column(Text, unique=True)
    topic_arns: Mapped[list[str]] = mapped_column(server_default=text("'{}'"))  # SES: the SNS topics taken
    username: Mapped[str | None] = mapped_column(Text)  # Postmark: the basic-auth user of its webhook URL
    secret_encrypted: Mapped[str | None] = mapped_column(Text)
    public_key: Mapped[str | None] = mapped_column(Text)  # SendGrid: its verification key, as it shows it
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class EspEventRow(Base):
    """Every ESP event that had an effect, by the provider's own event id, written in the transaction of that
    effect: an event delivered again (ESPs deliver at least once) counts once."""

    __tablename__ = "esp_events"
    __table_args__ = (
        CheckConstraint(ESP_PROVIDERS, name="esp_provider_valid"),
        Index("esp_events_message", "message_id"),  # a message deleted with its lead sets it null
        Index("esp_events_received", "received_at"),  # kept for a while (shared/db/retention.py)
    )
    workspace_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    provider: Mapped[str] = mapped_column(String(16), primary_key=True)
    event_id: Mapped[str] = mapped_column(Text, primary_key=True)
    message_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    outcome: Mapped[str] = mapped_column(String(32))
    received_at: Mapped[datetime] = _created()


class RecipientProvider(Base):
    """The receiving provider of a recipient domain: the registrable domain of its most preferred MX host
    (`shared.providers`), cached until its TTL runs out. Not a workspace's row: DNS says the same to everyone.
    `wanted` rows are resolved by the scheduler when they expire; until a domain is resolved it stands for
    itself."""

    __tablename__ = "recipient_providers"
    __table_args__ = (Index("recipient_providers_due", "expires_at", postgresql_where=text("wanted")),)
    domain: Mapped[str] = mapped_column(Text, primary_key=True)  # lower-cased, as in the lead's address
    provider: Mapped[str | None] = mapped_column(Text)
    wanted: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    expires_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)  # why the last look-up failed


class ProviderPace(Base):
    """A sending domain's slower pace towards one receiving provider after it deferred our mail (421, 4.7.x):
    `interval_seconds` from `slowed_at`, halving after each quiet period (`shared.planning.pacing`).
    `last_send_at`: the last attempt towards the provider while slowed, what the sender's turn counts from."""

    __tablename__ = "provider_paces"
    __table_args__ = (CheckConstraint("interval_seconds > 0", name="pace_interval_positive"),)
    sending_domain_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("sending_domains.id", ondelete="CASCADE"), primary_key=True
    )
    provider: Mapped[str] = mapped_column(Text, primary_key=True)
    workspace_id: Mapped[uuid.UUID] = _workspace()
    interval_seconds: Mapped[int] = mapped_column(Integer)
    slowed_at: Mapped[datetime]
    last_send_at: Mapped[datetime | None]
    deferrals: Mapped[int] = _counter()


class WebhookEndpoint(Base):
    """Where a workspace wants its events posted (`shared.webhooks`). `secret_encrypted` is encrypted like an
    SMTP password and never shown. A worker holds `lease_token` until `leased_until` while it sends to it,
    so that one endpoint's deliveries go out one at a time, in order."""

    __tablename__ = "webhook_endpoints"
    id: Mapped[uuid.UUID] = _id()
    workspace_id: Mapped[uuid.UUID] = _workspace()
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    event_types: Mapped[list[str]] = mapped_column()
    secret_encrypted: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    disabled_at: Mapped[datetime | None] = mapped_column()
    lease_token: Mapped[uuid.UUID | None] = mapped_column()
    leased_until: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class WebhookDelivery(Base):
    """One event for one endpoint, written by the outbox's trigger (migration 0013) in the event's own
    transaction. Sent in `seq` order per endpoint; `failures` in a row since `first_attempt_at` decide the
    next try (`shared.webhooks.RetryRules`)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id", name="webhook_deliveries_event_key"),
        # Finished ones are kept for a while (shared/db/retention.py).
        Index("webhook_deliveries_finished", "created_at", postgresql_where=text("status <> 'pending'")),
    )
    id: Mapped[uuid.UUID] = _id()
    seq: Mapped[int] = mapped_column(BigInteger, Identity())
    endpoint_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    event_id: Mapped[uuid.UUID] = mapped_column()
    event_type: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    attempts: Mapped[int] = _counter()
    failures: Mapped[int] = _counter()
    next_attempt_at: Mapped[datetime] = mapped_column(server_default=func.now())
    first_attempt_at: Mapped[datetime | None] = mapped_column()
    delivered_at: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()


class WebhookAttempt(Base):
    """One request to an endpoint: its status code (null: no answer), how long it took, what went wrong."""

    __tablename__ = "webhook_attempts"
    id: Mapped[uuid.UUID] = _id()
    delivery_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"))
    endpoint_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    attempted_at: Mapped[datetime] = _created()
    status_code: Mapped[int | None] = mapped_column(Integer)
    succeeded: Mapped[bool] = mapped_column(Boolean)
    duration_ms: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    response: Mapped[str | None] = mapped_column(Text)
