"""Suppressions: addresses and domains (with their subdomains) that are never mailed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import func, select

from services.api.auth import CurrentPrincipal
from services.api.envelope import Envelope
from services.api.routes.deps import unit_of_work
from services.api.routes.resources import add_reads
from services.api.schemas import DeletedOut, SuppressionIn, SuppressionOut
from services.api.service import not_found_unless
from shared.db.models import Suppression

router = APIRouter(tags=["suppressions"])


def suppression_out(row: Suppression) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "email": row.email,
        "domain": row.domain,
        "reason": row.reason,
        "created_at": row.created_at,
    }


add_reads(router, "suppressions", Suppression, SuppressionOut, suppression_out, "suppression")


@router.post(
    "/suppressions",
    status_code=201,
    response_model=Envelope[SuppressionOut],
    responses={200: {"model": Envelope[SuppressionOut], "description": "it existed already"}},
)
async def add_suppression(
    request: Request, principal: CurrentPrincipal, body: SuppressionIn, response: Response
) -> dict[str, Any]:
    """201 with the new row, or 200 with the existing one. The sender checks suppressions right before
    each SMTP transaction, so mail already planned to a suppressed address is cancelled, never sent."""
    target = Suppression.email if body.email is not None else Suppression.domain
    value = str(body.email or body.domain).lower()
    async with unit_of_work(request, principal) as repo:
        existing = await repo.session.scalar(
            select(Suppression).where(
                Suppression.workspace_id == repo.workspace_id, func.lower(target) == value
            )
        )
        if existing is not None:
            response.status_code = 200
            return {"data": suppression_out(existing)}
        row = Suppression(
            email=value if body.email else None, domain=value if body.domain else None, reason=body.reason
        )
        repo.add(row)
        await repo.session.flush()
        await repo.session.refresh(row)
        return {"data": suppression_out(row)}


@router.delete("/suppressions/{suppression_id}", response_model=Envelope[DeletedOut])
async def delete_suppression(
    request: Request, principal: CurrentPrincipal, suppression_id: str
) -> dict[str, Any]:
    """Mail may go to the address again; a lead that unsubscribed or bounced stays so."""
    async with unit_of_work(request, principal) as repo:
        row = not_found_unless(await repo.get(Suppression, suppression_id), "suppression")
        await repo.delete(row)
        return {"data": {"id": str(row.id), "deleted": True}}
