"""The message store (`shared/db/message_store.py`): every transition from every status has exactly its
declared effects or none, any sequence of them keeps the counters true, and the served KPIs equal the truth
recomputed from the rows after a run of the real services that mixes every outcome."""

from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.db import asyncpg_dsn, create_engine, session_factory
from shared.db import message_store as store
from shared.db.message_store import Db, on_session
from shared.lifecycle import RULES
from shared.message_states import TRANSITIONS, UNSENT, MessageStatus, transition
from shared.settings import Settings
from tests.support import store_world
from tests.support.api import ALWAYS_OPEN
from tests.support.pipeline import Pipeline
from tests.support.samples import pixel_of, postfix_dsn
from tests.support.store_world import NOW, TODAY, ZONE, World
from tests.support.truth import kpi_days, kpi_truth

pytestmark = pytest.mark.integration


async def test_served_kpis_equal_the_truth_after_a_mixed_run(pipeline: Pipeline, settings: Settings) -> None:
    outcomes = ["sent"] * 6 + ["smtp_bounce", "failure"]  # by lead; opens, unsubscribes and a DSN follow
    campaign, lead_ids = await pipeline.campaign(
        leads=len(outcomes),
        followup={"enabled": True, "days": 2},
        schedule={"start_mode": "draft", "window": ALWAYS_OPEN},
    )
    emails = [(await pipeline.api.get(f"/leads/{lead}"))["email"] for lead in lead_ids]
    pipeline.sink.handler.reply_to.update(
        {emails[6]: "550 5.1.1 no such user", emails[7]: "451 4.3.0 try again later"}
    )
    assert (await pipeline.api.http.post(f"/campaigns/{campaign['id']}/start")).status_code == 200

    async def settled() -> bool:
        statuses = [m["status"] for m in await pipeline.messages(campaign["id"]) if not m["is_followup"]]
        return statuses.count("sent") == 6 and "failed" in statuses and "bounced" in statuses

    await pipeline.until(settled, seconds=30)
    mails = {m.rcpt_tos[0]: m for m in pipeline.sink.received if m.rcpt_tos[0] in emails}

    async with httpx.AsyncClient(base_url=pipeline.tracker_url) as tracker:
        # A scanner right away (machine), then people an hour later, one of them twice.
        await tracker.get(pixel_of(mails[emails[0]]), headers={"User-Agent": "Barracuda Sentinel"})
        pipeline.clock.advance(timedelta(hours=1))
        for index in (0, 1, 2, 2):
            await tracker.get(
                pixel_of(mails[emails[index]]), headers={"User-Agent": "Mozilla/5.0 Thunderbird"}
            )
        await tracker.get(pixel_of(mails[emails[3]]), headers={"User-Agent": "Barracuda Sentinel"})
        unsubscribe = mails[emails[4]].message["List-Unsubscribe"].split("<")[1].split(">")[0]
        assert (await tracker.post(unsubscribe)).status_code == 200
        dsn = postfix_dsn(mails[emails[5]].mail_from, mails[emails[5]].message["Message-ID"])
        secret = {"X-Maildash-Secret": settings.inbound_secret}
        bounced = await tracker.post("/inbound/bounces", content=dsn, headers=secret)
        assert bounced.json()["data"]["recorded"] is True
        # Repeats count nothing new.
        await tracker.post(unsubscribe)
        await tracker.post("/inbound/bounces", content=dsn, headers=secret)

    pipeline.clock.advance(timedelta(days=2, hours=1))  # the follow-ups of the leads still active go out

    async def completed() -> bool:
        return (await pipeline.api.get(f"/campaigns/{campaign['id']}"))["status"] == "completed"

    await pipeline.until(completed, seconds=30)

    truth = await kpi_truth(settings, uuid.UUID(campaign["id"]))
    per_day = await kpi_days(settings, uuid.UUID(campaign["id"]))
    served = await pipeline.api.get(f"/campaigns/{campaign['id']}")
    kpis = served["kpis"]
    at_smtp = truth.pop("at_smtp")
    assert {name: kpis[name] for name in truth} == truth
    # The mix really happened: every kind of outcome is in the truth.
    assert truth["total_sent"] == 6 + 4  # the originals, then follow-ups to 0, 1, 2 and 3
    assert (truth["total_bounced"], at_smtp, truth["total_failed"]) == (2, 1, 1)
    assert (truth["total_opened"], truth["total_opened_human"], truth["total_unsubscribed"]) == (4, 3, 1)
    assert (truth["total_planned"], truth["total_cancelled"]) == (8 + 6, 2)  # follow-ups of 4 and 5 cancelled
    assert kpis["bounce_rate"] == pytest.approx(2 / (truth["total_sent"] + at_smtp))
    # The timeline's store (served up to today; this run's clock went days ahead) adds up to the totals.
    for column in ("planned", "sent", "bounced"):
        assert sum(day[column] for day in per_day.values()) == kpis[f"total_{column}"], column


# Every (status, transition) pair, straight on the store: allowed with exactly its declared effects, or
# refused with nothing changed. Each case runs in a transaction that is rolled back.


@pytest.fixture(scope="module")
async def db(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(asyncpg_dsn(settings.database_url))
    yield connection
    await connection.close()


def expected(before: dict[str, Any], world: World, name: str, status: MessageStatus) -> dict[str, Any]:
    """The snapshot after transition `name` of the world's message in `status`, from its declaration alone."""
    declared = TRANSITIONS[name]
    after = copy.deepcopy(before)
    if status not in declared.sources:
        return after
    message = world.messages[0]
    reached = transition(status, name)
    cancelled = 0
    if declared.cancels == "unsent" and reached in UNSENT:
        reached, cancelled = MessageStatus.CANCELLED, cancelled + 1
    after["messages"][message]["status"] = reached
    if declared.cancels is not None:  # the sibling is the lead's planned follow-up
        after["messages"][world.sibling]["status"] = MessageStatus.CANCELLED
        cancelled += 1
    for counter, n in {**declared.counters}.items():
        after["counters"][counter] += n
    after["counters"]["cancelled"] += cancelled
    if declared.day is not None:
        moves = {TODAY: 1} if name != "reslot" else {TODAY: -1, TODAY + timedelta(days=2): 1}
        for day, n in moves.items():
            after["days"][day, declared.day] = after["days"].get((day, declared.day), 0) + n
        after["days"] = {key: n for key, n in after["days"].items() if n}
    if declared.history is not None:
        after["history"].append((message, declared.history))
    if declared.announce is not None:
        after["outbox"].append(declared.announce.routing_key)
    if declared.campaign is not None:
        after["campaigns"][world.campaign] = RULES[declared.campaign][1]
    if declared.lead is not None:
        after["leads"][world.lead] = declared.lead
    if declared.suppress:
        after["suppressed"].append(world.email)
    return after


def compared(snapshot: dict[str, Any], refused: bool) -> dict[str, Any]:
    """A refused transition must leave every column as it was; an allowed one is judged by its effects."""
    if refused:
        return snapshot
    return {**snapshot, "messages": {id_: row["status"] for id_, row in snapshot["messages"].items()}}


async def check(db: Db, name: str, status: MessageStatus) -> None:
    declared = TRANSITIONS[name]
    campaign_status = "running" if declared.campaign is None else min(RULES[declared.campaign][0])
    world = await store_world.build(db, campaign_status)
    await store_world.put(db, world.messages[0], status)
    before = await store_world.snapshot(db, world)
    await store_world.run(db, world, name, world.messages[0])
    refused = status not in declared.sources
    want = expected(before, world, name, status)
    assert compared(await store_world.snapshot(db, world), refused) == compared(want, refused)


@pytest.mark.parametrize("status", list(MessageStatus))
@pytest.mark.parametrize("name", store_world.RUNNABLE)
async def test_a_transition_from_any_status_has_its_declared_effects_or_none(
    db: asyncpg.Connection, name: str, status: MessageStatus
) -> None:
    transaction = db.transaction()
    await transaction.start()
    try:
        await check(db, name, status)
    finally:
        await transaction.rollback()


@pytest.mark.parametrize("name", store_world.RUNNABLE)
async def test_the_orm_path_runs_the_same_transitions(settings: Settings, name: str) -> None:
    """What the api, scheduler and tracker run through a session: the same statements, the same effects."""
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            await session.begin()
            await check(on_session(session), name, min(TRANSITIONS[name].sources))
            await session.rollback()
    finally:
        await engine.dispose()


async def test_a_claim_given_back_is_planned_again_only_while_it_is_the_senders_own(
    db: asyncpg.Connection,
) -> None:
    """A sender whose COMMIT went unanswered gives its claim back: the message is planned again with no try
    spent, unless the claim is another's (its own was rolled back, and another sender claimed it since)."""
    transaction = db.transaction()
    await transaction.start()
    try:
        world = await store_world.build(db)
        [message] = world.messages
        await store_world.put(db, message, MessageStatus.SENDING)  # claimed an hour before NOW
        claimed_at = NOW - timedelta(hours=1)
        assert not await store.give_back(db, message, claimed_at - timedelta(microseconds=1), NOW)
        assert await db.fetchval("SELECT status FROM messages WHERE id = $1", message) == "sending"
        assert await store.give_back(db, message, claimed_at, NOW)
        row = await db.fetchrow("SELECT status, retry_count, not_before FROM messages WHERE id = $1", message)
        assert (row["status"], row["retry_count"], row["not_before"]) == ("planned", 0, NOW)
        assert not await store.give_back(db, message, claimed_at, NOW)  # once
    finally:
        await transaction.rollback()


async def test_plan_counts_each_new_message_on_its_slot_day_and_one_without_a_slot_as_failed(
    db: asyncpg.Connection,
) -> None:
    transaction = db.transaction()
    await transaction.start()
    try:
        world = await store_world.build(db, messages=3)
        later = NOW + timedelta(days=3)
        unplanned = store_world.message_row(
            world.workspace, world.campaign, world.lead, world.domain, later, status=MessageStatus.FAILED
        )
        await store.plan(db, world.campaign, [unplanned], {})
        seen = await store_world.snapshot(db, world)
        assert seen["counters"]["planned"] == 5  # three and one here, the sibling in the other campaign
        assert seen["counters"]["failed"] == 1
        assert seen["days"] == {(TODAY, "planned"): 3, (TODAY + timedelta(days=1), "planned"): 1}
        statuses = sorted(row["status"] for row in seen["messages"].values())
        assert statuses == [MessageStatus.FAILED] + [MessageStatus.PLANNED] * 4
    finally:
        await transaction.rollback()


# Any sequence of transitions keeps the counters equal to a recount from the rows. `unsubscribed` counts a
# lead's unsubscribing, which leaves no row of its own once the lead bounces: it is left out of the recount.
# A complaint is counted with its history row, which only the lead's first complaint writes.
RECOUNT = """
WITH accepted AS (SELECT DISTINCT message_id FROM message_events WHERE kind = 'sent' AND campaign_id = $1)
SELECT
  count(*) AS planned,
  count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
  (SELECT count(*) FROM accepted) AS sent,
  count(*) FILTER (WHERE opened_at IS NOT NULL) AS opened,
  count(*) FILTER (WHERE human_opened_at IS NOT NULL) AS opened_human,
  (SELECT count(*) FROM message_events WHERE kind = 'opened' AND campaign_id = $1) AS opens_total,
  count(*) FILTER (WHERE status = 'bounced') AS bounced,
  count(*) FILTER (WHERE status = 'bounced' AND id NOT IN (SELECT message_id FROM accepted))
    AS bounced_at_smtp,
  count(*) FILTER (WHERE status = 'failed') AS failed,
  count(*) FILTER (WHERE replied_at IS NOT NULL) AS replied,
  count(*) FILTER (WHERE clicked_at IS NOT NULL) AS clicked,
  (SELECT count(*) FROM message_events WHERE kind = 'complained' AND campaign_id = $1) AS complained
FROM messages WHERE campaign_id = $1
"""
RECOUNT_DAYS = """
SELECT day, column_name, count(*)::int AS n FROM (
  SELECT (scheduled_at AT TIME ZONE $2)::date AS day, 'planned' AS column_name
  FROM messages WHERE campaign_id = $1
  UNION ALL
  SELECT (occurred_at AT TIME ZONE $2)::date, kind FROM message_events
  WHERE campaign_id = $1 AND kind IN ('sent', 'bounced', 'complained')
  UNION ALL
  SELECT (opened_at AT TIME ZONE $2)::date, 'opened'
  FROM messages WHERE campaign_id = $1 AND opened_at IS NOT NULL
  UNION ALL
  SELECT (replied_at AT TIME ZONE $2)::date, 'replied'
  FROM messages WHERE campaign_id = $1 AND replied_at IS NOT NULL
  UNION ALL
  SELECT (clicked_at AT TIME ZONE $2)::date, 'clicked'
  FROM messages WHERE campaign_id = $1 AND clicked_at IS NOT NULL
) AS happened GROUP BY 1, 2
"""
# Each step's figures, kept by the database's trigger (migration 0015), against the same rows.
RECOUNT_STEPS = """
WITH accepted AS (SELECT DISTINCT message_id FROM message_events WHERE kind = 'sent' AND campaign_id = $1)
SELECT step, count(*)::int AS planned,
  count(*) FILTER (WHERE id IN (SELECT message_id FROM accepted))::int AS sent,
  count(opened_at)::int AS opened, count(human_opened_at)::int AS opened_human,
  count(replied_at)::int AS replied, count(clicked_at)::int AS clicked,
  count(*) FILTER (WHERE status = 'bounced')::int AS bounced,
  count(*) FILTER (WHERE status = 'cancelled')::int AS cancelled,
  count(*) FILTER (WHERE status = 'cancelled' AND last_error LIKE 'skipped: %')::int AS skipped
FROM messages WHERE campaign_id = $1 GROUP BY step
"""
STORED_STEPS = """
SELECT step, sum(planned)::int AS planned, sum(sent)::int AS sent, sum(opened)::int AS opened,
  sum(opened_human)::int AS opened_human, sum(replied)::int AS replied, sum(clicked)::int AS clicked,
  sum(bounced)::int AS bounced, sum(cancelled)::int AS cancelled, sum(skipped)::int AS skipped
FROM campaign_step_kpis WHERE campaign_id = $1 GROUP BY step
"""
STEPS = st.lists(
    st.tuples(st.sampled_from(store_world.RUNNABLE), st.integers(0, 2), st.integers(0, 72)), max_size=14
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
async def test_any_sequence_of_transitions_keeps_the_counters_equal_to_a_recount(
    db: asyncpg.Connection, steps: list[tuple[str, int, int]]
) -> None:
    transaction = db.transaction()
    await transaction.start()
    try:
        world = await store_world.build(db, messages=3, leads=2)
        for name, index, hours in steps:
            await store_world.run(db, world, name, world.messages[index], NOW + timedelta(hours=hours))
        recounted = dict((await db.fetch(RECOUNT, world.campaign))[0])
        stored = await store_world.snapshot(db, world, [world.campaign])
        assert {name: stored["counters"][name] for name in recounted} == recounted
        days = await db.fetch(RECOUNT_DAYS, world.campaign, ZONE)
        assert stored["days"] == {(row["day"], row["column_name"]): row["n"] for row in days}
        by_step = {row["step"]: dict(row) for row in await db.fetch(RECOUNT_STEPS, world.campaign)}
        assert {row["step"]: dict(row) for row in await db.fetch(STORED_STEPS, world.campaign)} == by_step
    finally:
        await transaction.rollback()
