"""All SQL of OAuth2 connections, scoped to the workspace (`WorkspaceRepository`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.kit.repository import WorkspaceRepository
from shared.db.models import OAuthAccount, OAuthFlow, SendingDomain


class OAuthFlowRepository(WorkspaceRepository[OAuthFlow]):
    model = OAuthFlow
    noun = "OAuth2 connection"

    async def forget_expired(self, now: datetime) -> None:
        await self.session.execute(self.scoped_delete().where(OAuthFlow.expires_at <= now))


class OAuthAccountRepository(WorkspaceRepository[OAuthAccount]):
    model = OAuthAccount
    noun = "OAuth2 grant"

    async def of_domain(self, domain: SendingDomain) -> OAuthAccount | None:
        row: OAuthAccount | None = await self.session.scalar(
            self.scoped().where(OAuthAccount.sending_domain_id == domain.id).with_for_update()
        )
        return row


async def take_flow(session: AsyncSession, state_hash: str) -> OAuthFlow | None:
    """The connection a callback's `state` names, taken (deleted: a state works once), whatever its workspace:
    the callback has no token, the state is what proves it. Its workspace scopes all that follows."""
    flow: OAuthFlow | None = await session.scalar(
        select(OAuthFlow).where(OAuthFlow.state_hash == state_hash).with_for_update()
    )
    if flow is not None:
        await OAuthFlowRepository(session, flow.workspace_id).delete(flow)
    return flow
