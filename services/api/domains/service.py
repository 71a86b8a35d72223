"""Use cases of the sending domains. A domain's SMTP host must be public (unless the operator allows private
hosts); its password is stored encrypted; a domain a campaign names is never deleted."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from services.api.campaigns.usage import refuse_if_used
from services.api.domains.repository import DomainRepository
from services.api.domains.schemas import DkimIn, DomainIn, DomainPatch, ImapIn, WarmupIn
from services.api.kit.envelope import ApiError, conflict, invalid, not_found
from services.api.kit.hosts import require_public
from services.api.oauth.repository import OAuthAccountRepository
from services.api.workspace.repository import WorkspaceSettingsRepository
from shared import crypto, dkim, reputation
from shared.clock import utcnow
from shared.db.models import WARMUP_COLUMNS, Campaign, MailboxAccount, OAuthAccount, SendingDomain
from shared.db.slots import warmup_of
from shared.domain_checks import check_domain
from shared.imap import FAILING_AFTER
from shared.imap import client as imap
from shared.oauth import AccountState
from shared.oauth_tokens import NeedsReauth, TokenSource, TokenUnavailable
from shared.planning.pacing import Pace, Slowdown
from shared.planning.warmup import Warmup
from shared.reputation import Counts, Figures, Thresholds
from shared.resolver import Dns, DnsUnavailable
from shared.settings import Settings

log = structlog.get_logger()


def domain_out(
    row: SendingDomain, figures: Figures | None, workspace_thresholds: dict[str, Any]
) -> dict[str, Any]:
    """The domain as the api shows it, with its health (`figures`, None before its first signal) judged by
    the thresholds of its workspace and its own: never a password or a private key."""
    return {
        "id": str(row.id),
        "domain": row.domain,
        "from_email": row.from_email,
        "from_name": row.from_name,
        "smtp": {
            "host": row.smtp_host,
            "port": row.smtp_port,
            "username": row.smtp_username,
            "security": row.smtp_security,
            "has_password": row.smtp_password_encrypted is not None,
        },
        "imap": None if row.mailbox is None else mailbox_out(row.mailbox),
        "oauth": None if row.oauth is None else oauth_out(row.oauth),
        "dkim": None
        if row.dkim_selector is None
        else {
            "selector": row.dkim_selector,
            "ed25519": row.dkim_ed25519_private_encrypted is not None,
            "records": row.dkim_records or [],
        },
        "min_interval_seconds": row.min_interval_seconds,
        "daily_cap": row.daily_cap,
        "warmup": None if (plan := warmup_of(row)) is None else dataclasses.asdict(plan),
        "active": row.active,
        "state": row.state,
        "paused_cause": row.paused_cause,
        "paused_reason": row.paused_reason,
        "paused_at": row.paused_at,
        "health": health_out(figures, Thresholds.layered(workspace_thresholds, row.health_thresholds)),
        "health_thresholds": row.health_thresholds,
        "created_at": row.created_at,
    }


def oauth_out(grant: OAuthAccount) -> dict[str, Any]:
    return {
        "provider": grant.provider,
        "email": grant.email,
        "state": grant.state,
        "last_error": grant.last_error,
        "refreshed_at": grant.refreshed_at,
        "created_at": grant.created_at,
        "reconnect_url": f"/api/v1/domains/{grant.sending_domain_id}/oauth"
        if grant.state == AccountState.NEEDS_REAUTH
        else None,
    }


NO_FIGURES = Figures(Counts(), Counts(), 0, 0, 0, 0)


def health_out(figures: Figures | None, thresholds: Thresholds) -> dict[str, Any]:
    figures = figures or NO_FIGURES
    return {
        "last_24h": _window_out(figures.last_24h),
        "last_100_sends": _window_out(figures.last_100_sends),
        "policy_rejections_last_hour": figures.policy_rejections_last_hour,
        "consecutive_connection_failures": figures.consecutive_connection_failures,
        "consecutive_authentication_failures": figures.consecutive_authentication_failures,
        "consecutive_deferrals": figures.consecutive_deferrals,
        "thresholds": dataclasses.asdict(thresholds),
    }


def _window_out(window: Counts) -> dict[str, Any]:
    sends = window.sends
    return {
        **dataclasses.asdict(window),
        "bounce_rate": window.hard_bounces / sends if sends else 0.0,
        "complaint_rate": window.complaints / sends if sends else 0.0,
    }


async def shown(repo: DomainRepository, rows: list[SendingDomain]) -> list[dict[str, Any]]:
    """The domains as the api shows them, their figures read now."""
    figures = await repo.figures(rows, utcnow())
    workspace = await repo.sibling(WorkspaceSettingsRepository).health_thresholds()
    return [domain_out(row, figures.get(row.id), workspace) for row in rows]


async def shown_one(repo: DomainRepository, row: SendingDomain) -> dict[str, Any]:
    [one] = await shown(repo, [row])
    return one


async def resume(repo: DomainRepository, raw_id: str) -> dict[str, Any]:
    """A paused domain sends again: the scheduler plans everything it holds again from now (`DomainResumed`).
    Its figures count afresh from now. 409 for a domain that is not paused."""
    row = await repo.require(raw_id)
    try:
        reputation.transition(reputation.DomainState(row.state), "resume")
    except reputation.InvalidDomainTransition as error:
        raise conflict(str(error)) from error
    if not await repo.resume(row, utcnow()):  # resumed by someone else meanwhile
        raise conflict("cannot resume a sending domain that is active")
    return await shown_one(repo, await repo.reload(row))


async def detail(repo: DomainRepository, raw_id: str, settings: Settings) -> dict[str, Any]:
    """The domain, where its warm-up stands today and the providers that have it on a slower pace now."""
    row = await repo.require(raw_id)
    out, now = await shown_one(repo, row), utcnow()
    if (plan := warmup_of(row)) is not None:
        zone = ZoneInfo(settings.window_timezone)
        today = now.astimezone(zone).date()
        start = datetime.combine(today, time(0), zone)
        planned, sent = await repo.day_counts(
            row, start, datetime.combine(today + timedelta(days=1), time(0), zone)
        )
        out["warmup"] = {
            **out["warmup"],
            "today": today,
            "day": plan.day_number(today),
            "cap_today": plan.cap_on(today),
            "planned_today": planned,
            "sent_today": sent,
        }
    slowdowns = [
        (
            pace,
            Slowdown(
                Pace(pace.interval_seconds, pace.slowed_at), row.min_interval_seconds, settings.pace_rules
            ),
        )
        for pace in await repo.paces(row)
    ]
    out["pacing"] = sorted(
        (
            {
                "provider": pace.provider,
                "interval_seconds": slowdown.interval_at(now),
                "deferred_at": pace.slowed_at,
                "deferrals": pace.deferrals,
                "until": slowdown.recovered_at(),
            }
            for pace, slowdown in slowdowns
            if slowdown.is_slowed(now)
        ),
        key=lambda pace: (-pace["interval_seconds"], pace["provider"]),
    )
    return out


def warmup_columns(plan: WarmupIn | None, stored: Warmup | None, settings: Settings) -> dict[str, Any]:
    """The columns of a new or changed plan (none: removed). Without a start date it keeps the stored plan's,
    else starts today in the default window's time zone."""
    if plan is None:
        return dict.fromkeys(WARMUP_COLUMNS)
    start = plan.start_date or (stored.start_date if stored else None)
    start = start or utcnow().astimezone(ZoneInfo(settings.window_timezone)).date()
    return dict(
        zip(WARMUP_COLUMNS, (plan.start_per_day, plan.growth_percent, plan.max_per_day, start), strict=True)
    )


def mailbox_out(row: MailboxAccount) -> dict[str, Any]:
    """`state`: ok, retrying (it failed, fewer than FAILING_AFTER times in a row) or failing."""
    state = "ok" if row.failures == 0 else "failing" if row.failures >= FAILING_AFTER else "retrying"
    return {
        **{name: getattr(row, name) for name in MAILBOX_SHOWN},
        "has_password": row.password_encrypted is not None,
        "folders": list(row.folders),
        "state": state,
    }


MAILBOX_SHOWN = (
    "host", "port", "security", "username", "reports_folder", "active", "failures", "last_error",
    "last_error_at", "last_success_at", "idle_supported",
)  # fmt: skip


async def check_hosts(settings: Settings, smtp: tuple[str, int] | None, imap: tuple[str, int] | None) -> None:
    """Refuse an SMTP or IMAP host that does not resolve, or resolves to an address that is not public (in
    production, unless the operator allows private hosts). The sender and the mailbox reader judge it again at
    every connection."""
    for protocol, endpoint in (("smtp", smtp), ("imap", imap)):
        if endpoint is not None:
            await require_public(settings, *endpoint, f"{protocol.upper()} host", ["body", protocol, "host"])


def _encrypted(settings: Settings, password: str | None) -> str | None:
    return crypto.encrypt(settings.encryption_key, password) if password else None


async def create(repo: DomainRepository, body: DomainIn, settings: Settings) -> dict[str, Any]:
    if await repo.named([body.domain]):
        raise conflict(f"sending domain {body.domain} already exists")
    row = SendingDomain(
        domain=body.domain,
        from_email=str(body.from_email),
        from_name=body.from_name,
        smtp_host=body.smtp.host,
        smtp_port=body.smtp.port,
        smtp_username=body.smtp.username,
        smtp_password_encrypted=_encrypted(settings, body.smtp.password),
        smtp_security=body.smtp.security,
        min_interval_seconds=settings.min_interval_seconds
        if body.min_interval_seconds is None
        else body.min_interval_seconds,
        daily_cap=body.daily_cap,
        active=body.active,
        health_thresholds=body.health_thresholds.over({}),
        **warmup_columns(body.warmup, None, settings),
    )
    row = await repo.add(row)
    if body.imap is not None:
        await _save_mailbox(repo, row, body.imap, settings, ["body", "imap", "password"])
    return await shown_one(repo, await repo.reload(row))


async def update(
    repo: DomainRepository, raw_id: str, body: DomainPatch, settings: Settings
) -> dict[str, Any]:
    """Planned slots keep their times; a new interval or cap applies to what is planned from now on."""
    changes = body.changes()
    smtp = changes.pop("smtp", None) or {}
    row = await repo.require(raw_id)
    if body.health_thresholds is not None:
        changes["health_thresholds"] = body.health_thresholds.over(row.health_thresholds)
    moved = "host" in smtp or "port" in smtp
    await check_hosts(
        settings,
        (smtp.get("host", row.smtp_host), smtp.get("port", row.smtp_port)) if moved else None,
        (body.imap.host, body.imap.port) if body.imap is not None else None,
    )
    if "warmup" in changes:
        changes.pop("warmup")
        changes.update(warmup_columns(body.warmup, warmup_of(row), settings))
    if "imap" in changes:
        changes.pop("imap")
        if body.imap is None:
            await repo.delete_mailbox(row)
        else:
            await _save_mailbox(repo, row, body.imap, settings, ["body", "imap", "password"])
    for name, value in smtp.items():
        if name == "password":
            changes["smtp_password_encrypted"] = _encrypted(settings, value)
        else:
            changes[f"smtp_{name}"] = value
    return await shown_one(repo, await repo.change(row, changes))


async def _save_mailbox(
    repo: DomainRepository, row: SendingDomain, imap: ImapIn, settings: Settings, at: list[str | int]
) -> None:
    values: dict[str, Any] = imap.model_dump(exclude={"password"})
    values["folders"] = list(dict.fromkeys(imap.folders))
    if imap.password is not None:
        values["password_encrypted"] = crypto.encrypt(settings.encryption_key, imap.password)
    elif row.mailbox is None and row.oauth is None:  # with a grant, it logs in with XOAUTH2
        raise invalid("a new mailbox needs its password (or the domain's OAuth2 grant)", at)
    await repo.save_mailbox(row, values)


async def generate_dkim(
    repo: DomainRepository, raw_id: str, body: DkimIn, settings: Settings
) -> dict[str, Any]:
    """New keys under a new selector (dated, so a rotation never changes a published record): the domain signs
    with them from its next e-mail on. The private keys are stored encrypted and never shown."""
    row = await repo.require(raw_id)
    selector = f"md{datetime.now(UTC):%Y%m%d}{secrets.token_hex(2)}"
    keys = await asyncio.to_thread(dkim.generate, selector, body.ed25519)  # an RSA key takes 50–200 ms
    key = settings.encryption_key
    changes = {
        "dkim_selector": keys.selector,
        "dkim_rsa_private_encrypted": crypto.encrypt(key, keys.rsa_private),
        "dkim_ed25519_private_encrypted": crypto.encrypt(key, keys.ed25519_private)
        if keys.ed25519_private
        else None,
        "dkim_records": [dataclasses.asdict(record) for record in dkim.records(keys, row.domain)],
    }
    return await shown_one(repo, await repo.change(row, changes))


# DNS and IMAP answers are awaited with no database connection held, and for this long at most in all: a
# tenant's slow name server or mailbox cannot hold the api's connections.
CHECKS_SECONDS = 15.0


@dataclasses.dataclass(frozen=True)
class CheckTarget:
    domain: str
    smtp_host: str
    dkim_records: list[dkim.Record]


async def check_target(repo: DomainRepository, raw_id: str) -> CheckTarget:
    row = await repo.require(raw_id)
    return CheckTarget(
        row.domain, row.smtp_host, [dkim.Record(**record) for record in row.dkim_records or []]
    )


async def checks(target: CheckTarget, settings: Settings) -> list[dict[str, Any]]:
    """SPF, DKIM, DMARC and MX as DNS answers them now (`shared.domain_checks`)."""
    lookups = Dns(settings.dns_server, settings.dns_timeout_seconds)
    try:
        async with asyncio.timeout(CHECKS_SECONDS):
            verdicts = await check_domain(lookups, target.domain, target.smtp_host, target.dkim_records)
    except DnsUnavailable as error:
        raise ApiError(503, "unavailable", f"{error}; try again later") from error
    except TimeoutError as error:
        raise ApiError(
            503, "unavailable", f"DNS did not answer within {CHECKS_SECONDS:g} s; try again later"
        ) from error
    return [dataclasses.asdict(verdict) for verdict in verdicts]


async def mailbox_endpoint(
    repo: DomainRepository, raw_id: str, settings: Settings, tokens: TokenSource
) -> imap.Endpoint:
    """How the reader logs in to the domain's mailbox: with the domain's OAuth2 grant when it has one, else
    with the mailbox's password."""
    row = await repo.require(raw_id)
    if row.mailbox is None:
        raise not_found("mailbox of this sending domain")
    account = row.mailbox
    try:
        access = await tokens.access(row.id)
    except NeedsReauth as error:
        raise conflict(f"OAuth2: {error}") from error
    except TokenUnavailable as error:
        raise ApiError(503, "unavailable", str(error)) from error
    if access is not None:
        username, secret = access.email, access.token
    elif account.password_encrypted is not None:
        username, secret = (
            account.username,
            crypto.decrypt(settings.encryption_key, account.password_encrypted),
        )
    else:
        raise conflict("the mailbox has no password, and its domain no OAuth2 grant")
    return imap.Endpoint(
        account.host, account.port, account.security, username, secret,  # type: ignore[arg-type]
        settings.inbox_timeout_seconds, allow_private=settings.private_hosts_allowed,
        ca_file=settings.imap_ca_file, oauth2=access is not None,
    )  # fmt: skip


async def test_mailbox(endpoint: imap.Endpoint) -> dict[str, Any]:
    """Log in to the domain's mailbox as the reader would: which folders exist and whether IDLE is offered."""
    failed = {"ok": False, "folders": [], "idle_supported": None}
    try:
        async with asyncio.timeout(CHECKS_SECONDS), imap.connect(endpoint) as mailbox:
            return {
                "ok": True,
                "error": None,
                "folders": await mailbox.folders(),
                "idle_supported": mailbox.idle_supported,
            }
    except imap.ImapFailure as error:
        return {**failed, "error": str(error)}
    except TimeoutError:
        return {**failed, "error": f"the IMAP server did not answer within {CHECKS_SECONDS:g} s"}
    except Exception:  # the server said something the client could not take: no detail to leak
        log.warning("api.mailbox.test.failed", host=endpoint.host, exc_info=True)
        return {**failed, "error": imap.NO_SESSION}


async def delete(repo: DomainRepository, raw_id: str) -> dict[str, Any]:
    """Only a domain no campaign names; otherwise deactivate it (`PATCH {"active": false}`)."""
    row = await repo.require(raw_id)
    await refuse_if_used(repo, f"sending domain {row.domain}", Campaign.domains.contains([row.domain]))
    # Its OAuth2 grant locked before the domain, in the order a refused refresh takes them (the grant, then
    # the domain it pauses): the delete waits for that refresh rather than deadlocking with it.
    await repo.sibling(OAuthAccountRepository).of_domain(row)
    await repo.delete(row)
    return {"id": str(row.id), "deleted": True}
