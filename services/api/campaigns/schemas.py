"""Bodies of the campaign routes: the wizard, the detail with its KPIs, dry-runs and messages."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from services.api.kit.schemas import DomainName, Id, Moment, Strict, Tag
from shared.message_states import CampaignStatus, MessageStatus
from shared.planning.window import DEFAULT_WINDOW, is_known_country, is_known_timezone
from shared.planning.zones import WindowMode
from shared.sequences import MAX_STEPS, Condition

MAX_STATIC_AUDIENCE = 200_000  # lead ids in one wizard payload; a larger audience is chosen by tags
HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")
FOLLOWUP_DAYS = 3
DEFAULT = DEFAULT_WINDOW.to_dict()  # stored form: what a field left out of `WindowIn` takes


class WindowIn(Strict):
    timezone: str = Field(DEFAULT["timezone"], max_length=64)
    days: list[Annotated[int, Field(ge=0, le=6)]] = Field(
        default_factory=lambda: list(DEFAULT["days"]), min_length=1, max_length=7
    )  # 0 is Monday, 6 Sunday
    start: str = Field(DEFAULT["start"], max_length=5)
    end: str = Field(DEFAULT["end"], max_length=5)
    holidays: str | None = Field(DEFAULT["holidays"], max_length=8)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        if not is_known_timezone(value):
            raise ValueError(f"unknown timezone {value!r}")
        return value

    @field_validator("days")
    @classmethod
    def _days(cls, value: list[int]) -> list[int]:
        return sorted(set(value))

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not HHMM.match(value):
            raise ValueError("times are HH:MM (end may be 24:00)")
        return value

    @field_validator("holidays")
    @classmethod
    def _holidays(cls, value: str | None) -> str | None:
        if value is not None and not is_known_country(value):
            raise ValueError(f"unknown holiday calendar {value!r}")
        return value

    @model_validator(mode="after")
    def _order(self) -> WindowIn:
        if self.start == "24:00" or (self.end != "24:00" and self.end <= self.start):
            raise ValueError("window start must be before its end")
        return self


class AudienceIn(Strict):
    mode: Literal["static", "tags"] = "static"
    lead_ids: list[Id] = Field(default_factory=list, max_length=MAX_STATIC_AUDIENCE)
    tags: list[Tag] = Field(default_factory=list, max_length=100)
    exclude_suppressed: bool = True
    exclude_recent_days: int | None = Field(None, ge=0, le=3650)
    one_per_domain: bool = False


class ScheduleIn(Strict):
    start_mode: Literal["now", "at", "draft"] = "now"
    start_at: Moment | None = None
    window: WindowIn = Field(default_factory=WindowIn)
    # `recipient`: each lead's messages in the window's days and hours in the lead's own zone (its
    # `timezone`, else its country's where that has one clock), skipping its country's public holidays; a
    # lead without a known zone gets the window as it is. Daily caps and the timeline keep the window's days.
    window_mode: WindowMode = WindowMode.CAMPAIGN

    @model_validator(mode="after")
    def _start_at(self) -> ScheduleIn:
        if self.start_mode == "at" and self.start_at is None:
            raise ValueError("start_at is required when start_mode is 'at'")
        return self


class FollowupIn(Strict):
    """The wizard's follow-up as it was before sequences: one step, with the campaign's template."""

    enabled: bool = False
    days: int = Field(FOLLOWUP_DAYS, ge=1, le=30)
    attach_report: bool = False


class StepIn(Strict):
    """A step of the sequence after the first e-mail. Its subject is its template's follow-up subject, else
    `Re: <the campaign's subject>`; its body the template's follow-up body, else its body."""

    template_id: Id
    delay_days: int = Field(ge=1, le=365)  # calendar days after the previous step, same local time
    attach_report: bool = False
    condition: Condition = Condition.ALWAYS  # checked when the step falls due


class StopRulesIn(Strict):
    """Optional stop rules; a reply, an unsubscribe, a bounce or a complaint always ends a lead's sequence."""

    on_auto_reply: bool = False
    on_click: bool = False
    on_company_reply: bool = False  # a reply from anyone at the lead's e-mail domain in this campaign


class StepsIn(Strict):
    steps: list[StepIn] = Field(max_length=MAX_STEPS)


class TrackingIn(Strict):
    opens: bool = True
    clicks: bool = False


class CampaignIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    template_id: Id
    audience: AudienceIn
    schedule: ScheduleIn = Field(default_factory=ScheduleIn)
    domains: list[DomainName] = Field(min_length=1, max_length=500)
    followup: FollowupIn = Field(default_factory=FollowupIn)
    # The sequence after the first e-mail; an enabled `followup` is one step of the campaign's template.
    steps: list[StepIn] | None = Field(None, max_length=MAX_STEPS)
    stop_rules: StopRulesIn = Field(default_factory=StopRulesIn)
    tracking: TrackingIn = Field(default_factory=TrackingIn)
    # When one of its domains pauses (its health), move its unsent initial messages to its active domains;
    # otherwise they wait for that domain. Later steps always stay on the domain of their thread.
    reassign_on_domain_pause: bool = False

    @model_validator(mode="after")
    def _one_sequence(self) -> CampaignIn:
        if self.steps is not None and self.followup.enabled:
            raise ValueError("give either steps or an enabled followup, not both")
        return self

    @property
    def sequence(self) -> list[StepIn]:
        """The steps, the enabled `followup` being one."""
        if self.steps is not None:
            return self.steps
        if not self.followup.enabled:
            return []
        followup = self.followup
        return [
            StepIn(
                template_id=self.template_id, delay_days=followup.days, attach_report=followup.attach_report
            )
        ]


class KpisOut(BaseModel):
    total_planned: int
    total_cancelled: int
    total_sent: int
    total_opened: int
    total_opened_human: int
    open_rate: float
    open_rate_human: float
    total_bounced: int
    bounce_rate: float
    total_failed: int
    total_unsubscribed: int
    total_replied: int  # human replies; automatic ones change nothing
    reply_rate: float  # replied ÷ sent
    total_clicked: int  # messages with at least one click
    click_rate: float  # clicked ÷ sent
    total_complained: int  # spam complaints (ARF reports)
    complaint_rate: float  # complained ÷ sent
    avg_tempo_per_hour: float


class StepKpisOut(BaseModel):
    """One step's figures (step 0: the first e-mail), from its messages."""

    step: int
    planned: int
    sent: int
    opened: int
    opened_human: int
    replied: int
    clicked: int
    bounced: int
    cancelled: int  # skipped ones included
    skipped: int  # cancelled because the step's condition did not hold


class TimelinePoint(BaseModel):
    date: date
    planned: int
    sent: int
    opened: int
    bounced: int
    replied: int
    clicked: int
    complained: int


class StepOut(BaseModel):
    position: int  # 1 for the first step after the first e-mail
    template_id: str
    delay_days: int
    attach_report: bool
    condition: Condition


class StopRulesOut(BaseModel):
    on_auto_reply: bool
    on_click: bool
    on_company_reply: bool


class CampaignOut(BaseModel):
    id: str
    name: str
    status: CampaignStatus
    template_id: str
    followup_enabled: bool  # it has steps (the first is what `followup` was)
    followup_days: int
    followup_attach_report: bool
    steps: list[StepOut]
    stop_rules: StopRulesOut
    start_at: datetime | None
    window: dict[str, Any]
    window_mode: WindowMode
    domains: list[str]
    reassign_on_domain_pause: bool
    created_at: datetime
    updated_at: datetime


class CampaignDetailOut(CampaignOut):
    audience_count: int
    domains_used: list[str]
    kpis: KpisOut
    kpis_by_step: list[StepKpisOut]  # step 0, the first e-mail, then each step of the sequence
    timeline: list[TimelinePoint]  # the campaign's, or one step's (`?step=`)


class StepsEditOut(BaseModel):
    """An edit of the steps: the steps now, from which position the edit took effect and which it left."""

    steps: list[StepOut]
    applied_from: int
    unchanged: list[int]  # positions already planned for some lead: they stay as they were
    note: str


class MessageOut(BaseModel):
    id: str
    campaign_id: str
    lead_id: str
    lead_email: str
    domain_used: str
    scheduled_at: datetime
    sent_at: datetime | None
    status: MessageStatus
    is_followup: bool
    step: int  # 0: the first e-mail
    parent_message_id: str | None
    retry_count: int
    last_error: str | None
    opened_at: datetime | None
    replied_at: datetime | None  # its lead's first human reply to it
    clicked_at: datetime | None  # its first click


class Excluded(BaseModel):
    unsubscribed: int
    bounced: int
    suppressed: int
    recent: int
    duplicate_domain: int


class DaySlots(BaseModel):
    date: date
    count: int


class PlannedSlot(BaseModel):
    lead_id: str
    domain: str
    scheduled_at: datetime


class StepExpected(BaseModel):
    step: int
    count: int
    per_day: list[DaySlots]


class DryRunOut(BaseModel):
    audience_count: int
    excluded: Excluded
    window_mode: WindowMode
    # Recipient mode: planned leads without a known zone, who got the campaign window (null otherwise).
    leads_without_zone: int | None
    total_messages: int
    first_send_at: datetime | None
    last_send_at: datetime | None
    per_domain: dict[str, int]
    per_day: list[DaySlots]
    slots: list[PlannedSlot]
    followups_expected: int  # messages of step 1, if no lead replied or stopped
    steps: list[StepOut]
    steps_expected: list[StepExpected]
    steps_note: str
