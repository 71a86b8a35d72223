"""The use case of an ESP's webhook request: the configuration its URL names, the provider's own
authentication, its events, and what each one causes, recorded once by the provider's event id.

The URL (`/webhooks/esp/<provider>/<token>`) names one workspace's configuration of that provider by a random
token; the provider's signature (or, for Postmark, the basic auth in the URL) is what proves the request.
Nothing is written before a request is proven, fresh and well formed. Then, in one transaction, every event
that names a message of that workspace and means something to us (a bounce, a complaint, a delivery) is a
row of `esp_events` beside its effect (`returns.reported`, the code inbound mail goes through), so an event
delivered again changes nothing. Events about no message of the workspace, and the kinds we do not use, are
answered and left.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.tracker import repository as repo
from services.tracker import returns
from services.tracker.esp import mailgun, postmark, sendgrid, ses
from services.tracker.esp.common import Refused, Reported, fresh
from services.tracker.esp.sns import Sns
from shared import crypto, esp
from shared.clock import Clock
from shared.message_states import MessageStatus
from shared.settings import Settings

log = structlog.get_logger()
TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}\Z")


@dataclass(frozen=True)
class Hook:
    """One workspace's configuration of one provider, its secret decrypted."""

    workspace_id: uuid.UUID
    provider: str
    topic_arns: tuple[str, ...]
    username: str | None
    secret: str | None
    public_key: str | None


@dataclass(frozen=True)
class Verified:
    """What a proven request carries."""

    events: list[Reported] = field(default_factory=list)
    once: str | None = None  # taken once only: Mailgun's signature token
    subscription: str | None = None  # an SNS subscription confirmed, or its end acknowledged


class EspWebhooks:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings, clock: Clock) -> None:
        self._sessions = sessions
        self._encryption_key = settings.encryption_key
        self._max_age = timedelta(seconds=settings.esp_max_age_seconds)
        self._clock = clock
        self.sns = Sns(settings)

    async def receive(
        self, provider: str, token: str, headers: Mapping[str, str], body: bytes
    ) -> dict[str, Any]:
        """Raises Refused: 404 for a URL that names no webhook, 401 for a request the provider did not make
        (or made too long ago), 403 for an SNS topic not taken, 422 for a malformed payload, 503 when SNS
        cannot be reached or an event's e-mail is still being sent (its outcome not yet recorded)."""
        hook = await self._hook(provider, token)
        now = self._clock()
        verified = await self._verify(hook, headers, body, now)
        answers = await self._record(hook, verified, now)
        outcomes = Counter(answer["outcome"] for answer in answers)
        recorded = sum(answer["recorded"] for answer in answers)
        log.info(
            "tracker.esp.received", provider=provider, workspace_id=str(hook.workspace_id),
            recorded=recorded, outcomes=dict(outcomes), subscription=verified.subscription,
        )  # fmt: skip
        subscription = {"subscription": verified.subscription} if verified.subscription else {}
        return {"events": answers, **subscription}

    async def _hook(self, provider: str, token: str) -> Hook:
        row = None
        if provider in esp.PROVIDERS and TOKEN.match(token):
            async with self._sessions() as session:
                row = await repo.esp_webhook(session, provider, token)
        if row is None:
            raise Refused(404, "not_found", "no ESP webhook at this URL")
        secret = crypto.decrypt(self._encryption_key, row.secret_encrypted) if row.secret_encrypted else None
        return Hook(
            row.workspace_id, row.provider, tuple(row.topic_arns), row.username, secret, row.public_key
        )

    async def _verify(self, hook: Hook, headers: Mapping[str, str], body: bytes, now: datetime) -> Verified:
        if hook.provider == "ses":
            return await self._sns(hook, body, now)
        if hook.provider == "sendgrid":
            assert hook.public_key is not None
            sendgrid.verify(esp.sendgrid_key(hook.public_key), headers, body, now, self._max_age)
            return Verified(sendgrid.events(body))
        if hook.provider == "mailgun":
            assert hook.secret is not None
            signed = mailgun.post(body)
            mailgun.verify(hook.secret, signed, now, self._max_age)
            return Verified([mailgun.event(signed)], once=signed.signature.token)
        assert hook.username is not None
        assert hook.secret is not None
        postmark.verify(hook.username, hook.secret, headers.get("authorization", ""))
        return Verified([postmark.event(body, now, self._max_age)])

    async def _sns(self, hook: Hook, body: bytes, now: datetime) -> Verified:
        """The topic is checked first: nothing is fetched for a message of a topic the workspace did not
        name."""
        message = ses.sns_message(body)
        if message.TopicArn not in hook.topic_arns:
            raise Refused(403, "forbidden", "the SNS topic is not one of this webhook's topic_arns")
        ses.verify(message, await self.sns.signer(message.SigningCertURL))
        fresh(message.timestamp, now, self._max_age)
        if message.Type == "SubscriptionConfirmation":
            assert message.SubscribeURL is not None
            await self.sns.confirm(message.SubscribeURL)
            return Verified(subscription="confirmed")
        if message.Type == "UnsubscribeConfirmation":
            return Verified(subscription="unsubscribed")
        return Verified([ses.ses_event(message)])

    async def _record(self, hook: Hook, verified: Verified, now: datetime) -> list[dict[str, Any]]:
        if not verified.events and verified.once is None:
            return []
        async with self._sessions() as session, session.begin():
            if verified.once is not None and not await repo.claim_esp_event(
                session, hook.workspace_id, hook.provider, f"signature:{verified.once}", None, "signature"
            ):
                raise Refused(401, "replayed", "this signature was taken before: a replay")
            return [await self._take(session, hook, event, now) for event in verified.events]

    async def _take(
        self, session: AsyncSession, hook: Hook, event: Reported, now: datetime
    ) -> dict[str, Any]:
        answer: dict[str, Any] = {"event_id": event.event_id, "outcome": event.kind, "message_id": None}
        if event.kind == "unrelated":
            return {**answer, "recorded": False}
        message = await repo.message_in_order(session, event.names, hook.workspace_id)
        if message is None:
            return {**answer, "outcome": "unmatched", "recorded": False}
        if message.status == MessageStatus.SENDING:  # an ESP can be quicker than the sender's own settle
            raise Refused(503, "unavailable", "the e-mail's send is still being recorded; deliver it again")
        answer["message_id"] = str(message.id)
        if not await repo.claim_esp_event(
            session, hook.workspace_id, hook.provider, event.event_id, message.id, event.kind
        ):
            return {**answer, "recorded": False}  # delivered again: it took effect the first time
        outcome, recorded = await returns.reported(session, message, event, hook.provider, self._clock)
        return {**answer, "outcome": outcome, "recorded": recorded}
