"""Deliver one `SendMessage`: claim, render, MAIL FROM (commit); RCPT, DATA; settle (commit). At most once."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from functools import partial

import structlog
from prometheus_client import Counter
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.sender import repository as repo
from services.sender.outcome import Kind, Outcome
from services.sender.smtp import Account, SmtpPool, SmtpTransaction
from shared import crypto, tokens
from shared.clock import Clock
from shared.db.messages import hard_bounce_lead
from shared.db.models import Campaign, Lead, Message, MessageStatus, SendingDomain, Template
from shared.events import Event, MessageBounced, MessageFailed, MessageSent, SendMessage
from shared.messaging import enqueue
from shared.planning.slots import retry_not_before, send_grace
from shared.planning.window import Window
from shared.render import Letter, RenderError, build, lead_variables, return_path
from shared.settings import Settings

log = structlog.get_logger()


@dataclass
class Attempt:
    """A claimed message ready for its SMTP transaction (or failed already: its template cannot render)."""

    message: Message
    lead: Lead
    campaign: Campaign
    smtp_id: str
    email: EmailMessage | None
    failure: Outcome | None
    transaction: SmtpTransaction
    notes: dict[str, str]  # recorded with the outcome, e.g. whether a report was attached
    throttled: bool  # the domain has an interval: this transaction holds its turn


OUTCOMES = Counter("maildash_sender_outcomes_total", "SMTP attempts by outcome", ["outcome"])


def followup_subject(template: Template) -> str:
    """The template's follow-up subject, else `Re: <original subject>` so the reply threads."""
    return template.followup_subject or f"Re: {template.subject}"


class Sender:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings, clock: Clock) -> None:
        self._sessions = sessions
        self._settings = settings
        self._clock = clock
        self._slots = asyncio.Semaphore(settings.sender_concurrency)
        self._smtp = SmtpPool(settings.smtp_timeout_seconds, settings.smtp_ca_file)

    async def close(self) -> None:
        """Log out of the idle SMTP sessions."""
        await self._smtp.close()

    async def handle(self, command: SendMessage) -> None:
        async with self._slots:
            await self._handle(command)

    async def _handle(self, command: SendMessage) -> None:
        """Claim → begin the SMTP transaction → commit the claim → RCPT/DATA → record the outcome.

        The claim transaction share-locks the campaign until the server accepted MAIL FROM, so `pause` and
        `stop` return only once every transaction that will ever start for the campaign has started."""
        attempt = None
        try:
            async with self._sessions() as session, session.begin():
                attempt = await self._claim(session, command)
                if attempt is None:
                    return
                sender = return_path(str(attempt.message.id), attempt.message.domain_used)
                outcome = attempt.failure or await attempt.transaction.begin(sender)
                if outcome is None and attempt.throttled:
                    # The domain's last send is when its server accepted MAIL FROM: what the next turn counts
                    # from. The row is still locked by this claim.
                    await repo.mark_domain_send(session, attempt.message.sending_domain_id, self._clock())
        except BaseException:
            if attempt is not None:
                await attempt.transaction.abandon()
            raise
        # Committed as `sending`: from here a crash leaves it to the reconciler (`interrupted`).
        if outcome is None and attempt.email is not None:
            outcome = await attempt.transaction.finish(attempt.lead.email, attempt.email)
        assert outcome is not None
        window = Window.from_dict(attempt.campaign.window)
        await self._settle_surely(attempt, window, outcome)

    async def _settle_surely(self, attempt: Attempt, window: Window, outcome: Outcome) -> None:
        """The server has answered: record it, retrying while the database is away (recording is guarded,
        so a retry never counts twice). Giving up would leave a delivered e-mail to be marked interrupted."""
        delay, deadline = 0.5, asyncio.get_running_loop().time() + self._settings.sending_lease_seconds / 2
        while True:
            try:
                await self._settle(
                    attempt.message, window, attempt.lead, outcome, attempt.smtp_id, attempt.notes
                )
                return
            except (OSError, SQLAlchemyError) as error:
                if asyncio.get_running_loop().time() + delay > deadline:
                    raise
                log.warning("sender.settle.retry", message_id=str(attempt.message.id), error=str(error)[:200])
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _claim(self, session: AsyncSession, command: SendMessage) -> Attempt | None:
        if self._clock() > command.deadline:
            await repo.release_late(session, command.message_id)
            log.info("sender.message.late", message_id=str(command.message_id))
            return None
        if not await repo.campaign_is_active(session, command.campaign_id):
            return None  # paused or stopped: the scheduler takes the command back
        message = await repo.claim(session, command.message_id, self._clock())
        if message is None:
            log.info("sender.message.skipped", message_id=str(command.message_id))
            return None
        lead, template, domain, campaign, parent_smtp_id = await repo.context(session, message)
        if not repo.may_receive(lead, message.is_followup) or await repo.is_suppressed(
            session, lead.workspace_id, lead.email
        ):
            await repo.cancel(session, message, f"lead is {lead.status} or suppressed")
            return None
        gap = timedelta(seconds=domain.min_interval_seconds) - send_grace(
            domain.min_interval_seconds, self._settings.send_grace_seconds
        )
        if (not_before := await repo.take_domain_turn(session, domain.id, self._clock(), gap)) is not None:
            await repo.defer(session, message.id, not_before)
            log.warning(
                "sender.message.deferred", message_id=str(message.id), not_before=not_before.isoformat()
            )
            return None
        smtp_id = f"<{message.id}.{message.retry_count}@{domain.domain}>"
        await repo.set_smtp_message_id(session, message.id, smtp_id)
        letter = self._letter(
            message,
            lead,
            template,
            domain,
            campaign.track_opens,
            campaign.track_clicks,
            smtp_id,
            parent_smtp_id,
        )
        notes: dict[str, str] = {}
        if message.is_followup and campaign.followup_attach_report:
            report = await repo.report_of(session, lead.id)
            letter = dataclasses.replace(letter, attachment=report)
            notes["report"] = "attached" if report else "none: the lead has no report"
        email, failure = None, None
        try:
            email = build(letter, self._clock())
        except RenderError as error:
            failure = Outcome(Kind.FAILED, str(error), retryable=False)
        password = domain.smtp_password_encrypted
        account = Account(
            domain.smtp_host,
            domain.smtp_port,
            domain.smtp_username,
            crypto.decrypt(self._settings.encryption_key, password) if password else None,
            domain.smtp_security,
        )
        transaction = self._smtp.transaction(account)
        throttled = gap > timedelta(0)
        return Attempt(message, lead, campaign, smtp_id, email, failure, transaction, notes, throttled)

    def _letter(
        self,
        message: Message,
        lead: Lead,
        template: Template,
        domain: SendingDomain,
        track_opens: bool,
        track_clicks: bool,
        smtp_id: str,
        parent_smtp_id: str | None,
    ) -> Letter:
        secret = self._settings.tracking_secret
        return Letter(
            message_id=str(message.id),
            domain=domain.domain,
            from_email=domain.from_email,
            from_name=domain.from_name,
            to_email=lead.email,
            subject=followup_subject(template) if message.is_followup else template.subject,
            body_html=(template.followup_body_html or template.body_html)
            if message.is_followup
            else template.body_html,
            body_text=None if message.is_followup and template.followup_body_html else template.body_text,
            variables=lead_variables(lead, domain.from_name),
            tracker_url=self._settings.public_tracker_url.rstrip("/"),
            open_token=tokens.sign_message(secret, "open", str(message.id)) if track_opens else None,
            click_signer=partial(tokens.sign_message, secret, "click", str(message.id))
            if track_clicks
            else None,
            unsubscribe_token=tokens.sign_message(secret, "unsubscribe", str(message.id)),
            smtp_message_id=smtp_id,
            in_reply_to=parent_smtp_id if message.is_followup else None,
        )

    async def _settle(
        self,
        message: Message,
        window: Window,
        lead: Lead,
        outcome: Outcome,
        smtp_id: str,
        notes: dict[str, str],
    ) -> None:
        now = self._clock()
        data = {
            "smtp_code": outcome.smtp_code,
            "enhanced_code": outcome.enhanced_code,
            "reason": outcome.reason,
            **notes,
        }
        ids = {
            "workspace_id": message.workspace_id,
            "message_id": message.id,
            "campaign_id": message.campaign_id,
            "lead_id": message.lead_id,
        }
        codes = {
            "reason": outcome.reason,
            "smtp_code": outcome.smtp_code,
            "enhanced_code": outcome.enhanced_code,
        }
        retry_at = None
        if outcome.kind == Kind.FAILED and outcome.retryable:
            retry_at = retry_not_before(message.retry_count, now, self._settings.retry_backoff_seconds)
        async with self._sessions() as session, session.begin():
            event: Event
            if outcome.kind == Kind.SENT:
                event = MessageSent(**ids, sent_at=now, smtp_message_id=smtp_id)
                settled = await repo.settle(
                    session, message, MessageStatus.SENT, now, window.local_date(now), None, data
                )
            elif outcome.kind == Kind.BOUNCED:
                event = MessageBounced(**ids, **codes)
                settled = await repo.settle(
                    session, message, MessageStatus.BOUNCED, now, window.local_date(now), outcome.reason, data
                )
                if settled:
                    await hard_bounce_lead(session, lead.id, lead.workspace_id, lead.email, outcome.reason)
            elif retry_at is not None:
                event = MessageFailed(**ids, **codes, retry_at=retry_at)
                settled = await repo.plan_retry(session, message, now, retry_at, outcome.reason, data)
            else:
                event = MessageFailed(**ids, **codes)
                settled = await repo.settle(
                    session, message, MessageStatus.FAILED, now, window.local_date(now), outcome.reason, data
                )
            if settled:
                await enqueue(session, event)
        OUTCOMES.labels(outcome.kind.value).inc()
        log.info(
            f"sender.message.{outcome.kind.value}",
            message_id=str(message.id),
            reason=outcome.reason or None,
            retry_at=retry_at.isoformat() if retry_at else None,
        )
