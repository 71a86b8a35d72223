"""Deliver one `SendMessage`: claim, render, MAIL FROM (commit); RCPT, DATA; settle (commit). At most once."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

import asyncpg
import structlog
from prometheus_client import Counter

from services.sender import repository as repo
from services.sender.outcome import Kind, Outcome
from services.sender.repository import Claim
from services.sender.smtp import Account, SmtpPool, SmtpTransaction
from shared import crypto, tokens
from shared.clock import Clock
from shared.db.models import MessageStatus
from shared.events import Event, MessageBounced, MessageFailed, MessageSent, SendMessage
from shared.planning.slots import retry_not_before, send_grace
from shared.planning.window import Window
from shared.render import Letter, RenderError, build, lead_variables, return_path
from shared.settings import Settings

log = structlog.get_logger()


@dataclass
class Attempt:
    """A claimed message ready for its SMTP transaction (or failed already: its template cannot render)."""

    message: Claim
    email: bytes | None  # as it goes on the wire
    failure: Outcome | None
    transaction: SmtpTransaction
    notes: dict[str, str]  # recorded with the outcome, e.g. whether a report was attached
    throttled: bool  # the domain has an interval: this transaction holds its turn


OUTCOMES = Counter("maildash_sender_outcomes_total", "SMTP attempts by outcome", ["outcome"])


def followup_subject(message: Claim) -> str:
    """The template's follow-up subject, else `Re: <original subject>` so the reply threads."""
    return message.followup_subject or f"Re: {message.subject}"


class Sender:
    """Open with `async with`: a pool of database connections (one per concurrent attempt at most)."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self._slots = asyncio.Semaphore(settings.sender_concurrency)
        self._smtp = SmtpPool(
            settings.smtp_timeout_seconds, settings.smtp_ca_file, allow_private=settings.private_hosts_allowed
        )
        self._pool: asyncpg.Pool | None = None

    async def __aenter__(self) -> Sender:
        self._pool = await repo.connect_pool(self._settings.database_url, self._settings.sender_concurrency)
        return self

    async def __aexit__(self, *_: object) -> None:
        """Log out of the idle SMTP sessions; close the database connections."""
        await self._smtp.close()
        if self._pool is not None:
            await self._pool.close()

    @property
    def _db(self) -> asyncpg.Pool:
        assert self._pool is not None, "use the sender as `async with Sender(...)`"
        return self._pool

    async def handle(self, command: SendMessage) -> None:
        async with self._slots:
            await self._handle(command)

    async def _handle(self, command: SendMessage) -> None:
        """Claim → begin the SMTP transaction → commit the claim → RCPT/DATA → record the outcome.

        The claim transaction share-locks the campaign until the server accepted MAIL FROM, so `pause` and
        `stop` return only once every transaction that will ever start for the campaign has started."""
        attempt = None
        try:
            async with self._db.acquire() as db, db.transaction():
                attempt = await self._claim(db, command)
                if attempt is None:
                    return
                sender = return_path(str(attempt.message.id), attempt.message.domain_used)
                outcome = attempt.failure or await attempt.transaction.begin(sender)
                if outcome is None and attempt.throttled:
                    # The domain's last send is when its server accepted MAIL FROM: what the next turn counts
                    # from. The row is still locked by this claim.
                    await repo.mark_domain_send(db, attempt.message.sending_domain_id, self._clock())
        except BaseException:
            if attempt is not None:
                await attempt.transaction.abandon()
            raise
        # Committed as `sending`: from here a crash leaves it to the reconciler (`interrupted`).
        if outcome is None and attempt.email is not None:
            outcome = await attempt.transaction.finish(attempt.message.email, attempt.email)
        assert outcome is not None
        await self._settle_surely(attempt, outcome)

    async def _settle_surely(self, attempt: Attempt, outcome: Outcome) -> None:
        """The server has answered: record it, retrying while the database is away (recording is guarded,
        so a retry never counts twice). Giving up would leave a delivered e-mail to be marked interrupted."""
        delay, deadline = 0.5, None
        while True:
            try:
                await self._settle(attempt.message, outcome, attempt.notes)
                return
            except repo.TRANSIENT as error:
                now = asyncio.get_running_loop().time()
                deadline = deadline or now + self._settings.sending_lease_seconds / 2
                if now + delay > deadline:
                    raise
                log.warning("sender.settle.retry", message_id=str(attempt.message.id), error=str(error)[:200])
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _claim(self, db: asyncpg.Connection, command: SendMessage) -> Attempt | None:
        if self._clock() > command.deadline:
            await repo.release_late(db, command.message_id)
            log.info("sender.message.late", message_id=str(command.message_id))
            return None
        message = await repo.claim(db, command.message_id, command.campaign_id, self._clock())
        if message is None:
            # A duplicate, or the campaign is paused or stopped: the scheduler takes the command back.
            log.info("sender.message.skipped", message_id=str(command.message_id))
            return None
        if not message.may_receive:
            await repo.cancel(db, message, f"lead is {message.lead_status} or suppressed")
            return None
        gap = timedelta(seconds=message.min_interval_seconds) - send_grace(
            message.min_interval_seconds, self._settings.send_grace_seconds
        )
        if not_before := await repo.take_domain_turn(db, message.sending_domain_id, self._clock(), gap):
            await repo.defer(db, message.id, not_before)
            log.warning(
                "sender.message.deferred", message_id=str(message.id), not_before=not_before.isoformat()
            )
            return None
        letter = self._letter(message)
        notes: dict[str, str] = {}
        if message.is_followup and message.followup_attach_report:
            report = await repo.report_of(db, message.lead_id)
            letter = dataclasses.replace(letter, attachment=report)
            notes["report"] = "attached" if report else "none: the lead has no report"
        email, failure = None, None
        try:
            email = build(letter, self._clock())
        except RenderError as error:
            failure = Outcome(Kind.FAILED, str(error), retryable=False)
        password = message.smtp_password_encrypted
        account = Account(
            message.smtp_host,
            message.smtp_port,
            message.smtp_username,
            crypto.decrypt(self._settings.encryption_key, password) if password else None,
            message.smtp_security,
        )
        transaction = self._smtp.transaction(account)
        return Attempt(message, email, failure, transaction, notes, throttled=gap > timedelta(0))

    def _letter(self, message: Claim) -> Letter:
        secret = self._settings.tracking_secret
        followup = message.is_followup
        return Letter(
            message_id=str(message.id),
            domain=message.domain,
            from_email=message.from_email,
            from_name=message.from_name,
            to_email=message.email,
            subject=followup_subject(message) if followup else message.subject,
            body_html=(message.followup_body_html or message.body_html) if followup else message.body_html,
            body_text=None if followup and message.followup_body_html else message.body_text,
            variables=lead_variables(message, message.from_name),
            tracker_url=self._settings.public_tracker_url.rstrip("/"),
            open_token=tokens.sign_message(secret, "open", str(message.id)) if message.track_opens else None,
            click_signer=partial(tokens.sign_message, secret, "click", str(message.id))
            if message.track_clicks
            else None,
            unsubscribe_token=tokens.sign_message(secret, "unsubscribe", str(message.id)),
            smtp_message_id=message.smtp_message_id,
            in_reply_to=message.parent_smtp_message_id if followup else None,
        )

    async def _settle(self, message: Claim, outcome: Outcome, notes: dict[str, str]) -> None:
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
        if retry_at is not None:
            data["retry_at"] = retry_at.isoformat()
        event: Event
        if outcome.kind == Kind.SENT:
            event = MessageSent(**ids, sent_at=now, smtp_message_id=message.smtp_message_id)
        elif outcome.kind == Kind.BOUNCED:
            event = MessageBounced(**ids, **codes)
        else:
            event = MessageFailed(**ids, **codes, retry_at=retry_at)
        day = Window.from_dict(message.window).local_date(now)
        async with self._db.acquire() as db:
            await repo.settle(
                db, message, MessageStatus(outcome.kind.value), now, day, outcome.reason or None, data, event,
                retry_at,
            )  # fmt: skip
        OUTCOMES.labels(outcome.kind.value).inc()
        log.info(
            f"sender.message.{outcome.kind.value}",
            message_id=str(message.id),
            reason=outcome.reason or None,
            retry_at=retry_at.isoformat() if retry_at else None,
        )
