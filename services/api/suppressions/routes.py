"""Suppressions: add, list, read, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from services.api.kit.auth import CurrentPrincipal
from services.api.kit.deps import unit_of_work
from services.api.kit.envelope import Envelope
from services.api.kit.reads import add_reads, each, row_out
from services.api.kit.schemas import DeletedOut
from services.api.suppressions import service
from services.api.suppressions.repository import SuppressionRepository
from services.api.suppressions.schemas import SuppressionIn, SuppressionOut

router = APIRouter(tags=["suppressions"])

add_reads(router, "suppressions", "suppression", SuppressionRepository, SuppressionOut, each(row_out))


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
    async with unit_of_work(request, principal, SuppressionRepository) as repo:
        row, created = await service.add(repo, body)
    if not created:
        response.status_code = 200
    return {"data": row}


@router.delete("/suppressions/{suppression_id}", response_model=Envelope[DeletedOut])
async def delete_suppression(
    request: Request, principal: CurrentPrincipal, suppression_id: str
) -> dict[str, Any]:
    """Mail may go to the address again; a lead that unsubscribed or bounced stays so."""
    async with unit_of_work(request, principal, SuppressionRepository) as repo:
        return {"data": await service.delete(repo, suppression_id)}
