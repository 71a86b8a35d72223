"""Use cases of leads and their reports. An address is a lead's identity within its workspace; a lead with
mail still planned is not deleted."""

from __future__ import annotations

from typing import Any

from services.api.kit.envelope import ApiError, conflict, invalid
from services.api.kit.reads import row_out
from services.api.leads.repository import LeadRepository
from services.api.leads.schemas import LeadIn, LeadPatch
from shared.db.models import Lead


async def create(repo: LeadRepository, body: LeadIn) -> dict[str, Any]:
    if await repo.by_email(str(body.email)):
        raise conflict(f"a lead with e-mail {body.email} already exists")
    return row_out(await repo.add(Lead(**body.model_dump(mode="json"))))


async def update(repo: LeadRepository, raw_id: str, body: LeadPatch) -> dict[str, Any]:
    """Messages already planned go to the lead's address as it is when they are sent."""
    changes = body.changes()
    row = await repo.require(raw_id)
    email = changes.get("email")
    if email and email.lower() != row.email.lower() and await repo.by_email(email):
        raise conflict(f"a lead with e-mail {email} already exists")
    return row_out(await repo.change(row, changes))


async def delete(repo: LeadRepository, raw_id: str) -> dict[str, Any]:
    """Erases the lead with its message history; refused while a campaign still has mail for it."""
    row = await repo.require(raw_id)
    if await repo.has_unfinished_mail(row):
        raise conflict("a campaign still has mail planned for this lead; stop it or wait until it is sent")
    await repo.delete(row)
    return {"id": str(row.id), "deleted": True}


def check_report(content: bytes, most: int) -> None:
    """A report is a PDF of at most `most` bytes (`content` is read up to one byte more)."""
    if len(content) > most:
        raise ApiError(413, "payload_too_large", f"a report may be at most {most:,} bytes")
    if not content.startswith(b"%PDF-"):
        raise invalid("the report must be a PDF file", ["body", "file"])


async def store_report(repo: LeadRepository, raw_id: str, filename: str, content: bytes) -> dict[str, Any]:
    lead = await repo.require(raw_id)
    uploaded_at = await repo.store_report(lead, filename, content)
    return {"lead_id": str(lead.id), "filename": filename, "size": len(content), "uploaded_at": uploaded_at}
