"""What campaigns keep from being deleted: a domain or template that any campaign names."""

from __future__ import annotations

from typing import Any

from services.api.campaigns.repository import CampaignRepository
from services.api.kit.envelope import conflict
from services.api.kit.repository import WorkspaceRepository
from shared.lifecycle import FINAL


async def refuse_if_used(repo: WorkspaceRepository[Any], what: str, *where: Any) -> None:
    """409 when a campaign matching `where` names `what`: unfinished ones are to be stopped first; finished
    ones keep it for their history."""
    using = await repo.sibling(CampaignRepository).using(*where)
    live = [name for name, status in using if status not in FINAL]
    if live:
        raise conflict(f"{what} is used by unfinished campaigns ({', '.join(live)}); stop them first")
    if using:
        raise conflict(
            f"{what} is kept for the history of finished campaigns ({', '.join(n for n, _ in using)})"
        )
