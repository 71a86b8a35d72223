"""Use cases of suppressions: addresses and domains (with their subdomains) that are never mailed."""

from __future__ import annotations

from typing import Any

from services.api.kit.reads import row_out
from services.api.suppressions.repository import SuppressionRepository
from services.api.suppressions.schemas import SuppressionIn
from shared.db.models import Suppression


async def add(repo: SuppressionRepository, body: SuppressionIn) -> tuple[dict[str, Any], bool]:
    """The suppression of this address or domain, and whether it is new (an existing one is kept as it is)."""
    target = Suppression.email if body.email is not None else Suppression.domain
    value = str(body.email or body.domain).lower()
    existing = await repo.matching(target, value)
    if existing is not None:
        return row_out(existing), False
    row = Suppression(
        email=value if body.email else None, domain=value if body.domain else None, reason=body.reason
    )
    return row_out(await repo.add(row)), True


async def delete(repo: SuppressionRepository, raw_id: str) -> dict[str, Any]:
    """Mail may go to the address again; a lead that unsubscribed or bounced stays so."""
    row = await repo.require(raw_id)
    await repo.delete(row)
    return {"id": str(row.id), "deleted": True}
