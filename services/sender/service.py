"""Deliver one `SendMessage`: claim, render, MAIL FROM (commit); RCPT, DATA; settle (commit). At most once.

Whatever goes wrong with one message ends that message, never the command's delivery: a cause in its data
(a template over its limits, content an e-mail cannot carry, a password the key cannot decrypt) fails it
with the reason, a database that went away leaves it to be re-planned. Redelivering the command could only
fail the same way until it dead-letters, leaving the message `dispatched` and its campaign unfinished.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg
import structlog
from opentelemetry.trace import Span, SpanKind
from prometheus_client import Counter, Histogram

from services.sender import repository as repo
from services.sender.outcome import Fault, Kind, Outcome, health_signal
from services.sender.repository import Claim
from services.sender.smtp import Account, SmtpPool, SmtpTransaction
from shared import crypto, dkim, tokens
from shared.clock import Clock
from shared.db import TRANSIENT as DATABASE_AWAY
from shared.db import domain_health, message_store
from shared.events import Event, MessageBounced, MessageFailed, MessageSent, SendMessage
from shared.oauth_tokens import Access, NeedsReauth, TokenSource, TokenUnavailable
from shared.planning.slots import rejection_not_before, retry_not_before, send_grace
from shared.planning.window import Window
from shared.render import Letter, RenderError, lead_variables, return_path
from shared.render_pool import RendererUnavailable, RenderPool
from shared.settings import Settings
from shared.tracing import TRACER

log = structlog.get_logger()


# The database went away or chose us as a deadlock victim, or no render worker could start: nothing about the
# message. Its claim is rolled back, so it stays `dispatched` and the scheduler's reconciler re-plans it.
TRANSIENT = (*DATABASE_AWAY, RendererUnavailable)


@dataclass(frozen=True)
class Draft:
    """A message's e-mail as it goes on the wire, made before its claim; or why it cannot be made."""

    email: bytes | None
    failure: Outcome | None
    notes: dict[str, str]  # recorded with the outcome, e.g. whether a report was attached
    domain_id: uuid.UUID | None = None  # its sending domain
    access: Access | None = None  # the domain's OAuth2 login, when it has a grant


@dataclass
class Attempt:
    """A claimed message ready for its SMTP transaction, or failed already (`failure`: it cannot be made)."""

    message: Claim
    email: bytes | None  # as it goes on the wire
    failure: Outcome | None
    transaction: SmtpTransaction | None
    notes: dict[str, str]  # recorded with the outcome, e.g. whether a report was attached
    throttled: bool = False  # the domain has an interval: this transaction holds its turn
    paced: bool = False  # the provider slowed the domain down: this transaction holds its turn towards it
    claimed_at: datetime | None = None  # when its claim was made: a deferral of it answers what came before


# By sending domain (a workspace has a handful), never by lead or message.
OUTCOMES = Counter("maildash_sender_outcomes_total", "SMTP attempts by outcome", ["domain", "outcome"])
LATENESS = Histogram(
    "maildash_sender_slot_lateness_seconds",
    "When an SMTP transaction began, after its slot",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)


def followup_subject(message: Claim) -> str:
    """A step's subject: its template's follow-up subject, else `Re: <the campaign's subject>` so it
    threads."""
    return message.followup_subject or f"Re: {message.first_subject}"


class Sender:
    """Open with `async with`: a pool of database connections (one per concurrent attempt at most) and the
    render workers that make the e-mails."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self._templates = RenderPool.from_settings(settings)
        self._slots = asyncio.Semaphore(settings.sender_concurrency)
        self._smtp = SmtpPool(
            settings.smtp_timeout_seconds, settings.smtp_ca_file, allow_private=settings.private_hosts_allowed
        )
        self._tokens = TokenSource(settings, clock)
        self._pool: asyncpg.Pool | None = None
        self._completing: set[asyncio.Task[None]] = set()  # claimed transactions being finished and recorded

    async def __aenter__(self) -> Sender:
        self._pool = await repo.connect_pool(self._settings.database_url, self._settings.sender_concurrency)
        await self._templates.__aenter__()
        await self._tokens.__aenter__()
        return self

    async def __aexit__(self, *_: object) -> None:
        """Finish the transactions under way; log out of the idle SMTP sessions; close the database
        connections; stop the render workers."""
        try:
            await asyncio.gather(*self._completing, return_exceptions=True)
            await self._smtp.close()
            await self._tokens.__aexit__()
            if self._pool is not None:
                await self._pool.close()
        finally:
            await self._templates.__aexit__()

    @property
    def _db(self) -> asyncpg.Pool:
        assert self._pool is not None, "use the sender as `async with Sender(...)`"
        return self._pool

    async def handle(self, command: SendMessage) -> None:
        async with self._slots:
            await self._handle(command)

    async def _handle(self, command: SendMessage) -> None:
        """Make the e-mail → claim → begin the SMTP transaction → commit the claim → RCPT/DATA → record.

        The claim transaction share-locks the campaign until the server accepted MAIL FROM, so `pause` and
        `stop` return only once every transaction that will ever start for the campaign has started. So the
        e-mail is made before it, from the message as it is then: a template may take seconds to render,
        and a lock held that long would keep a pause or stop of its campaign waiting."""
        if self._clock() > command.deadline:
            async with self._db.acquire() as db:
                await repo.release_late(db, command.message_id)
            log.info("sender.message.late", message_id=str(command.message_id))
            return
        try:
            begun = await self._begun(command)
        except TRANSIENT as error:
            _unclaimed(command, error)
            return
        if begun is None:
            return
        attempt, outcome = begun
        # Committed as `sending`: from here a crash leaves it to the reconciler (`interrupted`). Anything less
        # must not stop the transaction half-way: when the broker's channel closes, the client throws into the
        # command's handler, though finishing and recording the e-mail needs only SMTP and PostgreSQL.
        completion = asyncio.ensure_future(self._complete(attempt, outcome))
        self._completing.add(completion)
        completion.add_done_callback(self._completing.discard)
        await asyncio.shield(completion)

    async def _begun(self, command: SendMessage) -> tuple[Attempt, Outcome | None] | None:
        """The message's e-mail made, its claim made and its SMTP transaction begun (None: nothing to do).
        A refused OAuth2 token gets one forced refresh and one retry; a fresh token refused too, and the grant
        needs a person: its domain is paused, and the claim releases the message."""
        draft = await self._draft(command)
        if draft is None:
            return None
        begun = await self._claim_and_begin(command, draft)
        if isinstance(begun, _TokenRejected):
            access, failure = await self._login_of(draft.domain_id, rejected=begun.token)
            draft = dataclasses.replace(draft, access=access, failure=failure)
            begun = await self._claim_and_begin(command, draft)
        if isinstance(begun, _TokenRejected):
            assert draft.domain_id is not None, "a token was used, so the domain has a grant"
            await self._tokens.refuse(draft.domain_id, "the SMTP server refused a freshly refreshed token")
            begun = await self._claim_and_begin(command, draft)
        return None if isinstance(begun, _TokenRejected) else begun

    async def _claim_and_begin(
        self, command: SendMessage, draft: Draft
    ) -> tuple[Attempt, Outcome | None] | _TokenRejected | None:
        """Claim the message and begin its SMTP transaction, in one transaction: the claim with the outcome
        of MAIL FROM (None: accepted). None: nothing to do; `_TokenRejected`: the server refused the access
        token, and the claim was rolled back (nothing was sent, and no turn of the domain taken)."""
        attempt = None
        try:
            async with self._db.acquire() as db, db.transaction():
                attempt = await self._claim(db, command, draft)
                if attempt is None:
                    return None
                outcome = attempt.failure or await self._begin(attempt, command.scheduled_at)
                if outcome is not None and draft.access is not None and _token_refused(outcome):
                    raise _TokenRejected(draft.access.token)
                if outcome is None and attempt.throttled:
                    # The domain's last send is when its server accepted MAIL FROM: what the next turn counts
                    # from. The row is still locked by this claim.
                    await repo.mark_domain_send(db, attempt.message.sending_domain_id, self._clock())
                if outcome is None and attempt.paced:  # so is the pace's, towards the provider
                    await repo.mark_provider_send(db, attempt.message, self._clock())
        except _TokenRejected as rejected:
            log.info("sender.smtp.token_refused", message_id=str(command.message_id))
            return rejected
        except BaseException as error:
            if attempt is not None and attempt.transaction is not None:
                await attempt.transaction.abandon()
            if not isinstance(error, TRANSIENT):
                raise
            _unclaimed(command, error)
            if attempt is not None:  # the connection may have dropped at COMMIT, after the claim was made
                await self._give_back(attempt)
            return None
        return attempt, outcome

    async def _login_of(
        self, domain_id: uuid.UUID | None, rejected: str | None = None
    ) -> tuple[Access | None, Outcome | None]:
        """The OAuth2 login of a domain with a grant (`access`: None without one; refreshed first when due
        or `rejected`), or why there is none now (`failure`). A refused grant has paused its domain: the
        claim then releases the message, planned again, and nothing is lost."""
        assert domain_id is not None, "a draft names its domain"
        try:
            return await self._tokens.access(domain_id, rejected), None
        except NeedsReauth as error:
            await self._tokens.refuse(domain_id, str(error))  # paused, if a person resumed it meanwhile
            return None, Outcome(Kind.FAILED, f"OAuth2: {error}"[:1000], fault=Fault.AUTHENTICATION)
        except TokenUnavailable as error:  # like an unreachable server: enough of them pause the domain
            return None, Outcome(Kind.FAILED, str(error)[:1000], fault=Fault.CONNECTION)

    async def _give_back(self, attempt: Attempt) -> None:
        """A claim whose commit went unanswered, its e-mail never begun: once the database is back, planned
        again if the claim was made after all. Else it would wait, `sending`, for the reconciler to call it
        interrupted, though nothing was sent."""
        assert attempt.claimed_at is not None, "a claimed attempt knows when"
        delay, deadline = 0.5, asyncio.get_running_loop().time() + self._settings.sending_lease_seconds / 2
        while True:
            try:
                async with self._db.acquire() as db:
                    if await message_store.give_back(
                        db, attempt.message.id, attempt.claimed_at, self._clock()
                    ):
                        log.info("sender.message.given_back", message_id=str(attempt.message.id))
                    return
            except DATABASE_AWAY:
                if asyncio.get_running_loop().time() + delay > deadline:  # the reconciler's, then
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _complete(self, attempt: Attempt, outcome: Outcome | None) -> None:
        if outcome is None:
            outcome = await self._finish(attempt)
        await self._settle_surely(attempt, outcome)

    async def _begin(self, attempt: Attempt, slot: datetime) -> Outcome | None:
        """MAIL FROM; None when the server accepted it. Nothing has been sent yet whatever goes wrong."""
        assert attempt.transaction is not None, "a message that can be sent has its transaction"
        LATENESS.observe((self._clock() - slot).total_seconds())
        with _smtp_span("MAIL FROM", attempt) as span:
            try:
                outcome = await attempt.transaction.begin(
                    return_path(str(attempt.message.id), attempt.message.domain_used)
                )
            except Exception as error:  # the SMTP adapter answers every failure it knows as an outcome
                outcome = _unexpected("before MAIL FROM was accepted", error)
            span.set_attribute("maildash.outcome", outcome.kind.value if outcome else "accepted")
            return outcome

    async def _finish(self, attempt: Attempt) -> Outcome:
        """RCPT and DATA. Whether an unexpected error left the e-mail delivered is unknown: never retried."""
        assert attempt.transaction is not None, "begun, so it has its transaction"
        assert attempt.email is not None, "begun, so it has its e-mail"
        with _smtp_span("RCPT DATA", attempt) as span:
            try:
                outcome = await attempt.transaction.finish(attempt.message.email, attempt.email)
            except Exception as error:
                outcome = _unexpected("during RCPT or DATA", error)
            span.set_attribute("maildash.outcome", outcome.kind.value)
            return outcome

    async def _settle_surely(self, attempt: Attempt, outcome: Outcome) -> None:
        """The server has answered: record it, retrying while the database is away (recording is guarded,
        so a retry never counts twice). Giving up would leave a delivered e-mail to be marked interrupted."""
        delay, deadline = 0.5, None
        while True:
            try:
                await self._settle(attempt, outcome)
                return
            except DATABASE_AWAY as error:
                now = asyncio.get_running_loop().time()
                deadline = deadline or now + self._settings.sending_lease_seconds / 2
                if now + delay > deadline:
                    raise
                log.warning("sender.settle.retry", message_id=str(attempt.message.id), error=str(error)[:200])
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _draft(self, command: SendMessage) -> Draft | None:
        """The e-mail of the message as it is now (None: there is nothing to claim), made in a render worker
        with no database connection held; its failure when it cannot be made."""
        async with self._db.acquire() as db:
            message = await repo.peek(db, command.message_id, command.campaign_id)
            if message is None:
                _skipped(command)
                return None
            letter, notes = self._letter(message), {}
            if message.is_followup and message.attach_report:
                report = await repo.report_of(db, message.lead_id)
                letter = dataclasses.replace(letter, attachment=report)
                notes["report"] = "attached" if report else "none: the lead has no report"
        access, failure = (
            await self._login_of(message.sending_domain_id) if message.has_grant else (None, None)
        )
        try:
            wire = await self._templates.build(letter, self._clock())
            if (keys := self._dkim_keys(message)) is not None:
                # Last, after every header is in place; off the event loop (RSA signing takes a millisecond).
                wire = await asyncio.to_thread(dkim.sign, wire, message.domain, keys)
            return Draft(wire, failure, notes, message.sending_domain_id, access)
        except TRANSIENT:
            raise
        except RenderError as error:
            return Draft(None, Outcome(Kind.FAILED, str(error), retryable=False), notes)
        except Exception as error:
            return Draft(None, _unexpected("while its e-mail was made", error), notes)

    async def _claim(self, db: asyncpg.Connection, command: SendMessage, draft: Draft) -> Attempt | None:
        claimed_at = self._clock()
        message = await repo.claim(db, command.message_id, command.campaign_id, claimed_at)
        if message is None:
            if await repo.release_refused(db, command.message_id):
                log.info("sender.message.domain_paused", message_id=str(command.message_id))
            else:
                _skipped(command)
            return None
        if not message.may_receive:
            await repo.cancel(db, message, f"lead is {message.lead_status} or suppressed")
            return None
        if draft.failure is not None:  # no SMTP transaction: it takes no turn of the domain
            return Attempt(message, None, draft.failure, None, draft.notes, claimed_at=claimed_at)
        try:
            transaction = self._smtp.transaction(self._account(message, draft.access))
        except Exception as error:
            failure = _unexpected("before its SMTP transaction", error)
            return Attempt(message, None, failure, None, draft.notes, claimed_at=claimed_at)
        # A provider's slower pace first: its row is only locked here, so a turn it refuses takes nothing.
        rules, grace = self._settings.pace_rules, self._settings.send_grace_seconds
        paced = repo.slowed(message, rules, self._clock())
        if paced and (not_before := await repo.take_provider_turn(db, message, rules, self._clock(), grace)):
            await repo.defer(db, message.id, not_before)
            log.info(
                "sender.message.paced",
                message_id=str(message.id),
                provider=message.receiving_provider,
                not_before=not_before.isoformat(),
            )
            return None
        gap = timedelta(seconds=message.min_interval_seconds) - send_grace(
            message.min_interval_seconds, grace
        )
        if not_before := await repo.take_domain_turn(db, message.sending_domain_id, self._clock(), gap):
            await repo.defer(db, message.id, not_before)
            log.warning(
                "sender.message.deferred", message_id=str(message.id), not_before=not_before.isoformat()
            )
            return None
        throttled = gap > timedelta(0)
        return Attempt(message, draft.email, None, transaction, draft.notes, throttled, paced, claimed_at)

    def _account(self, message: Claim, access: Access | None) -> Account:
        if access is not None:
            return Account(
                message.smtp_host,
                message.smtp_port,
                access.email,
                None,
                message.smtp_security,
                access.token,
                grant=message.sending_domain_id,
            )
        password = message.smtp_password_encrypted
        return Account(
            message.smtp_host,
            message.smtp_port,
            message.smtp_username,
            crypto.decrypt(self._settings.encryption_key, password) if password else None,
            message.smtp_security,
        )

    def _dkim_keys(self, message: Claim) -> dkim.DkimKeys | None:
        if message.dkim_selector is None or message.dkim_rsa_private_encrypted is None:
            return None
        key, ed25519 = self._settings.encryption_key, message.dkim_ed25519_private_encrypted
        return dkim.DkimKeys(
            message.dkim_selector,
            crypto.decrypt(key, message.dkim_rsa_private_encrypted),
            crypto.decrypt(key, ed25519) if ed25519 else None,
        )

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
            click_secret=secret if message.track_clicks else None,
            unsubscribe_token=tokens.sign_message(secret, "unsubscribe", str(message.id)),
            smtp_message_id=message.smtp_message_id,
            in_reply_to=message.in_reply_to if followup else None,
            references=message.thread_references if followup else None,
            smtp_host=message.smtp_host,
        )

    async def _settle(self, attempt: Attempt, outcome: Outcome) -> None:
        message, notes, now = attempt.message, attempt.notes, self._clock()
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
        day = Window.from_dict(message.window).local_date(now)
        if outcome.kind == Kind.DEFERRED:
            assert attempt.claimed_at is not None, "a deferral answers an SMTP transaction, which was claimed"
            await self._deferred(message, outcome, data, day, now, attempt.claimed_at)
            return
        retry_at = None
        if outcome.kind == Kind.FAILED and outcome.retryable:
            retry_at = retry_not_before(message.retry_count, now, self._settings.retry_backoff_seconds)
        if retry_at is not None:
            data["retry_at"] = retry_at.isoformat()
        not_before = retry_at
        event: Event | None
        if outcome.kind == Kind.SENT:
            event = MessageSent(**ids, sent_at=now, smtp_message_id=message.smtp_message_id)
        elif outcome.kind == Kind.BOUNCED:
            event = MessageBounced(**ids, **codes)
        elif outcome.kind == Kind.REJECTED:  # the domain's problem: planned again, the lead left alone
            event, not_before = None, rejection_not_before(now, self._settings.retry_backoff_seconds)
            data["not_before"] = not_before.isoformat()
        else:
            event = MessageFailed(**ids, **codes, retry_at=retry_at)
        # Each outcome is recorded by the transition of its name (`shared.message_states.TRANSITIONS`).
        transition = "retry" if retry_at is not None else outcome.kind.value
        settle = message_store.settle_args(
            message.id, transition, now, day, outcome.reason or None, data, event, not_before
        )
        signal = health_signal(outcome)
        change = None
        async with self._db.acquire() as db:
            if signal is None:
                await message_store.settle(db, settle)
            else:  # the domain's health counts it (once), and may pause the domain, with the outcome
                async with db.transaction():
                    change = await domain_health.settle_counted(
                        db, settle, message.sending_domain_id, signal, self._clock, message.id
                    )
        OUTCOMES.labels(message.domain, outcome.kind.value).inc()
        log.info(
            f"sender.message.{outcome.kind.value}",
            message_id=str(message.id),
            reason=outcome.reason or None,
            retry_at=retry_at.isoformat() if retry_at else None,
        )
        _log_change(message, change)

    async def _deferred(
        self,
        message: Claim,
        outcome: Outcome,
        data: dict[str, Any],
        day: date,
        now: datetime,
        began: datetime,
    ) -> None:
        """The provider asked us to slow down: the domain's pace towards it slows, and the message is planned
        again at that pace (the scheduler gives it its slot), its tries untouched. The deferral counts towards
        the domain's health: a storm of them, from whichever provider, pauses it. The message (and its
        campaign) is locked before the pace, the order of a claim: the two never wait for each other."""
        data = {**data, "provider": message.receiving_provider}
        signal = health_signal(outcome)
        assert signal is not None, "a deferral is an answer of the server"
        settle = message_store.settle_args(message.id, "deferred", now, day, outcome.reason, data, None, now)
        async with self._db.acquire() as db, db.transaction():
            change = await domain_health.settle_counted(
                db, settle, message.sending_domain_id, signal, self._clock, message.id
            )
            pace = await repo.slow_down(db, message, self._settings.pace_rules, now, began)
        OUTCOMES.labels(message.domain, outcome.kind.value).inc()
        log.warning(
            "sender.message.deferred_by_provider",
            message_id=str(message.id),
            provider=message.receiving_provider,
            pace_seconds=pace.interval_seconds,
            reason=outcome.reason,
        )
        _log_change(message, change)


class _TokenRejected(Exception):
    """The SMTP server refused our OAuth2 access token (`token`, never shown)."""

    def __init__(self, token: str) -> None:
        super().__init__("the SMTP server refused the OAuth2 access token")
        self.token = token


def _token_refused(outcome: Outcome) -> bool:
    """A login refusal (535, e.g. Exchange Online's `5.7.3`, Google's `5.7.8`) of an XOAUTH2 login."""
    return outcome.fault == Fault.AUTHENTICATION and outcome.smtp_code == 535


def _log_change(message: Claim, change: domain_health.Change | None) -> None:
    if change is not None:
        log.warning(f"sender.domain.{change.action}", message_id=str(message.id), **change.logged())


def _smtp_span(step: str, attempt: Attempt) -> contextlib.AbstractContextManager[Span]:
    """A span of one step of the SMTP transaction, in the trace of the campaign (a no-op while it is off)."""
    message = attempt.message
    attributes = {"maildash.message_id": str(message.id), "maildash.sending_domain": message.domain_used}
    return TRACER.start_as_current_span(f"SMTP {step}", kind=SpanKind.CLIENT, attributes=attributes)


def _unexpected(when: str, error: Exception) -> Outcome:
    """An error no step expects, e.g. a stored password the encryption key cannot decrypt: the message
    fails with it, without retry (it would most likely fail again), and the campaign goes on."""
    log.error("sender.message.crashed", when=when, error=f"{type(error).__name__}: {error}"[:500])
    return Outcome(Kind.FAILED, f"failed {when}: {type(error).__name__}: {error}"[:1000], retryable=False)


def _unclaimed(command: SendMessage, error: BaseException) -> None:
    """The database went away, or no render worker could start: the message stays `dispatched`, and the
    scheduler's reconciler plans it again."""
    log.warning("sender.message.unclaimed", message_id=str(command.message_id), error=str(error)[:200])


def _skipped(command: SendMessage) -> None:
    """A duplicate, or the campaign is paused or stopped: the scheduler takes the command back."""
    log.info("sender.message.skipped", message_id=str(command.message_id))
