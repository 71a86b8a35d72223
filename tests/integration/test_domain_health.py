"""A sending domain's health (SPEC §8, issue 18) on the real database: the windows its figures are read from
against a brute-force count of the same signals, a pause in the transaction of the outcome that tips it and
after every claim that holds the domain, the probe of a transient pause; and through the api and the services:
policy rejections pause the domain (not the campaign) and a resume sends the rest, a campaign that allows it
moves its mail off a paused domain, a complaint counts, and a domain that cannot be reached resumes by itself
after a probe."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from services.scheduler.service import Scheduler
from shared.db import asyncpg_dsn, create_engine, session_factory
from shared.db import domain_health as health
from shared.db import message_store as store
from shared.db.message_store import on_session
from shared.db.models import Campaign, Message
from shared.message_states import MessageStatus
from shared.reputation import (
    DAY,
    EFFECTS,
    HOUR,
    LAST_SENDS,
    SENDS,
    Cause,
    Counts,
    Figures,
    Signal,
    Streak,
    Verdict,
)
from shared.settings import Settings
from tests.support import store_world
from tests.support.mailbox_mail import arf_report
from tests.support.pipeline import Pipeline
from tests.support.samples import postfix_dsn
from tests.support.smtp import free_port, running_sink
from tests.support.store_world import NOW

pytestmark = pytest.mark.integration

REFUSED = "550 5.7.1 Message refused as spam"


@pytest.fixture(scope="module")
async def db(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(asyncpg_dsn(settings.database_url))
    yield connection
    await connection.close()


@pytest.fixture
async def rolled_back(db: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    transaction = db.transaction()
    await transaction.start()
    try:
        yield db
    finally:
        await transaction.rollback()


def total(signals: list[Signal]) -> Counts:
    return Counts(
        *(sum(column) for column in zip(*(EFFECTS[s].counts.as_tuple() for s in signals), strict=True))
    )


def streak(run: int, effect: Streak) -> int:
    return run + 1 if effect is Streak.ADD else 0 if effect is Streak.RESET else run


def brute_force(events: list[tuple[datetime, Signal]], since: datetime | None, now: datetime) -> Figures:
    """The figures at `now` counted from the signals themselves, as the module's docstring defines them."""
    counted = [(at, signal) for at, signal in events if since is None or at > since]
    sends = [i for i, (_, signal) in enumerate(counted) if signal in SENDS][-LAST_SENDS:]
    connection = authentication = deferrals = 0
    for _, signal in events:
        connection = streak(connection, EFFECTS[signal].connection)
        authentication = streak(authentication, EFFECTS[signal].authentication)
        deferrals = streak(deferrals, EFFECTS[signal].deferral)
    return Figures(
        total([signal for at, signal in counted if at > now - DAY]),
        total([signal for _, signal in counted[sends[0] :]] if sends else []),
        total([signal for at, signal in counted if at > now - HOUR]).policy_rejections,
        connection,
        authentication,
        deferrals,
    )


# A signal, the minutes since the one before, and how many times it comes at once (runs of sends reach past
# the window of the last 100 sends).
STEPS = st.lists(
    st.tuples(st.sampled_from(list(Signal)), st.integers(0, 200), st.sampled_from([1, 1, 1, 2, 40])),
    max_size=20,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sent=st.sampled_from([0, 0, 99, 100, 130]),
    steps=STEPS,
    resumed_after=st.none() | st.integers(0, 20),
    later=st.integers(0, 2000),
)
async def test_each_window_counts_what_a_brute_force_count_of_its_signals_gives(
    db: asyncpg.Connection,
    sent: int,
    steps: list[tuple[Signal, int, int]],
    resumed_after: int | None,
    later: int,
) -> None:
    """After `sent` e-mails, signals minutes apart (several at one moment, some a day apart), a resume
    somewhere among them: the figures recorded with each signal, and those read later, are the brute-force
    count."""
    transaction = db.transaction()
    await transaction.start()
    try:
        world = await store_world.build(db)
        at, since, events = NOW, None, []
        # So that no threshold pauses the domain on the way (pausing changes nothing that is counted).
        lenient = {
            "bounce_min_sends": 1_000_000,
            "complaint_rate": 1,
            "policy_rejections_per_hour": 1_000_000,
        }
        await db.execute("UPDATE sending_domains SET health_thresholds = $2::text::jsonb WHERE id = $1",
                         world.domain, json.dumps(lenient))  # fmt: skip
        for index, (signal, minutes, times) in enumerate([(Signal.SENT, 0, sent), *steps]):
            if index - 1 == resumed_after:
                since = at
                await db.execute(
                    "INSERT INTO domain_health (sending_domain_id, counting_since) VALUES ($1, $2)"
                    " ON CONFLICT (sending_domain_id) DO UPDATE SET counting_since = $2",
                    world.domain, since,
                )  # fmt: skip
            at += timedelta(minutes=minutes)
            for _ in range(times):
                events.append((at, signal))
                recorded = await health.record(db, world.domain, signal, at)
                assert recorded.figures == brute_force(events, since, at), (index, signal)
        now = at + timedelta(minutes=later)
        read = (await health.figures(db, [world.domain], now)).get(world.domain)
        assert (read or Figures(Counts(), Counts(), 0, 0, 0, 0)) == brute_force(events, since, now)
    finally:
        await transaction.rollback()


def clock_at(moment: datetime) -> Any:
    return lambda: moment


async def outbox_of(db: asyncpg.Connection, workspace: uuid.UUID) -> list[tuple[str, dict[str, Any]]]:
    rows = await db.fetch(
        "SELECT routing_key, payload::text AS payload FROM outbox WHERE payload->>'workspace_id' = $1"
        " ORDER BY id",
        str(workspace),
    )
    return [(row["routing_key"], json.loads(row["payload"])) for row in rows]


async def test_the_outcome_that_crosses_a_threshold_pauses_the_domain_in_its_own_transaction(
    rolled_back: asyncpg.Connection,
) -> None:
    db = rolled_back
    world = await store_world.build(db)
    for minute in range(2):
        at = NOW + timedelta(minutes=minute)
        assert await health.count(db, world.domain, Signal.POLICY_REJECTION, at, clock_at(at)) is None
    inner = db.transaction()  # the settle's own transaction, rolled back: nothing of it stays
    await inner.start()
    third = NOW + timedelta(minutes=2)
    change = await health.count(db, world.domain, Signal.POLICY_REJECTION, third, clock_at(third))
    assert change is not None
    assert change.verdict is not None
    assert change.verdict.cause is Cause.POLICY_REJECTIONS
    await inner.rollback()
    row = await db.fetchrow("SELECT state, paused_at FROM sending_domains WHERE id = $1", world.domain)
    assert (row["state"], row["paused_at"]) == ("active", None)

    change = await health.count(db, world.domain, Signal.POLICY_REJECTION, third, clock_at(third))
    assert change is not None
    assert change.action == "paused"
    row = await db.fetchrow("SELECT * FROM sending_domains WHERE id = $1", world.domain)
    assert (row["state"], row["paused_cause"], row["paused_at"]) == ("paused", "policy_rejections", third)
    assert row["paused_reason"].startswith("policy rejections: 3 in the last hour")
    fourth = third + timedelta(minutes=1)
    assert await health.count(db, world.domain, Signal.POLICY_REJECTION, fourth, clock_at(fourth)) is None
    announced = await outbox_of(db, world.workspace)
    assert [key for key, _ in announced] == ["domain.paused"]  # once
    assert announced[0][1]["cause"] == "policy_rejections"
    assert announced[0][1]["sending_domain_id"] == str(world.domain)


async def test_the_senders_settle_counts_its_outcome_once_and_the_one_that_crosses_pauses_with_it(
    rolled_back: asyncpg.Connection,
) -> None:
    """`settle_counted`, the outcome and its signal in one statement: a repeated settle counts nothing, and
    the third policy rejection of the hour is recorded with the pause, or not at all."""
    db = rolled_back
    world = await store_world.build(db, messages=3)

    async def settle(message: uuid.UUID, at: datetime) -> health.Change | None:
        outcome = store.settle_args(message, "rejected", at, at.date(), "550 5.7.1", {}, None, at)
        return await health.settle_counted(
            db, outcome, world.domain, Signal.POLICY_REJECTION, clock_at(at), message
        )

    async def status(message: uuid.UUID) -> str:
        return str(await db.fetchval("SELECT status FROM messages WHERE id = $1", message))

    async def rejections() -> int:
        return int(await db.fetchval(
            "SELECT policy_rejections FROM domain_health WHERE sending_domain_id = $1", world.domain
        ))  # fmt: skip

    for message in world.messages:
        await store_world.put(db, message, MessageStatus.SENDING)
    first, second, third = world.messages
    assert await settle(first, NOW) is None
    assert await settle(first, NOW) is None  # settled before: counts nothing
    assert (await status(first), await rejections()) == ("planned", 1)
    at = NOW + timedelta(minutes=2)
    assert await settle(second, at) is None
    inner = db.transaction()  # the sender's transaction, rolled back: nothing of it stays
    await inner.start()
    change = await settle(third, at)
    assert change is not None
    assert change.action == "paused"
    await inner.rollback()
    row = await db.fetchrow("SELECT state, paused_at FROM sending_domains WHERE id = $1", world.domain)
    assert (row["state"], row["paused_at"], await status(third), await rejections()) == (
        "active", None, "sending", 2
    )  # fmt: skip

    change = await settle(third, at)
    assert change is not None
    assert change.verdict is not None
    assert change.verdict.cause is Cause.POLICY_REJECTIONS
    row = await db.fetchrow("SELECT state, paused_at FROM sending_domains WHERE id = $1", world.domain)
    assert (row["state"], row["paused_at"], await status(third), await rejections()) == (
        "paused", at, "planned", 3
    )  # fmt: skip
    assert [key for key, _ in await outbox_of(db, world.workspace)] == ["domain.paused"]


async def test_a_pause_waits_for_the_claims_holding_the_domain_and_no_claim_gets_past_it(
    settings: Settings,
) -> None:
    """A claim holds its domain until its server accepted MAIL FROM: a pause records itself only once that
    claim committed, with a later `paused_at`; a claim after the pause finds nothing to claim."""
    setup, claimer, pauser = [await asyncpg.connect(asyncpg_dsn(settings.database_url)) for _ in range(3)]
    try:
        world = await store_world.build(setup, messages=2)
        for message in world.messages:
            await store.dispatch(setup, [store_world.command(world, message, NOW)])
        claim = claimer.transaction()
        await claim.start()
        assert await store.claim(claimer, world.messages[0], world.campaign, NOW) is not None
        moments: list[datetime] = []

        def clock() -> datetime:
            moments.append(datetime.now(NOW.tzinfo))
            return moments[-1]

        async def pause() -> None:
            async with pauser.transaction():
                verdict = Verdict(Cause.POLICY_REJECTIONS, "for the test")
                assert await health.pause(pauser, world.domain, world.workspace, "d", verdict, clock)

        pausing = asyncio.create_task(pause())
        await asyncio.sleep(0.5)
        assert not pausing.done(), "the pause did not wait for the claim holding the domain"
        committing = datetime.now(NOW.tzinfo)
        await claim.commit()
        await asyncio.wait_for(pausing, 10)
        assert moments[-1] >= committing
        assert await store.claim(claimer, world.messages[1], world.campaign, NOW) is None
        assert await store.release_refused(claimer, world.messages[1])  # back to planned, for the resume
        status = await setup.fetchval("SELECT status FROM messages WHERE id = $1", world.messages[1])
        assert status == MessageStatus.PLANNED
        # Its rows stay (three connections saw them): its campaigns end, so no scheduler ever takes them.
        await setup.execute(
            "UPDATE campaigns SET status = 'stopped' WHERE id = ANY($1)",
            [world.campaign, world.other_campaign],
        )
    finally:
        for connection in (setup, claimer, pauser):
            await connection.close()


async def test_a_paused_domain_sends_only_its_probe_which_resumes_it_or_restarts_the_cool_down(
    rolled_back: asyncpg.Connection,
) -> None:
    db = rolled_back
    world = await store_world.build(db, messages=2)
    verdict = Verdict(Cause.CONNECTION_FAILURES, "unreachable")
    assert await health.pause(db, world.domain, world.workspace, "d", verdict, clock_at(NOW))
    probe, other = world.messages
    assert await health.choose_probe(db, world.domain, probe)
    for message in world.messages:
        await store.dispatch(db, [store_world.command(world, message, NOW)])
    assert await store.claim(db, other, world.campaign, NOW) is None
    assert await store.claim(db, probe, world.campaign, NOW) is not None

    later = NOW + timedelta(minutes=20)
    change = await health.count(db, world.domain, Signal.CONNECTION_FAILURE, later, clock_at(later), probe)
    assert change is not None
    assert change.action == "probe_failed"
    row = await db.fetchrow("SELECT * FROM sending_domains WHERE id = $1", world.domain)
    assert (row["state"], row["paused_at"], row["probe_message_id"]) == ("paused", later, None)

    assert await health.choose_probe(db, world.domain, probe)
    change = await health.count(db, world.domain, Signal.SENT, later, clock_at(later), probe)
    assert change is not None
    assert change.action == "resumed"
    row = await db.fetchrow("SELECT * FROM sending_domains WHERE id = $1", world.domain)
    assert (row["state"], row["paused_cause"], row["paused_at"]) == ("active", None, None)
    announced = await outbox_of(db, world.workspace)
    assert [key for key, _ in announced if key.startswith("domain.")] == ["domain.paused", "domain.resumed"]
    assert announced[-1][1]["automatic"] is True


async def test_a_resume_plans_what_the_domain_holds_from_now_in_order_past_slots_and_future_ones_alike(
    settings: Settings,
) -> None:
    """The scheduler's answer to `DomainResumed`: a message whose slot passed while the domain was paused may
    take the slot a later one still holds; each gets the next free one from now, in their order."""
    engine = create_engine(settings.database_url, pool_size=2)
    sessions = session_factory(engine)
    now = NOW - timedelta(hours=2, seconds=-150)  # between the third and the fourth slot
    try:
        async with sessions() as session, session.begin():
            world = await store_world.build(on_session(session), messages=4)
        await Scheduler(sessions, settings, clock_at(now)).domain_resumed(world.domain)
        async with sessions() as session:
            slots = await session.execute(
                select(Message.id, Message.scheduled_at).where(Message.id.in_(world.messages))
            )
            moved = dict(slots.all())
        assert [moved[m] - now for m in world.messages] == [timedelta(seconds=s) for s in (30, 90, 150, 210)]
    finally:
        async with sessions() as session, session.begin():
            await session.execute(
                update(Campaign)
                .where(Campaign.id.in_([world.campaign, world.other_campaign]))
                .values(status="stopped")
            )
        await engine.dispose()


# Through the api and the services.


async def domain_of(pipeline: Pipeline, name: str) -> dict[str, Any]:
    [found] = (await pipeline.api.get(f"/domains?search={name}"))["items"]
    return found


async def test_policy_rejections_pause_the_domain_not_the_campaign_and_a_resume_sends_the_rest(
    pipeline: Pipeline,
) -> None:
    pipeline.sink.answer_from(1, REFUSED, "rcpt")
    campaign, lead_ids = await pipeline.campaign(leads=5)
    name = campaign["domains"][0]

    async def paused() -> bool:
        return (await domain_of(pipeline, name))["state"] == "paused"

    await pipeline.until(paused)
    domain = await domain_of(pipeline, name)
    assert domain["paused_cause"] == "policy_rejections"
    assert domain["paused_reason"].startswith("policy rejections: ")
    assert domain["paused_at"] is not None
    assert domain["health"]["policy_rejections_last_hour"] >= 3
    assert (
        domain["health"]["last_24h"]["policy_rejections"] == domain["health"]["policy_rejections_last_hour"]
    )
    assert domain["health"]["thresholds"]["policy_rejections_per_hour"] == 3
    detail = await pipeline.api.get(f"/domains/{domain['id']}")
    assert (detail["state"], detail["paused_at"]) == ("paused", domain["paused_at"])

    # The leads are left alone: nothing bounced, suppressed or spent; the campaign goes on.
    messages = await pipeline.messages(campaign["id"])
    assert {m["status"] for m in messages} <= {"planned", "dispatched"}
    assert all(m["retry_count"] == 0 for m in messages)
    assert all(m["last_error"].startswith("550 5.7.1") for m in messages if m["last_error"])
    leads = [await pipeline.api.get(f"/leads/{lead}") for lead in lead_ids]
    assert {lead["status"] for lead in leads} == {"active"}
    suppressed = await pipeline.api.get("/suppressions?page_size=200")
    assert not {s["email"] for s in suppressed["items"]} & {lead["email"] for lead in leads}
    assert (await pipeline.api.get(f"/campaigns/{campaign['id']}"))["status"] in ("scheduled", "running")

    pipeline.sink.handler.answers_from = None
    resumed = await pipeline.api.http.post(f"/domains/{domain['id']}/resume")
    assert resumed.status_code == 200, resumed.text
    assert (resumed.json()["data"]["state"], resumed.json()["data"]["paused_reason"]) == ("active", None)
    assert resumed.json()["data"]["health"]["policy_rejections_last_hour"] == 0  # counted afresh
    again = await pipeline.api.http.post(f"/domains/{domain['id']}/resume")
    assert again.status_code == 409
    assert again.json()["error_code"] == "conflict"

    async def completed() -> bool:
        return (await pipeline.api.get(f"/campaigns/{campaign['id']}"))["status"] == "completed"

    await pipeline.until(completed)
    messages = await pipeline.messages(campaign["id"])
    assert [m["status"] for m in messages] == ["sent"] * 5
    emails = {lead["email"] for lead in leads}
    assert emails == {mail.rcpt_tos[0] for mail in pipeline.sink.received if mail.rcpt_tos[0] in emails}
    assert (await domain_of(pipeline, name))["health"]["last_24h"]["sends"] == 5


async def test_a_campaign_that_allows_it_moves_unsent_initial_mail_off_a_paused_domain_and_follow_ups_stay(
    pipeline: Pipeline,
) -> None:
    async with running_sink() as blocking:
        blocking.answer_from(2, REFUSED, "rcpt")  # takes one e-mail, then refuses every other
        tag = uuid.uuid4().hex[:8]
        paused, healthy = f"blocked-{tag}.example", f"healthy-{tag}.example"
        await pipeline.api.domain(paused, blocking.port)
        await pipeline.api.domain(healthy, pipeline.sink.port)
        leads = [
            (await pipeline.api.lead(f"{tag}-{i}@lead.example", first_name="Jan"))["id"] for i in range(8)
        ]
        template = await pipeline.api.template()
        campaign = await pipeline.api.campaign(
            template["id"], leads, [paused, healthy], reassign_on_domain_pause=True,
            followup={"enabled": True, "days": 1},
        )  # fmt: skip
        assert campaign["reassign_on_domain_pause"] is True

        async def initial_mail_settled() -> bool:
            initial = [m for m in await pipeline.messages(campaign["id"]) if not m["is_followup"]]
            return [m["status"] for m in initial] == ["sent"] * 8

        await pipeline.until(initial_mail_settled, seconds=30)
        assert (await domain_of(pipeline, paused))["state"] == "paused"
        messages = await pipeline.messages(campaign["id"])
        initial = [m for m in messages if not m["is_followup"]]
        [taken] = [m for m in initial if m["domain_used"] == paused]  # the one it accepted
        assert len(blocking.received) == 1
        # Each follow-up stays on the domain of its original, the paused one's too, and waits there.
        pipeline.clock.advance(timedelta(days=1, minutes=1))

        async def healthy_followups_sent() -> bool:
            followups = [m for m in await pipeline.messages(campaign["id"]) if m["is_followup"]]
            return len(followups) == 8 and sum(m["status"] == "sent" for m in followups) == 7

        await pipeline.until(healthy_followups_sent, seconds=30)
        followups = {
            m["parent_message_id"]: m for m in await pipeline.messages(campaign["id"]) if m["is_followup"]
        }
        assert {
            (m["domain_used"], m["status"])
            for m in followups.values()
            if m["parent_message_id"] != taken["id"]
        } == {(healthy, "sent")}
        assert (followups[taken["id"]]["domain_used"], followups[taken["id"]]["status"]) == (
            paused,
            "planned",
        )
        assert (await pipeline.api.get(f"/campaigns/{campaign['id']}"))["status"] == "running"

        blocking.handler.answers_from = None
        domain = await domain_of(pipeline, paused)
        assert (await pipeline.api.http.post(f"/domains/{domain['id']}/resume")).status_code == 200

        async def completed() -> bool:
            return (await pipeline.api.get(f"/campaigns/{campaign['id']}"))["status"] == "completed"

        await pipeline.until(completed, seconds=30)
        assert len(blocking.received) == 2  # the follow-up, threaded under its original
        assert blocking.received[1].message["In-Reply-To"] == blocking.received[0].message["Message-ID"]


async def test_a_complaint_and_a_later_bounce_count_towards_the_domain_of_their_message(
    pipeline: Pipeline, settings: Settings
) -> None:
    message, mail = await pipeline.sent_email()
    name = message["domain_used"]
    report = arf_report(f"sales@{name}", mail.mail_from, mail.message["Message-ID"], mail.rcpt_tos[0])
    dsn = postfix_dsn(mail.mail_from, mail.message["Message-ID"])
    secret = {"X-Inbound-Secret": settings.inbound_secret}
    async with httpx.AsyncClient(base_url=pipeline.tracker_url) as tracker:
        complained = await tracker.post("/inbound/bounces", content=report, headers=secret)
        assert complained.json()["data"]["outcome"] == "complaint", complained.text
        domain = await domain_of(pipeline, name)
        day = domain["health"]["last_24h"]
        assert (day["sends"], day["complaints"], day["complaint_rate"]) == (1, 1, 1.0)
        # One complaint for one send is over 0.3 %: the domain waits for a person.
        assert (domain["state"], domain["paused_cause"]) == ("paused", "complaints")
        for _ in range(2):  # the same DSN twice counts once
            bounced = await tracker.post("/inbound/bounces", content=dsn, headers=secret)
            assert bounced.json()["data"]["outcome"] == "hard_bounce", bounced.text
    health_now = (await domain_of(pipeline, name))["health"]
    assert (health_now["last_24h"]["hard_bounces"], health_now["last_100_sends"]["hard_bounces"]) == (1, 1)


async def test_a_domain_that_cannot_be_reached_pauses_and_a_probe_after_its_cool_down_resumes_it(
    pipeline: Pipeline,
) -> None:
    port = free_port()  # nothing listens there yet
    tag = uuid.uuid4().hex[:8]
    name = f"unreachable-{tag}.example"
    await pipeline.api.domain(name, port, health_thresholds={"connection_failures": 2})
    lead = await pipeline.api.lead(f"{tag}@lead.example", first_name="Jan")
    template = await pipeline.api.template()
    campaign = await pipeline.api.campaign(template["id"], [lead["id"]], [name])

    async def paused() -> bool:
        return (await domain_of(pipeline, name))["state"] == "paused"

    await pipeline.until(paused, seconds=30)  # the first try and its retry a second later
    domain = await domain_of(pipeline, name)
    assert domain["paused_cause"] == "connection_failures"
    assert domain["health"]["consecutive_connection_failures"] == 2
    [message] = await pipeline.messages(campaign["id"])
    assert (message["status"], message["retry_count"]) == ("planned", 2)  # one try left, waiting

    async with running_sink(port) as back:
        pipeline.clock.advance(timedelta(seconds=pipeline.settings.domain_cooldown_seconds + 1))

        async def resumed() -> bool:
            return (await domain_of(pipeline, name))["state"] == "active"

        await pipeline.until(resumed, seconds=30)
        [message] = await pipeline.messages(campaign["id"])
        assert message["status"] == "sent"
        assert len(back.received) == 1  # the probe
        domain = await domain_of(pipeline, name)
        assert domain["health"]["consecutive_connection_failures"] == 0


async def test_a_storm_of_deferrals_pauses_the_domain_and_a_probe_after_its_cool_down_resumes_it(
    pipeline: Pipeline,
) -> None:
    """Deferrals in a row from two providers: not one provider's pace but the domain pauses, a transient
    cause; once the servers take mail again, the probe after the cool-down resumes it and the rest goes."""
    tag = uuid.uuid4().hex[:8]
    name = f"storm-{tag}.example"
    await pipeline.api.domain(name, pipeline.sink.port, health_thresholds={"deferrals": 2})
    leads = [(await pipeline.api.lead(f"{tag}@{provider}-{tag}.example"))["id"] for provider in ("a", "b")]
    template = await pipeline.api.template()
    pipeline.sink.answer_from(1, "421 4.7.0 Try again later, closing connection", "rcpt")
    campaign = await pipeline.api.campaign(template["id"], leads, [name])

    async def paused() -> bool:
        return (await domain_of(pipeline, name))["state"] == "paused"

    await pipeline.until(paused, seconds=30)
    domain = await domain_of(pipeline, name)
    assert (domain["paused_cause"], domain["health"]["consecutive_deferrals"]) == ("deferrals", 2)
    messages = await pipeline.messages(campaign["id"])
    assert [(m["status"], m["retry_count"]) for m in messages] == [("planned", 0)] * 2  # no try spent
    assert pipeline.sink.received == []

    pipeline.sink.handler.answers_from = None  # the storm is over
    pipeline.clock.advance(timedelta(seconds=pipeline.settings.domain_cooldown_seconds + 1))

    async def resumed() -> bool:
        return (await domain_of(pipeline, name))["state"] == "active"

    await pipeline.until(resumed, seconds=30)
    domain = await domain_of(pipeline, name)
    assert domain["health"]["consecutive_deferrals"] == 0
    pipeline.clock.advance(timedelta(seconds=pipeline.settings.pace_max_interval_seconds))  # past any pace

    async def all_sent() -> bool:
        return [m["status"] for m in await pipeline.messages(campaign["id"])] == ["sent"] * 2

    await pipeline.until(all_sent, seconds=30)
    assert sorted(r.rcpt_tos[0] for r in pipeline.sink.received) == [
        f"{tag}@a-{tag}.example",
        f"{tag}@b-{tag}.example",
    ]
