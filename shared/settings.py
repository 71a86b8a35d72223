"""Typed configuration from `MAILDASH_*` environment variables.

Development defaults let `make run` work on a fresh machine; `MAILDASH_ENV=production` refuses every one of
them that is a secret, so a forgotten variable stops the service instead of running it insecurely.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.planning.pacing import PaceRules
from shared.planning.window import DEFAULT_WINDOW
from shared.render import DEFAULT_LIMITS
from shared.webhooks import RetryRules

_DEFAULT_WINDOW = DEFAULT_WINDOW.to_dict()  # the defaults of MAILDASH_WINDOW_*

# Development-only values. Anything listed here is refused when MAILDASH_ENV=production.
DEV_SECRETS = {
    "jwt_secret": "dev-only-jwt-secret-change-me-not-for-production",
    "tracking_secret": "dev-only-tracking-secret-change-me-not-for-production",
    "encryption_key": "dev-only-encryption-key-change-me",
    "inbound_secret": "dev-only-inbound-secret",
    "admin_password": "admin",
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAILDASH_", extra="ignore")

    env: Literal["development", "production"] = "development"

    # Infrastructure
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/maildash"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    broker_prefix: str = Field("maildash", pattern=r"^[a-z0-9_-]+$")
    broker_prefetch: int = Field(16, ge=1)

    # Secrets
    jwt_secret: str = DEV_SECRETS["jwt_secret"]
    tracking_secret: str = DEV_SECRETS["tracking_secret"]
    encryption_key: str = DEV_SECRETS["encryption_key"]
    inbound_secret: str = DEV_SECRETS["inbound_secret"]

    # Accounts
    admin_email: str = "admin@example.com"
    admin_password: str = DEV_SECRETS["admin_password"]
    jwt_audience: str = "maildash"
    jwt_ttl_seconds: int = Field(3600, ge=60)
    # Argon2 runs in this many threads per api process (each hash takes ~0.15 s and ~1.4 cores here); at most
    # `password_hash_queue` more logins wait for one, and any beyond that are answered 429 at once.
    password_hash_workers: int = Field(2, ge=1)
    password_hash_queue: int = Field(32, ge=0)

    # HTTP
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    tracker_host: str = "127.0.0.1"
    tracker_port: int = 8001
    worker_host: str = "127.0.0.1"  # the scheduler's and senders' health and metrics
    scheduler_port: int = 8002
    sender_port: int = 8003
    inbox_port: int = 8004  # the tracker's mailbox reader (`python -m services.tracker inbox`)
    webhooks_port: int = 8005  # the outgoing webhooks' worker (`python -m services.webhooks`)
    public_tracker_url: str = "http://127.0.0.1:8001"
    cors_origins: list[str] = []

    # Sending rules (SPEC §2.2, §2.3, §2.5 defaults)
    window_timezone: str = _DEFAULT_WINDOW["timezone"]
    window_days: list[int] = _DEFAULT_WINDOW["days"]
    window_start: str = Field(_DEFAULT_WINDOW["start"], pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    window_end: str = Field(_DEFAULT_WINDOW["end"], pattern=r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")
    window_holidays: str | None = _DEFAULT_WINDOW["holidays"]
    min_interval_seconds: int = Field(1200, ge=0, le=86400)
    send_grace_seconds: int | None = Field(None, ge=0)
    retry_backoff_seconds: list[int] = [300, 600]
    smtp_allow_private: bool = False
    # A domain paused for a transient cause (connection failures) sends one probe message after this long.
    domain_cooldown_seconds: int = Field(900, ge=1)

    # What one request may send the api (README "Limits"); each is checked while the body streams in.
    api_body_max_bytes: int = Field(1024 * 1024, ge=1024)  # every JSON or form body not named below
    campaign_body_max_bytes: int = Field(8 * 1024 * 1024, ge=1024)  # a wizard payload with static lead ids
    report_max_bytes: int = Field(5 * 1024 * 1024, ge=1)  # one lead's PDF report
    import_max_bytes: int = Field(50 * 1024 * 1024, ge=1024)  # one CSV import
    import_max_rows: int = Field(1_000_000, ge=1)
    # How far ahead a campaign may start: keeps every date the planner sees within a year or so of now.
    start_horizon_days: int = Field(365, ge=1, le=3650)

    # Workers
    sender_concurrency: int = Field(8, ge=1)
    smtp_timeout_seconds: float = Field(30.0, gt=0)
    smtp_ca_file: str | None = None  # CA bundle for SMTP servers' certificates; the system's when unset
    sending_lease_seconds: int = Field(300, ge=10)
    dispatch_batch_size: int = Field(500, ge=1)
    poll_seconds: float = Field(5.0, gt=0)
    # The resolver for DKIM records, the domain checks and the recipients' MX, "host" or "host:port"; the
    # system's when unset.
    dns_server: str | None = None
    dns_timeout_seconds: float = Field(5.0, gt=0)

    # Adaptive pacing per receiving provider (shared/planning/pacing.py) and the cache of providers
    pace_max_interval_seconds: int = Field(14400, ge=1, le=86400)  # the slowest pace towards a provider
    pace_floor_seconds: int = Field(60, ge=1, le=86400)  # the first slowing of a domain without interval
    pace_quiet_seconds: int = Field(3600, ge=1)  # without a deferral this long (and 2 intervals), it halves
    provider_cache_max_seconds: int = Field(86400, ge=60)  # an MX answer is kept its TTL, at most this
    provider_retry_seconds: int = Field(300, ge=1)  # after DNS did not answer, the domain is asked again
    provider_lookups: int = Field(16, ge=1)  # MX look-ups at once by one scheduler

    # Inbound mail at the tracker (`/inbound/*`): what one mail may be, and the processes that read it
    inbound_max_bytes: int = Field(10 * 1024 * 1024, ge=1024)  # 413 beyond
    inbound_max_parts: int = Field(1000, ge=1)  # 422 beyond, as for the four below
    inbound_max_depth: int = Field(32, ge=1, le=200)  # deeper, the stdlib's parser would recurse too far
    inbound_max_header_lines: int = Field(1000, ge=10)  # in one part's header block
    inbound_max_header_bytes: int = Field(256 * 1024, ge=1024)  # one part's header block
    inbound_read_seconds: float = Field(5.0, gt=0)  # a reader still busy then is killed and replaced
    inbound_readers: int = Field(2, ge=1)  # reader processes of one tracker
    inbound_backlog: int = Field(16, ge=0)  # mails waiting for a reader (each holds its body); 503 beyond
    inbound_reader_memory_mb: int = Field(512, ge=128)  # address space of a reader process

    # ESP event webhooks at the tracker (`POST /webhooks/esp/<provider>/<token>`)
    esp_max_bytes: int = Field(2 * 1024 * 1024, ge=1024)  # one request (SendGrid posts up to 768 KB); 413
    esp_max_age_seconds: int = Field(300, ge=1)  # an event the ESP dated longer ago (or ahead) is refused
    # How long an ESP event's id is kept, so that the ESP delivering it again changes nothing: longer than any
    # ESP retries (SendGrid 3 days, Mailgun 8 hours, Postmark and SES hours).
    esp_event_retention_days: int = Field(30, ge=7)
    # Where SNS signing certificates and subscription confirmations may be fetched from: https and a host
    # matching this, and certificates checked against the system's CAs (or only those in `sns_ca_file`).
    sns_host_pattern: str = r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?"
    sns_ca_file: str | None = None
    sns_timeout_seconds: float = Field(10.0, gt=0)

    # Outgoing webhooks (`python -m services.webhooks`, shared/webhooks.py)
    webhook_concurrency: int = Field(16, ge=1)  # endpoints sent to at once (one request each)
    webhook_timeout_seconds: float = Field(10.0, gt=0)  # one request, connecting included
    webhook_retry_first_seconds: float = Field(5.0, gt=0)  # the wait after a first failure; then doubling
    webhook_retry_max_seconds: float = Field(8 * 3600.0, gt=0)
    webhook_give_up_seconds: float = Field(3 * 86400.0, gt=0)  # then the endpoint is disabled
    webhook_poll_seconds: float = Field(1.0, gt=0)  # retries falling due; new deliveries NOTIFY at once
    webhook_response_chars: int = Field(500, ge=0)  # of a receiver's answer kept with the attempt
    webhook_retention_days: int = Field(30, ge=1)  # a delivered or given-up delivery, from its event

    # OAuth2 for the sending mailboxes (shared/oauth.py): one client per provider and deployment; a provider
    # without a client id is not offered. The redirect URL is the api's `/api/v1/oauth/callback` as the
    # provider's consent page reaches it (registered with each provider).
    oauth_google_client_id: str = ""
    oauth_google_client_secret: str = ""
    oauth_microsoft_client_id: str = ""
    oauth_microsoft_client_secret: str = ""
    oauth_microsoft_tenant: str = Field("common", pattern=r"^[A-Za-z0-9.-]+$")
    oauth_oidc_issuer: str = ""  # a generic OpenID provider: its endpoints come from its discovery document
    oauth_oidc_client_id: str = ""
    oauth_oidc_client_secret: str = ""
    oauth_redirect_url: str = "http://127.0.0.1:8000/api/v1/oauth/callback"
    oauth_flow_seconds: int = Field(600, ge=30)  # a started connection may be completed this long
    oauth_refresh_margin_seconds: int = Field(300, ge=0)  # an access token is refreshed this long before
    oauth_timeout_seconds: float = Field(10.0, gt=0)  # one request to a provider

    # The tracker's mailbox reader (`python -m services.tracker inbox`): sending mailboxes over IMAP
    inbox_lease_seconds: float = Field(30.0, ge=1)  # a dead reader's accounts are taken over after this
    inbox_poll_seconds: float = Field(60.0, gt=0)  # between reads without IDLE (or of other folders)
    inbox_idle_seconds: float = Field(600.0, gt=0, le=1500)  # IDLE re-issued well within 29 minutes
    inbox_timeout_seconds: float = Field(30.0, gt=0)  # one IMAP command
    inbox_batch: int = Field(100, ge=1)  # mails fetched in one FETCH and recorded in one transaction
    inbox_batch_bytes: int = Field(4 * 1024 * 1024, ge=1024)  # at most, in one FETCH (a larger mail alone)
    inbox_parallel_reads: int = Field(4, ge=1)  # mails of one mailbox read in the reader processes at once
    inbox_held_bytes: int = Field(64 * 1024 * 1024, ge=1024 * 1024)  # fetched, not yet read, all accounts
    inbox_lookback_days: int = Field(14, ge=0)  # a new folder is read from mail this many days old
    inbox_backoff_seconds: list[float] = [2, 10, 30, 120, 600]  # after the 1st, 2nd, … failure in a row
    inbox_max_accounts: int = Field(500, ge=1)  # accounts one reader process holds at most
    imap_ca_file: str | None = None  # CA bundle for IMAP servers' certificates; the system's when unset

    # Templates are tenant code (shared/render_pool.py): what one may be, make and take
    template_source_max_chars: int = Field(DEFAULT_LIMITS.source_chars, ge=1)  # per template field
    template_output_max_chars: int = Field(DEFAULT_LIMITS.output_chars, ge=1)  # per rendered part
    template_render_seconds: float = Field(2.0, gt=0)  # compiling and rendering one e-mail, preview or save
    template_memory_mb: int = Field(256, ge=64)  # address space of each render worker
    template_workers: int = Field(2, ge=1)  # render worker processes per api and sender process

    # Traces (shared/tracing.py): off unless an OTLP/HTTP endpoint is given, under OpenTelemetry's own name.
    otlp_endpoint: str | None = Field(
        None, validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT", "MAILDASH_OTLP_ENDPOINT")
    )

    log_format: Literal["console", "json"] = "console"
    log_level: str = "INFO"

    @property
    def pace_rules(self) -> PaceRules:
        return PaceRules(self.pace_max_interval_seconds, self.pace_floor_seconds, self.pace_quiet_seconds)

    @property
    def webhook_retries(self) -> RetryRules:
        return RetryRules(
            self.webhook_retry_first_seconds, self.webhook_retry_max_seconds, self.webhook_give_up_seconds
        )

    @property
    def private_hosts_allowed(self) -> bool:
        """Whether tenants may name hosts on non-public addresses: in development (a local SMTP sink), or when
        the operator says so."""
        return self.env != "production" or self.smtp_allow_private

    @field_validator("sns_host_pattern")
    @classmethod
    def _a_regular_expression(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"not a regular expression: {error}") from error
        return value

    @model_validator(mode="after")
    def _refuse_dev_secrets_in_production(self) -> Settings:
        if self.env != "production":
            return self
        weak = [name for name, dev in DEV_SECRETS.items() if getattr(self, name) in ("", dev)]
        if weak:
            names = ", ".join(f"MAILDASH_{n.upper()}" for n in weak)
            raise ValueError(
                f"MAILDASH_ENV=production needs real values for {names} (development defaults refused)"
            )
        configured = [p for p in ("google", "microsoft", "oidc") if getattr(self, f"oauth_{p}_client_id")]
        for provider in configured:
            if not getattr(self, f"oauth_{provider}_client_secret"):
                name = f"MAILDASH_OAUTH_{provider.upper()}_CLIENT_SECRET"
                raise ValueError(f"MAILDASH_ENV=production needs {name} beside its client id")
        if self.oauth_oidc_client_id and not self.oauth_oidc_issuer.startswith("https://"):
            raise ValueError(
                "MAILDASH_OAUTH_OIDC_ISSUER must be https:// in production (the client secret goes there)"
            )
        if configured and not self.oauth_redirect_url.startswith("https://"):
            raise ValueError("MAILDASH_OAUTH_REDIRECT_URL must be https:// in production")
        if not self.public_tracker_url.startswith("https://"):
            raise ValueError("MAILDASH_PUBLIC_TRACKER_URL must be https:// in production")
        return self
