"""`make demo` (`python -m tools.demo`): a realistic sample in the superuser's workspace (`default`): three
sending domains, two templates, 200 leads in five segments, and a campaign in every status — completed (with
follow-ups), stopped, paused, running, scheduled and draft — with the history behind their timelines and KPIs
(what it is: tools/demo_sample.py).

Nothing here writes a counter or a status: each thing is made by the code that makes it in the services, on
a clock set back in time. The api's use cases create the domains, templates, leads and campaigns and start,
pause and stop them; the scheduler plans and dispatches (`Scheduler`, its consumers' use cases); each send is
claimed and settled by the message store's transitions, with the sender's outcome of an SMTP reply; opens,
clicks, replies and unsubscribes go through the tracker's. The running campaign's later slots and
the scheduled one are left planned: with `make run` going, the services send them to the local SMTP sink.

Idempotent: everything is made in one transaction under an advisory lock, and what exists (by domain, template
and campaign name, lead address) is left as it is, so a second run changes nothing.
"""

from __future__ import annotations

import asyncio
import random
import uuid
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api.accounts.passwords import Passwords
from services.api.accounts.service import Accounts
from services.api.campaigns import lifecycle
from services.api.campaigns import service as campaigns
from services.api.campaigns.repository import CampaignRepository
from services.api.campaigns.schemas import CampaignIn
from services.api.domains import service as domains
from services.api.domains.repository import DomainRepository
from services.api.kit.repository import WorkspaceRepository
from services.api.leads import service as leads
from services.api.leads.repository import LeadRepository
from services.api.templates import service as templates
from services.api.templates.repository import TemplateRepository
from services.scheduler.handlers import USE_CASES
from services.scheduler.service import Scheduler
from services.sender.outcome import Kind, Outcome, from_reply, health_signal
from services.tracker import repository as tracker
from services.tracker.machine import TOO_SOON
from shared.clock import utcnow
from shared.db import create_engine, domain_health, message_store, session_factory
from shared.db.message_store import on_session
from shared.db.models import Campaign, Lead, Message, MessageStatus, SendingDomain, Template, Workspace
from shared.events import Event, LeadReplied, LeadUnsubscribed, MessageBounced, MessageSent
from shared.lifecycle import Requested
from shared.observability import configure_logging
from shared.planning.window import Window
from shared.settings import Settings
from tools.demo_sample import DOMAINS, INTRO, STORIES, WEBINAR, Story, demo_leads

R = TypeVar("R", bound=WorkspaceRepository[Any])
LOCK = "maildash-demo"
# A domain's bounces are at least this many of its sends apart, whichever leads its slots drew: a run of its
# sends holding k bounces holds at least 41(k - 1) + 1 sends, so a window that is judged (20 sends or more)
# has at most 1 bounce in 20, exactly 5 %, and a domain pauses only over 5 % (shared/reputation.py's default
# thresholds, which the demo's workspace keeps unless its operator changed them).
BOUNCE_SPACING = 40


def answered(claim: Any, outcome: Outcome, now: datetime) -> MessageSent | MessageBounced:
    """The event the sender announces for a 250 or a 550 to a claimed message."""
    ids = {
        "workspace_id": claim["workspace_id"],
        "message_id": claim["id"],
        "campaign_id": claim["campaign_id"],
        "lead_id": claim["lead_id"],
        "occurred_at": now,
    }
    if outcome.kind == Kind.BOUNCED:
        codes = {"smtp_code": outcome.smtp_code, "enhanced_code": outcome.enhanced_code}
        return MessageBounced(**ids, reason=outcome.reason, **codes)
    return MessageSent(**ids, sent_at=now, smtp_message_id=claim["smtp_message_id"])


@dataclass
class Clock:
    """The time the services see while the demo replays its history."""

    at: datetime

    def __call__(self) -> datetime:
        return self.at


@dataclass
class Demo:
    sessions: async_sessionmaker[AsyncSession]
    settings: Settings
    workspace_id: uuid.UUID
    now: datetime
    clock: Clock = field(init=False)
    sends_since_bounce: dict[uuid.UUID, int] = field(default_factory=dict)  # by sending domain
    scheduler: Scheduler = field(init=False)

    def __post_init__(self) -> None:
        self.clock = Clock(self.now)
        self.scheduler = Scheduler(self.sessions, self.settings, self.clock)

    @asynccontextmanager
    async def repository(self, kind: type[R]) -> AsyncIterator[R]:
        """An api repository of the workspace, in a transaction of its own (as one request has)."""
        async with self.sessions() as session, session.begin():
            yield kind(session, self.workspace_id)

    async def run(self) -> list[str]:
        """What it made, by name (nothing on a second run)."""
        made = []
        async with self.sessions() as session:
            owned = {
                "domains": set(await session.scalars(self._names(SendingDomain.domain, SendingDomain))),
                "templates": set(await session.scalars(self._names(Template.name, Template))),
                "leads": set(await session.scalars(self._names(Lead.email, Lead))),
                "campaigns": set(await session.scalars(self._names(Campaign.name, Campaign))),
            }
        for domain in DOMAINS:
            if domain.domain not in owned["domains"]:
                async with self.repository(DomainRepository) as repo:
                    await domains.create(repo, domain, self.settings)
                made.append(domain.domain)
        for template in (INTRO, WEBINAR):
            if template.name not in owned["templates"]:
                async with self.repository(TemplateRepository) as repo:
                    await templates.create(repo, template)
                made.append(template.name)
        new_leads = [lead for lead in demo_leads() if lead.email not in owned["leads"]]
        for lead in new_leads:
            async with self.repository(LeadRepository) as repo:
                await leads.create(repo, lead)
        made += [f"{len(new_leads)} leads"] if new_leads else []
        for story in sorted(STORIES, key=lambda s: -(s.began_days_ago or -1e9)):
            if story.name not in owned["campaigns"]:
                await self.tell(story)
                made.append(story.name)
        return made

    def _names(self, column: Any, model: Any) -> Any:
        return select(column).where(model.workspace_id == self.workspace_id)

    async def tell(self, story: Story) -> None:
        """Create the campaign as the wizard does, then live its history on the clock."""
        if story.began_days_ago is None or story.began_days_ago < 0:  # a draft, or to start later
            await self._create(story)
            return
        self.clock.at = began = self.now - timedelta(days=story.began_days_ago)
        campaign_id, audience = await self._create(story)
        async with self.sessions() as session, session.begin():  # its history begins then
            await session.execute(update(Campaign).where(Campaign.id == campaign_id).values(created_at=began))
        async with self.repository(CampaignRepository) as repo:
            await lifecycle.change(repo, str(campaign_id), "start")
        await self.scheduler.start_campaign(campaign_id)
        mailed = 0
        while (slot := await self._next_slot(campaign_id)) is not None and slot <= self.now:
            if story.outcome in ("stopped", "paused") and mailed >= story.share * audience:
                break
            self.clock.at = slot
            await self.scheduler.dispatch_due()
            dispatched = await self._dispatched(campaign_id)
            if not dispatched:  # its domain paused, say: the story would wait for ever
                raise RuntimeError(f"{story.name}: its message due at {slot} was not dispatched")
            for message_id in dispatched:
                mailed += await self.send(message_id, story)
        if story.outcome in ("stopped", "paused"):
            self.clock.at += timedelta(hours=1)
            action: Requested = "stop" if story.outcome == "stopped" else "pause"
            async with self.repository(CampaignRepository) as repo:
                await lifecycle.change(repo, str(campaign_id), action)
            use_case = self.scheduler.stop_campaign if action == "stop" else self.scheduler.pause_campaign
            await use_case(campaign_id)
        self.clock.at = self.now

    async def _create(self, story: Story) -> tuple[uuid.UUID, int]:
        """The campaign as the wizard makes it (a draft, or one to start later, planned now): its id and
        audience."""
        template_id = await self._template_id(story.template)
        start_at = None
        if story.began_days_ago is not None and story.began_days_ago < 0:
            start_at = self.now - timedelta(days=story.began_days_ago)
        payload = CampaignIn.model_validate(
            {
                "name": story.name,
                "template_id": str(template_id),
                "audience": {"mode": "tags", "tags": [story.segment], "exclude_recent_days": 0},
                "schedule": {"start_mode": "at" if start_at else "draft", "start_at": start_at,
                             "window": story.window},
                "domains": list(story.domains),
                "followup": {"enabled": story.followup, "days": 3},
                "tracking": {"opens": True, "clicks": story.clicks},
            }
        )  # fmt: skip
        async with self.repository(CampaignRepository) as repo:
            created = await campaigns.create(repo, payload, self.settings)
        campaign_id = uuid.UUID(created["id"])
        if start_at is not None:
            await self.scheduler.start_campaign(campaign_id)
        return campaign_id, created["audience_count"]

    async def send(self, message_id: uuid.UUID, story: Story) -> int:
        """One SMTP transaction as the sender records it: claimed, answered (by 250, or by 550 for one
        address in 50, spaced out on its domain by BOUNCE_SPACING), settled with the domain's
        health; then what its lead did with it. 1 when it was a first e-mail."""
        now = self.clock()
        async with self.sessions() as session, session.begin():
            db = on_session(session)
            message = await session.get(Message, message_id)
            assert message is not None
            claim = await message_store.claim(db, message_id, message.campaign_id, now)
            if claim is None:
                return 0
            domain_id = claim["sending_domain_id"]
            since = self.sends_since_bounce.get(domain_id, BOUNCE_SPACING)
            bounced = zlib.crc32(claim["email"].encode()) % 50 == 0 and since >= BOUNCE_SPACING
            self.sends_since_bounce[domain_id] = 0 if bounced else since + 1
            outcome = from_reply(550, "5.1.1 User unknown") if bounced else from_reply(250, "2.0.0 Ok")
            event = answered(claim, outcome, now)
            day = Window.from_dict(claim["window"]).local_date(now)
            reason = outcome.reason or None
            data = {"smtp_code": outcome.smtp_code, "enhanced_code": outcome.enhanced_code, "reason": reason}
            settle = message_store.settle_args(message_id, outcome.kind.value, now, day, reason, data, event)
            signal = health_signal(outcome)
            assert signal is not None, "an SMTP reply says something about the domain"
            await domain_health.settle_counted(db, settle, domain_id, signal, self.clock, message_id)
        await USE_CASES[type(event)](self.scheduler, event)  # what the scheduler does when it hears of it
        if not bounced:
            # The same fate for the same lead and e-mail on every run.
            luck = random.Random(f"{story.name}:{claim['email']}:{claim['is_followup']}")  # noqa: S311
            await self.engage(message, story, luck)
        return 0 if claim["is_followup"] else 1

    async def engage(self, message: Message, story: Story, luck: random.Random) -> None:
        """Opens, a click, a reply or an unsubscribe, each at its own later time, through the tracker's
        transitions; only what has happened by now."""
        sent = self.clock()

        def later(low_hours: float, high_hours: float) -> datetime | None:
            at = sent + timedelta(hours=luck.uniform(low_hours, high_hours))
            return at if at <= self.now else None

        message_id = message.id
        async with self.sessions() as session, session.begin():
            db = on_session(session)
            if luck.random() < 0.55 and (opened := later(0.2, 48)):
                browsers = ["Mozilla/5.0 (Macintosh) AppleWebKit/605.1.15", "Mozilla/5.0 (Windows NT 10.0)"]
                for n in range(luck.choice((1, 1, 2, 3))):
                    await message_store.record_opens(
                        db, [message_id], [opened + timedelta(hours=5 * n)], [luck.choice(browsers)],
                        ["192.0.2.10"], [False], TOO_SOON,
                    )  # fmt: skip
                if story.clicks and luck.random() < 0.3:
                    clicked, url = opened + timedelta(minutes=1), "https://acme.example/tour"
                    await tracker.record_click(session, message_id, clicked, {"url": url})
            # No complaints: a single one is over the rate that pauses a domain (shared/reputation.py).
            fate, ids = luck.random(), {"workspace_id": message.workspace_id, "lead_id": message.lead_id}
            left: Event | None = None
            if (
                fate < 0.08
                and (at := later(1, 72))
                and await tracker.record_reply(session, message, at, {"subject": f"Re: {story.name}"})
            ):
                left = LeadReplied(**ids, message_id=message_id)
            elif fate < 0.10 and later(0.5, 24) and await tracker.unsubscribe(session, message_id):
                left = LeadUnsubscribed(**ids, message_id=message_id)
        if left is not None:  # what the scheduler does when it hears of it
            await USE_CASES[type(left)](self.scheduler, left)

    async def _template_id(self, name: str) -> uuid.UUID:
        async with self.sessions() as session:
            found = await session.scalar(
                select(Template.id).where(Template.workspace_id == self.workspace_id, Template.name == name)
            )
        assert found is not None, name
        return found

    async def _next_slot(self, campaign_id: uuid.UUID) -> datetime | None:
        async with self.sessions() as session:
            return await session.scalar(
                select(func.min(Message.scheduled_at)).where(
                    Message.campaign_id == campaign_id, Message.status == MessageStatus.PLANNED
                )
            )

    async def _dispatched(self, campaign_id: uuid.UUID) -> list[uuid.UUID]:
        async with self.sessions() as session:
            found = await session.scalars(
                select(Message.id)
                .where(Message.campaign_id == campaign_id, Message.status == MessageStatus.DISPATCHED)
                .order_by(Message.scheduled_at)
            )
            return list(found)


@asynccontextmanager
async def one_transaction(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions whose every transaction is a savepoint of one: the demo is all made, or none of it; a second
    demo at the same time waits for the first."""
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            await connection.begin()
            await connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:lock))"), {"lock": LOCK})
            yield async_sessionmaker(
                connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
            )
            await connection.commit()
    finally:
        await engine.dispose()


async def superuser_workspace(settings: Settings) -> uuid.UUID:
    """The superuser's workspace (`default`), made as the api makes it at its first start."""
    engine = create_engine(settings.database_url, pool_size=1)
    passwords = Passwords(1, 0)
    try:
        await Accounts(session_factory(engine), passwords).ensure_superuser(
            settings.admin_email, settings.admin_password
        )
        async with session_factory(engine)() as session:
            found = await session.scalar(select(Workspace.id).where(Workspace.name == "default"))
    finally:
        passwords.close()
        await engine.dispose()
    assert found is not None
    return found


async def fill(settings: Settings, now: datetime | None = None) -> list[str]:
    """Fill the superuser's workspace; what was made (empty when it was there already)."""
    workspace_id = await superuser_workspace(settings)
    async with one_transaction(settings) as sessions:
        return await Demo(sessions, settings, workspace_id, now or utcnow()).run()


def main() -> None:
    settings = Settings()
    configure_logging("demo", settings.log_format, "WARNING")  # not a line per replayed send
    made = asyncio.run(fill(settings))
    print(f"demo: made {', '.join(made)}" if made else "demo: already there, nothing changed")
    print("log in as the superuser (MAILDASH_ADMIN_EMAIL) to see it: its workspace is `default`")


if __name__ == "__main__":
    main()
