"""All SQL of the sending domains and their mailboxes, scoped to the workspace (`WorkspaceRepository`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func
from sqlalchemy.orm import joinedload

from services.api.kit.repository import WorkspaceRepository
from shared.db import domain_health
from shared.db.message_store import on_session
from shared.db.models import MailboxAccount, Message, OAuthAccount, ProviderPace, SendingDomain
from shared.message_states import SLOT_HOLDING
from shared.reputation import Figures

# A change to these makes it another mailbox: its failures so far say nothing about it.
MAILBOX_CONNECTION = ("host", "port", "security", "username", "password_encrypted")


class MailboxRepository(WorkspaceRepository[MailboxAccount]):
    model = MailboxAccount
    noun = "mailbox"


class DomainRepository(WorkspaceRepository[SendingDomain]):
    model = SendingDomain
    noun = "sending domain"
    searched = (SendingDomain.domain, SendingDomain.from_email)

    def scoped(self, *columns: Any, model: type[Any] | None = None) -> Select[Any]:
        """A domain is read with its mailbox and OAuth2 grant, joined under the same workspace filter."""
        statement = super().scoped(*columns, model=model)
        if columns or (model or self.model) is not SendingDomain:
            return statement
        mailbox = SendingDomain.mailbox.and_(MailboxAccount.workspace_id == self.workspace_id)
        grant = SendingDomain.oauth.and_(OAuthAccount.workspace_id == self.workspace_id)
        return statement.options(joinedload(mailbox), joinedload(grant))

    async def named(self, names: list[str]) -> dict[str, SendingDomain]:
        """The workspace's domains among `names`, by name."""
        rows = await self.session.scalars(self.scoped().where(SendingDomain.domain.in_(names)))
        return {row.domain: row for row in rows}

    async def save_mailbox(self, domain: SendingDomain, values: dict[str, Any]) -> None:
        """Create or replace the domain's mailbox (without `password_encrypted`: the stored one stays)."""
        mailboxes = self.sibling(MailboxRepository)
        if domain.mailbox is None:
            await mailboxes.add(MailboxAccount(sending_domain_id=domain.id, **values))
            return
        stored = domain.mailbox
        if any(name in values and values[name] != getattr(stored, name) for name in MAILBOX_CONNECTION):
            values = {**values, "failures": 0, "last_error": None, "last_error_at": None}
        await mailboxes.change(domain.mailbox, values)

    async def paces(self, domain: SendingDomain) -> list[ProviderPace]:
        """The domain's paces towards receiving providers, eased back or not."""
        rows = await self.session.scalars(
            self.scoped(model=ProviderPace).where(ProviderPace.sending_domain_id == domain.id)
        )
        return list(rows)

    async def day_counts(self, domain: SendingDomain, start: datetime, end: datetime) -> tuple[int, int]:
        """The domain's e-mails with slots in [start, end), all campaigns (what a daily cap counts), and how
        many of them were sent."""
        row = (
            await self.session.execute(
                self.scoped(func.count(), func.count(Message.sent_at), model=Message).where(
                    Message.sending_domain_id == domain.id,
                    Message.status.in_(SLOT_HOLDING),
                    Message.scheduled_at >= start,
                    Message.scheduled_at < end,
                )
            )
        ).one()
        return row[0], row[1]

    async def delete_mailbox(self, domain: SendingDomain) -> None:
        """Its checkpoints and processed mails go with it (ON DELETE CASCADE)."""
        if domain.mailbox is not None:
            await self.sibling(MailboxRepository).delete(domain.mailbox)

    async def figures(self, rows: list[SendingDomain], now: datetime) -> dict[uuid.UUID, Figures]:
        """The health figures of these domains (read in the workspace) at `now`."""
        if not rows:
            return {}
        return await domain_health.figures(on_session(self.session), [row.id for row in rows], now)

    async def resume(self, row: SendingDomain, now: datetime) -> bool:
        """A paused domain (read in the workspace) active again, `DomainResumed` in the outbox. False: it
        was not paused."""
        return await domain_health.resume(on_session(self.session), row.id, row.workspace_id, row.domain, now)
