"""Bodies of the sending-domain routes."""

from __future__ import annotations

import contextlib
import ipaddress
import re
from datetime import date, datetime
from typing import Annotated, Any, Literal

from email_validator import validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from services.api.kit.schemas import INT4_MAX, Email, Patch, Strict, domain_name
from shared.headers import UNSAFE_IN_HEADER

HOST_NAME = re.compile(
    r"(?=.{1,253}\Z)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?\Z", re.I
)


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


# An IMAP folder: printable ASCII (modified UTF-7 names are not encoded), no wildcard, quote or backslash.
FOLDER = re.compile(r"[\x20-\x7e]{1,200}\Z")
FOLDER_FORBIDDEN = re.compile(r'[*%"\\]')


def folder_name(value: str) -> str:
    if not FOLDER.match(value) or FOLDER_FORBIDDEN.search(value):
        raise ValueError('a folder name is printable ASCII without *, %, " or \\')
    return value


SenderEmail = Annotated[Email, AfterValidator(sender_address)]
DisplayName = Annotated[str, AfterValidator(header_safe)]
SmtpHost = Annotated[str, AfterValidator(smtp_host)]
Folder = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(folder_name)]
Security = Literal["none", "starttls", "tls"]  # of an SMTP or IMAP connection


class SmtpIn(Strict):
    host: SmtpHost = Field(min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535)
    username: str | None = Field(None, max_length=320)
    password: str | None = Field(None, max_length=1024)
    security: Security = "starttls"


class ImapIn(Strict):
    """The mailbox where the domain's replies, bounces and complaints arrive. Without `password`, a change
    keeps the stored one; a new mailbox needs it."""

    host: SmtpHost = Field(min_length=1, max_length=253)
    port: int = Field(993, ge=1, le=65535)
    security: Security = "tls"
    username: str = Field(min_length=1, max_length=320)
    password: str | None = Field(None, min_length=1, max_length=1024)
    folders: list[Folder] = Field(default_factory=lambda: ["INBOX"], min_length=1, max_length=20)
    reports_folder: Folder | None = None  # DSNs and complaint reports are moved there when set
    active: bool = True


Rate = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=1, le=1_000_000)]


class HealthThresholds(Strict):
    """A level of the health thresholds (`shared.reputation.Thresholds`): each field set here overrides the
    level below (a domain's over its workspace's, the workspace's over the defaults); null: inherited. In an
    answer every field is there, null where inherited."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)  # merged with Strict's

    bounce_rate: Rate | None = None  # hard bounces over this share of the sends pause the domain …
    bounce_min_sends: Count | None = None  # … once a window holds this many sends
    complaint_rate: Rate | None = None
    policy_rejections_per_hour: Count | None = None
    authentication_failures: Count | None = None  # refused logins in a row
    connection_failures: Count | None = None  # failed connections in a row
    deferrals: Count | None = None  # 421 / 4.7.x deferrals in a row, from whichever provider

    def over(self, stored: dict[str, Any]) -> dict[str, Any]:
        """The stored level with the fields sent here applied (null removes one)."""
        merged = {**stored, **self.model_dump(exclude_unset=True)}
        return {name: value for name, value in merged.items() if value is not None}


class EffectiveThresholds(BaseModel):
    """The thresholds that judge the domain: the defaults, overridden by its workspace's, then its own."""

    bounce_rate: float
    bounce_min_sends: int
    complaint_rate: float
    policy_rejections_per_hour: int
    authentication_failures: int
    connection_failures: int
    deferrals: int


class WarmupIn(Strict):
    """Day 1 (`start_date`) allows `start_per_day` e-mails, each day `growth_percent` more (compounded,
    rounded down) up to `max_per_day` (`shared/planning/warmup.py`). Without `start_date`: the stored plan's
    start, else today (in MAILDASH_WINDOW_TIMEZONE)."""

    start_per_day: int = Field(ge=1, le=INT4_MAX)
    growth_percent: int = Field(ge=0, le=1000)
    max_per_day: int = Field(ge=1, le=INT4_MAX)
    start_date: date | None = None

    @model_validator(mode="after")
    def _grows(self) -> WarmupIn:
        if self.max_per_day < self.start_per_day:
            raise ValueError("max_per_day must be at least start_per_day")
        return self


class DomainIn(Strict):
    domain: str = Field(max_length=253)
    from_email: SenderEmail
    from_name: DisplayName = Field("", max_length=200)
    smtp: SmtpIn
    imap: ImapIn | None = None
    min_interval_seconds: int | None = Field(None, ge=0, le=86400)
    daily_cap: int | None = Field(None, ge=1, le=INT4_MAX)
    warmup: WarmupIn | None = None
    active: bool = True
    health_thresholds: HealthThresholds = Field(default_factory=HealthThresholds)

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        return domain_name(value)


class SmtpPatch(Patch):
    NULLABLE = frozenset({"username", "password"})
    host: SmtpHost | None = Field(None, min_length=1, max_length=253)
    port: int | None = Field(None, ge=1, le=65535)
    username: str | None = Field(None, max_length=320)
    password: str | None = Field(None, max_length=1024)
    security: Security | None = None


class DomainPatch(Patch):
    """The domain name itself cannot change: campaigns name their domains by it."""

    NULLABLE = frozenset({"daily_cap", "imap", "warmup"})
    from_email: SenderEmail | None = None
    from_name: DisplayName | None = Field(None, max_length=200)
    smtp: SmtpPatch | None = None
    imap: ImapIn | None = None  # replaces the mailbox; null removes it
    min_interval_seconds: int | None = Field(None, ge=0, le=86400)
    daily_cap: int | None = Field(None, ge=1, le=INT4_MAX)
    warmup: WarmupIn | None = None  # replaces the plan; null removes it
    active: bool | None = None
    health_thresholds: HealthThresholds | None = None  # the fields sent change; null in one: inherited


class SmtpOut(BaseModel):
    host: str
    port: int
    username: str | None
    security: Security
    has_password: bool


class ImapOut(BaseModel):
    host: str
    port: int
    security: Security
    username: str
    has_password: bool
    folders: list[str]
    reports_folder: str | None
    active: bool
    state: Literal["ok", "retrying", "failing"]  # failing: `inbox_max_failures` failures in a row
    failures: int
    last_error: str | None
    last_error_at: datetime | None
    last_success_at: datetime | None
    idle_supported: bool | None  # as the server last said; null before the first connection


class RecordOut(BaseModel):
    name: str
    value: str


class DkimOut(BaseModel):
    selector: str
    ed25519: bool
    records: list[RecordOut]  # the TXT records to publish


class DkimIn(Strict):
    ed25519: bool = False  # a second signature with an Ed25519 key (RFC 8463) beside the RSA one


class ImapTestOut(BaseModel):
    ok: bool
    error: str | None
    folders: list[str]
    idle_supported: bool | None


class CheckOut(BaseModel):
    check: Literal["spf", "dkim", "dmarc", "mx"]
    status: Literal["pass", "warn", "fail"]
    detail: str
    fix: str | None
    record: str | None


class WindowOut(BaseModel):
    sends: int  # accepted or hard-bounced at SMTP time
    hard_bounces: int
    complaints: int
    policy_rejections: int
    bounce_rate: float  # hard bounces ÷ sends (0 without sends)
    complaint_rate: float  # complaints ÷ sends (0 without sends)


class HealthOut(BaseModel):
    """The domain's figures now, each counted from the later of its window's start and its last resume."""

    last_24h: WindowOut
    last_100_sends: WindowOut
    policy_rejections_last_hour: int
    consecutive_connection_failures: int
    consecutive_authentication_failures: int
    consecutive_deferrals: int
    thresholds: EffectiveThresholds


class WarmupOut(BaseModel):
    start_per_day: int
    growth_percent: int
    max_per_day: int
    start_date: date


class WarmupTodayOut(WarmupOut):
    """Where the plan stands today (in MAILDASH_WINDOW_TIMEZONE)."""

    today: date
    day: int  # 1 on the start date; 0 or less before it
    cap_today: int  # what the plan allows today (the domain's daily_cap may allow less)
    planned_today: int  # e-mails of the domain with today's slots, all campaigns (what the caps count)
    sent_today: int  # of which sent (an SMTP transaction completed)


class PaceOut(BaseModel):
    """A receiving provider that slowed this domain down and has not eased back to its own interval yet."""

    provider: str
    interval_seconds: int  # between two e-mails of the domain to the provider, now
    deferred_at: datetime  # its last deferral
    deferrals: int
    until: datetime  # back to the domain's own interval then, unless it defers again


class OAuthOut(BaseModel):
    """The domain's OAuth2 grant: its SMTP and IMAP log in with it (the tokens are never shown)."""

    provider: Literal["google", "microsoft", "oidc"]
    email: str  # the connected address: the domain's from_email
    state: Literal["active", "needs_reauth"]  # needs_reauth: the provider refused it; connect again
    last_error: str | None
    refreshed_at: datetime | None
    created_at: datetime
    reconnect_url: str | None  # when needs_reauth: POST it (`{"provider": …}`) for a new authorize URL


class DomainOut(BaseModel):
    id: str
    domain: str
    from_email: str
    from_name: str
    smtp: SmtpOut
    imap: ImapOut | None
    oauth: OAuthOut | None
    dkim: DkimOut | None
    min_interval_seconds: int
    daily_cap: int | None
    warmup: WarmupOut | None
    active: bool
    state: Literal["active", "paused"]  # paused: it sends nothing until resumed
    paused_cause: str | None  # hard_bounces, complaints, policy_rejections, authentication_failures, …
    paused_reason: str | None
    paused_at: datetime | None
    health: HealthOut
    health_thresholds: HealthThresholds  # its own; the rest come from its workspace and the defaults
    created_at: datetime


class DomainDetailOut(DomainOut):
    warmup: WarmupTodayOut | None
    pacing: list[PaceOut]  # slowest first
