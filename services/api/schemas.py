"""Request and response bodies of the HTTP API (the dashboard's contract). Never reused as broker messages."""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, ClassVar, Literal

from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from shared.headers import UNSAFE_IN_HEADER
from shared.planning.window import is_known_country, is_known_timezone

# Every input is bounded: strings and lists by length, numbers by the range of the column they go to.
EMAIL_MAX = 254  # RFC 5321: a forward path of 256 octets, less its angle brackets
ID_MAX = 100  # ids are opaque strings (UUIDs today)
TAG_MAX = 100
FIELD_KEY_MAX = 100
FIELD_VALUE_MAX = 5000
INT4_MAX = 2**31 - 1  # PostgreSQL `integer`
INT8_MIN, INT8_MAX = -(2**63), 2**63 - 1
MAX_STATIC_AUDIENCE = 200_000  # lead ids in one wizard payload; a larger audience is chosen by tags

HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")
# \Z, not $: `$` also matches before a final newline, which would let "a.example\n" through.
DOMAIN = re.compile(r"^(?=.{1,253}\Z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\Z")
HOST_NAME = re.compile(
    r"(?=.{1,253}\Z)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?\Z", re.I
)


# An ASCII dot-atom local part, which email-validator accepts as it is; anything else takes the full check.
LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")


@functools.lru_cache(maxsize=65_536)
def _checked_domain(domain: str) -> str:
    return str(validate_email(f"x@{domain}", check_deliverability=False).domain)


def email_address(value: str) -> str:
    """email-validator's verdict and normal form (what pydantic's EmailStr gives), with each domain checked
    once: its IDNA work is most of the cost, and an imported list repeats few domains many times."""
    try:
        local, at, domain = value.rpartition("@")
        if at and len(local) <= 64 and LOCAL_PART.match(local):
            if local.lower() in CASE_INSENSITIVE_MAILBOX_NAMES:  # RFC 2142 role names: email-validator lowers
                local = local.lower()
            address = f"{local}@{_checked_domain(domain)}"
            if len(address) <= 254:
                return address
        return str(validate_email(value, check_deliverability=False).normalized)
    except EmailNotValidError as error:
        raise ValueError(f"not a valid e-mail address: {error}") from error


Email = Annotated[
    str,
    Field(max_length=EMAIL_MAX),  # checked before the address is parsed
    AfterValidator(email_address),
    WithJsonSchema({"type": "string", "format": "email", "maxLength": EMAIL_MAX}),
]
Id = Annotated[str, Field(max_length=ID_MAX)]
Tag = Annotated[str, Field(max_length=TAG_MAX)]
DomainName = Annotated[str, Field(max_length=253)]
# A custom field holds text, a 64-bit integer, a finite number (JSON has no NaN or Infinity, nor has JSONB),
# a boolean or null; an integer beyond 64 bits becomes a floating-point number.
FieldValue = (
    Annotated[str, Field(max_length=FIELD_VALUE_MAX)]
    | Annotated[int, Field(ge=INT8_MIN, le=INT8_MAX)]
    | Annotated[float, Field(allow_inf_nan=False)]
    | bool
    | None
)
CustomFields = dict[Annotated[str, Field(max_length=FIELD_KEY_MAX)], FieldValue]


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError as error:  # 9999-12-31T23:59-01:00 is in year 10000 in UTC
        raise ValueError("the time is out of range") from error


# An aware time that PostgreSQL can hold: normalised to UTC, refused when that leaves the calendar.
Moment = Annotated[AwareDatetime, AfterValidator(_utc)]


def sender_address(value: str) -> str:
    """A From address goes into the header and the envelope as it is: ASCII, its domain in IDNA (xn--) form
    (we do not speak SMTPUTF8)."""
    ascii_form = validate_email(value, check_deliverability=False).ascii_email
    if ascii_form is None:
        raise ValueError("a sender address needs an ASCII local part")
    return str(ascii_form)


def header_safe(value: str) -> str:
    """A tenant's text that goes into a header as it is: refused, not cleaned, when it could break one."""
    if UNSAFE_IN_HEADER.search(value):
        raise ValueError("may not contain line breaks or control characters")
    return value


def smtp_host(value: str) -> str:
    """A host name or an IP address without a zone: nothing a resolver or SMTP could read as more."""
    with contextlib.suppress(ValueError):
        if "%" not in value and ipaddress.ip_address(value):
            return value
    if not HOST_NAME.match(value):
        raise ValueError("not a host name or IP address")
    return value


SenderEmail = Annotated[Email, AfterValidator(sender_address)]
DisplayName = Annotated[str, AfterValidator(header_safe)]
SmtpHost = Annotated[str, AfterValidator(smtp_host)]


def storable(value: Any) -> Any:
    """PostgreSQL text holds neither NUL nor lone UTF-16 surrogates: refuse them (422), never fail (500)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text may not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError("text is not valid Unicode") from error
    elif isinstance(value, list):
        for item in value:
            storable(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            storable(key)
            storable(item)
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        return storable(value)


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# ── accounts ───────────────────────────────────────────────────────────────────────────────────────────
class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int


class MeOut(BaseModel):
    user: dict[str, Any]
    workspace: dict[str, Any]


class WorkspaceIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    admin_email: Email
    admin_password: str = Field(min_length=8, max_length=1024)


class WorkspaceRef(BaseModel):
    id: str
    name: str


class AdminRef(BaseModel):
    id: str
    email: str


class WorkspaceOut(BaseModel):
    workspace: WorkspaceRef
    admin: AdminRef


class UserRef(Strict):
    email: Email


class UserOut(BaseModel):
    id: str
    email: str
    workspace_id: str
    is_superuser: bool
    active: bool


# ── sending domains ────────────────────────────────────────────────────────────────────────────────────
class SmtpIn(Strict):
    host: SmtpHost = Field(min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535)
    username: str | None = Field(None, max_length=320)
    password: str | None = Field(None, max_length=1024)
    security: Literal["none", "starttls", "tls"] = "starttls"


class DomainIn(Strict):
    domain: str = Field(max_length=253)
    from_email: SenderEmail
    from_name: DisplayName = Field("", max_length=200)
    smtp: SmtpIn
    min_interval_seconds: int | None = Field(None, ge=0, le=86400)
    daily_cap: int | None = Field(None, ge=1, le=INT4_MAX)
    active: bool = True

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        value = value.lower().rstrip(".")
        if not DOMAIN.match(value):
            raise ValueError("not a domain name")
        return value


class Patch(Strict):
    """A partial update: only the fields sent change; `null` only where the field may be empty."""

    NULLABLE: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _no_null_for_required(self) -> Patch:
        for name in self.model_fields_set - self.NULLABLE:
            if getattr(self, name) is None:
                raise ValueError(f"{name} may not be null")
        return self

    def changes(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)


class SmtpPatch(Patch):
    NULLABLE = frozenset({"username", "password"})
    host: SmtpHost | None = Field(None, min_length=1, max_length=253)
    port: int | None = Field(None, ge=1, le=65535)
    username: str | None = Field(None, max_length=320)
    password: str | None = Field(None, max_length=1024)
    security: Literal["none", "starttls", "tls"] | None = None


class DomainPatch(Patch):
    """The domain name itself cannot change: campaigns name their domains by it."""

    NULLABLE = frozenset({"daily_cap"})
    from_email: SenderEmail | None = None
    from_name: DisplayName | None = Field(None, max_length=200)
    smtp: SmtpPatch | None = None
    min_interval_seconds: int | None = Field(None, ge=0, le=86400)
    daily_cap: int | None = Field(None, ge=1, le=INT4_MAX)
    active: bool | None = None


class SmtpOut(BaseModel):
    host: str
    port: int
    username: str | None
    security: str
    has_password: bool


class DomainOut(BaseModel):
    id: str
    domain: str
    from_email: str
    from_name: str
    smtp: SmtpOut
    min_interval_seconds: int
    daily_cap: int | None
    active: bool
    created_at: datetime


# ── leads and templates ────────────────────────────────────────────────────────────────────────────────
class LeadIn(Strict):
    email: Email
    first_name: str = Field("", max_length=200)
    last_name: str = Field("", max_length=200)
    company: str = Field("", max_length=200)
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    fields: CustomFields = Field(default_factory=dict, max_length=100)


class LeadPatch(Patch):
    email: Email | None = None
    first_name: str | None = Field(None, max_length=200)
    last_name: str | None = Field(None, max_length=200)
    company: str | None = Field(None, max_length=200)
    tags: list[Tag] | None = Field(None, max_length=50)
    fields: CustomFields | None = Field(None, max_length=100)


class LeadOut(Out):
    id: str
    email: str
    first_name: str
    last_name: str
    company: str
    tags: list[str]
    fields: dict[str, Any]
    status: str
    created_at: datetime


class TemplateIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    subject: str = Field(min_length=1, max_length=998)
    body_html: str = Field(min_length=1, max_length=500_000)
    body_text: str | None = Field(None, max_length=500_000)
    followup_subject: str | None = Field(None, max_length=998)
    followup_body_html: str | None = Field(None, max_length=500_000)


class TemplatePatch(Patch):
    NULLABLE = frozenset({"body_text", "followup_subject", "followup_body_html"})
    name: str | None = Field(None, min_length=1, max_length=200)
    subject: str | None = Field(None, min_length=1, max_length=998)
    body_html: str | None = Field(None, min_length=1, max_length=500_000)
    body_text: str | None = Field(None, max_length=500_000)
    followup_subject: str | None = Field(None, max_length=998)
    followup_body_html: str | None = Field(None, max_length=500_000)


class PreviewIn(Strict):
    lead_id: Id
    followup: bool = False


class PreviewOut(BaseModel):
    subject: str
    html: str
    text: str


class SuppressionIn(Strict):
    email: Email | None = None
    domain: str | None = Field(None, max_length=253)
    reason: str = Field("manual", max_length=500)

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.lower().rstrip(".")
        if not DOMAIN.match(value):
            raise ValueError("not a domain name")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> SuppressionIn:
        if (self.email is None) == (self.domain is None):
            raise ValueError("give exactly one of email or domain")
        return self


class SuppressionOut(BaseModel):
    id: str
    email: str | None
    domain: str | None
    reason: str
    created_at: datetime


class RowError(BaseModel):
    row: int
    error: str


class ImportOut(BaseModel):
    created: int
    updated: int
    skipped: int
    errors: list[RowError]


class DeletedOut(BaseModel):
    id: str
    deleted: bool = True


class TemplateOut(Out):
    id: str
    name: str
    subject: str
    body_html: str
    body_text: str | None
    followup_subject: str | None
    followup_body_html: str | None
    created_at: datetime


# ── campaigns ──────────────────────────────────────────────────────────────────────────────────────────
class WindowIn(Strict):
    timezone: str = Field("Europe/Amsterdam", max_length=64)
    days: list[Annotated[int, Field(ge=0, le=6)]] = Field(
        default_factory=lambda: [0, 1, 2, 3, 4], min_length=1, max_length=7
    )  # 0 is Monday, 6 Sunday
    start: str = Field("08:00", max_length=5)
    end: str = Field("17:00", max_length=5)
    holidays: str | None = Field("NL", max_length=8)

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

    @model_validator(mode="after")
    def _start_at(self) -> ScheduleIn:
        if self.start_mode == "at" and self.start_at is None:
            raise ValueError("start_at is required when start_mode is 'at'")
        return self


class FollowupIn(Strict):
    enabled: bool = False
    days: int = Field(3, ge=1, le=30)
    attach_report: bool = False


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
    tracking: TrackingIn = Field(default_factory=TrackingIn)


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
    avg_tempo_per_hour: float


class TimelinePoint(BaseModel):
    date: date
    planned: int
    sent: int
    opened: int
    bounced: int


class CampaignOut(BaseModel):
    id: str
    name: str
    status: str
    template_id: str
    followup_enabled: bool
    followup_days: int
    followup_attach_report: bool
    start_at: datetime | None
    window: dict[str, Any]
    domains: list[str]
    created_at: datetime
    updated_at: datetime


class CampaignDetailOut(CampaignOut):
    audience_count: int
    domains_used: list[str]
    kpis: KpisOut
    timeline: list[TimelinePoint]


class MessageOut(BaseModel):
    id: str
    campaign_id: str
    lead_id: str
    lead_email: str
    domain_used: str
    scheduled_at: datetime
    sent_at: datetime | None
    status: str
    is_followup: bool
    parent_message_id: str | None
    retry_count: int
    last_error: str | None
    opened_at: datetime | None


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


class DryRunOut(BaseModel):
    audience_count: int
    excluded: Excluded
    total_messages: int
    first_send_at: datetime | None
    last_send_at: datetime | None
    per_domain: dict[str, int]
    per_day: list[DaySlots]
    slots: list[PlannedSlot]
    followups_expected: int


class ReportOut(BaseModel):
    lead_id: str
    filename: str
    size: int
    uploaded_at: datetime
