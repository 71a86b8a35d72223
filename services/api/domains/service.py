"""Use cases of the sending domains. A domain's SMTP host must be public (unless the operator allows private
hosts); its password is stored encrypted; a domain a campaign names is never deleted."""

from __future__ import annotations

from typing import Any

from services.api.campaigns.usage import refuse_if_used
from services.api.domains.repository import DomainRepository
from services.api.domains.schemas import DomainIn, DomainPatch
from services.api.kit.envelope import conflict, invalid
from shared import crypto
from shared.db.models import Campaign, SendingDomain
from shared.public_address import UnusableHost, resolve_public
from shared.settings import Settings


def domain_out(row: SendingDomain) -> dict[str, Any]:
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
        "min_interval_seconds": row.min_interval_seconds,
        "daily_cap": row.daily_cap,
        "active": row.active,
        "created_at": row.created_at,
    }


async def check_smtp_host(settings: Settings, host: str, port: int) -> None:
    """Refuse an SMTP host that does not resolve, or resolves to an address that is not public (in production,
    unless the operator allows private hosts). The sender judges it again at every connection."""
    if settings.private_hosts_allowed:
        return
    try:
        await resolve_public(host, port, allow_private=False, timeout=5)
    except UnusableHost as error:
        raise invalid(f"SMTP host {error}", ["body", "smtp", "host"]) from error


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
    )
    return domain_out(await repo.add(row))


async def update(
    repo: DomainRepository, raw_id: str, body: DomainPatch, settings: Settings
) -> dict[str, Any]:
    """Planned slots keep their times; a new interval or cap applies to what is planned from now on."""
    changes = body.changes()
    smtp = changes.pop("smtp", None) or {}
    row = await repo.require(raw_id)
    if "host" in smtp or "port" in smtp:
        await check_smtp_host(settings, smtp.get("host", row.smtp_host), smtp.get("port", row.smtp_port))
    for name, value in smtp.items():
        if name == "password":
            changes["smtp_password_encrypted"] = _encrypted(settings, value)
        else:
            changes[f"smtp_{name}"] = value
    return domain_out(await repo.change(row, changes))


async def delete(repo: DomainRepository, raw_id: str) -> dict[str, Any]:
    """Only a domain no campaign names; otherwise deactivate it (`PATCH {"active": false}`)."""
    row = await repo.require(raw_id)
    await refuse_if_used(repo, f"sending domain {row.domain}", Campaign.domains.contains([row.domain]))
    await repo.delete(row)
    return {"id": str(row.id), "deleted": True}
