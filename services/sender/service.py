"""Deliver one `SendMessage`: claim (commit) → render → SMTP → settle (commit). At most once per attempt."""

from __future__ import annotations

import asyncio

import structlog
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.sender import repository as repo
from services.sender.outcome import Kind, Outcome
from services.sender.render import Letter, RenderError, build, return_path
from services.sender.smtp import Account, deliver
from shared import crypto, tokens
from shared.clock import Clock
from shared.db.models import Lead, Message, MessageStatus, SendingDomain, Template
from shared.events import Event, MessageBounced, MessageFailed, MessageSent, SendMessage
from shared.messaging import enqueue
from shared.planning.window import Window
from shared.settings import Settings

log = structlog.get_logger()
OUTCOMES = Counter("maildash_sender_outcomes_total", "SMTP attempts by outcome", ["outcome"])


class Sender:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings, clock: Clock) -> None:
        self._sessions = sessions
        self._settings = settings
        self._clock = clock
        self._slots = asyncio.Semaphore(settings.sender_concurrency)

    async def handle(self, command: SendMessage) -> None:
        async with self._slots:
            await self._handle(command)

    async def _handle(self, command: SendMessage) -> None:
        async with self._sessions() as session, session.begin():
            if self._clock() > command.deadline:
                await repo.release_late(session, command.message_id)
                log.info("sender.message.late", message_id=str(command.message_id))
                return
            message = await repo.claim(session, command.message_id, self._clock())
            if message is None:
                log.info("sender.message.skipped", message_id=str(command.message_id))
                return
            lead, template, domain, campaign = await repo.context(session, message)
            smtp_message_id = f"<{message.id}.{message.retry_count}@{domain.domain}>"
            await repo.set_smtp_message_id(session, message.id, smtp_message_id)
        # Committed as `sending`: from here a crash leaves it to the reconciler (`interrupted`).
        letter = self._letter(message, lead, template, domain, campaign.track_opens, smtp_message_id)
        try:
            email = build(letter, self._clock())
        except RenderError as error:
            outcome = Outcome(Kind.FAILED, str(error))
        else:
            account = Account(
                domain.smtp_host,
                domain.smtp_port,
                domain.smtp_username,
                crypto.decrypt(self._settings.encryption_key, domain.smtp_password_encrypted)
                if domain.smtp_password_encrypted
                else None,
                domain.smtp_security,
            )
            sender = return_path(str(message.id), domain.domain)
            outcome = await deliver(account, email, sender, lead.email, self._settings.smtp_timeout_seconds)
        await self._settle(message, lead, Window.from_dict(campaign.window), outcome, smtp_message_id)

    def _letter(
        self,
        message: Message,
        lead: Lead,
        template: Template,
        domain: SendingDomain,
        track_opens: bool,
        smtp_id: str,
    ) -> Letter:
        secret = self._settings.tracking_secret
        variables = {
            "first_name": lead.first_name,
            "last_name": lead.last_name,
            "email": lead.email,
            "company": lead.company,
            "fields": lead.fields,
            "sender_name": domain.from_name,
        }
        return Letter(
            message_id=str(message.id),
            domain=domain.domain,
            from_email=domain.from_email,
            from_name=domain.from_name,
            to_email=lead.email,
            subject=template.subject,
            body_html=template.body_html,
            body_text=template.body_text,
            variables=variables,
            tracker_url=self._settings.public_tracker_url.rstrip("/"),
            open_token=tokens.sign_message(secret, "open", str(message.id)) if track_opens else None,
            unsubscribe_token=tokens.sign_message(secret, "unsubscribe", str(message.id)),
            smtp_message_id=smtp_id,
        )

    async def _settle(
        self, message: Message, lead: Lead, window: Window, outcome: Outcome, smtp_id: str
    ) -> None:
        now = self._clock()
        status = {
            Kind.SENT: MessageStatus.SENT,
            Kind.BOUNCED: MessageStatus.BOUNCED,
            Kind.FAILED: MessageStatus.FAILED,
        }[outcome.kind]
        data = {
            "smtp_code": outcome.smtp_code,
            "enhanced_code": outcome.enhanced_code,
            "reason": outcome.reason,
        }
        ids = {
            "workspace_id": message.workspace_id,
            "message_id": message.id,
            "campaign_id": message.campaign_id,
        }
        event: Event
        if outcome.kind == Kind.SENT:
            event = MessageSent(**ids, sent_at=now, smtp_message_id=smtp_id)
        elif outcome.kind == Kind.BOUNCED:
            event = MessageBounced(
                **ids, reason=outcome.reason, smtp_code=outcome.smtp_code, enhanced_code=outcome.enhanced_code
            )
        else:
            event = MessageFailed(
                **ids, reason=outcome.reason, smtp_code=outcome.smtp_code, enhanced_code=outcome.enhanced_code
            )
        async with self._sessions() as session, session.begin():
            if not await repo.settle(
                session, message, status, now, window.local_date(now), outcome.reason or None, data
            ):
                return
            if outcome.kind == Kind.BOUNCED:
                await repo.hard_bounce_lead(session, lead, outcome.reason)
            await enqueue(session, event)
        OUTCOMES.labels(outcome.kind.value).inc()
        log.info(
            "sender.message." + outcome.kind.value, message_id=str(message.id), reason=outcome.reason or None
        )
