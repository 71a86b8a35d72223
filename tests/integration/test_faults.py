"""A campaign under faults, the scheduler and senders as separate processes, judged from the SMTP sink and
the database only: every lead is planned once and gets its e-mail once (or its message ends failed), no
domain is burst, KPIs are the truth. Each case also shows, from the sink or the services' logs, that its
fault happened.

`make test` runs these with 100 leads (10 a domain: each fault still lands mid-campaign), the restarts of
PostgreSQL and RabbitMQ included; `make faults` runs them with 2,000 (MAILDASH_FAULT_LEADS).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from sqlalchemy import select, text

from shared.db import create_engine, session_factory
from shared.db.models import Campaign, Lead, Message
from shared.events import SendMessage
from shared.messaging import Topology
from shared.settings import Settings
from tests.support.api import ALWAYS_OPEN, ApiClient
from tests.support.broker import take_dead_letters
from tests.support.processes import socket_owner
from tests.support.smtp import SmtpSink
from tests.support.stack import ServiceProcess, subprocess_service, with_ports
from tests.support.truth import kpi_truth

pytestmark = [pytest.mark.integration, pytest.mark.alone]

LEADS = int(os.environ.get("MAILDASH_FAULT_LEADS", "100"))
DOMAINS = 10
INTERVAL = 1  # seconds between two e-mails of one domain
GRACE = 0.25  # min(60 s, interval / 4)
CAMPAIGN_SECONDS = LEADS / DOMAINS * INTERVAL * 3  # what a campaign may take, three times its pace
# What a restart may add: a dispatch whose command the broker lost is released after 120 s.
RESTART_SECONDS = 200
VERP = re.compile(r"bounce\+([0-9a-f]{32})@")
FINAL = {"sent", "bounced", "failed", "cancelled"}
# The sink and the senders read different clocks (monotonic and wall): allow them 10 ms of disagreement.
JITTER = 0.01


@dataclass(frozen=True)
class Run:
    campaign_id: uuid.UUID
    domains: list[str]
    emails: list[str]  # of its leads


async def start_campaign(api: ApiClient, sink: SmtpSink) -> Run:
    tag = uuid.uuid4().hex[:8]
    domains = [f"fault{i}-{tag}.example" for i in range(DOMAINS)]
    for name in domains:
        await api.domain(name, sink.port, interval=INTERVAL)
    emails = [f"lead{i}-{tag}@lead{i % 37}.example" for i in range(LEADS)]
    csv = "email,tags\n" + "".join(f"{email},{tag}\n" for email in emails)
    imported = await api.http.post("/leads/import", files={"file": ("leads.csv", csv.encode(), "text/csv")})
    assert imported.json()["data"]["created"] == LEADS, imported.text
    template = await api.template()
    campaign = await api.create(
        "/campaigns",
        {
            "name": f"fault {tag}",
            "template_id": template["id"],
            "audience": {"mode": "tags", "tags": [tag]},
            "schedule": {"start_mode": "now", "window": ALWAYS_OPEN},
            "domains": domains,
        },
    )
    return Run(uuid.UUID(campaign["id"]), domains, emails)


async def until_finished(settings: Settings, campaign_id: uuid.UUID, seconds: float) -> None:
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        for _ in range(int(seconds * 4)):
            async with session_factory(engine)() as session:
                status = await session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
            if status == "completed":
                return
            await asyncio.sleep(0.25)
        async with session_factory(engine)() as session:
            unfinished = (
                await session.execute(
                    select(Message.id, Message.status, Message.retry_count, Message.scheduled_at)
                    .where(Message.campaign_id == campaign_id, Message.status.not_in(FINAL))
                    .limit(5)
                )
            ).all()
        raise AssertionError(f"campaign still {status} after {seconds} s; unfinished: {unfinished}")
    finally:
        await engine.dispose()


async def judge(api: ApiClient, settings: Settings, sink: SmtpSink, run: Run) -> dict[str, Any]:
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            rows = (
                await session.execute(
                    select(Message.id, Message.status, Message.last_error, Message.retry_count, Lead.email)
                    .join(Lead, Lead.id == Message.lead_id)
                    .where(Message.campaign_id == run.campaign_id)
                )
            ).all()
    finally:
        await engine.dispose()
    # Every lead planned exactly once: not one planned twice and another dropped.
    assert sorted(row.email for row in rows) == sorted(run.emails)
    ours = {row.id.hex: row for row in rows}
    assert {row.status for row in rows} <= FINAL
    assert all(row.last_error for row in rows if row.status == "failed"), "a failure without its reason"

    # Each lead's address at the sink once, in the e-mail of its own message.
    arrived: Counter[str] = Counter()
    for mail in sink.received:
        if (match := VERP.search(mail.mail_from)) and match.group(1) in ours:
            assert mail.rcpt_tos == [ours[match.group(1)].email], "an e-mail went to another lead"
            arrived.update(mail.rcpt_tos)
    twice = [address for address, times in arrived.items() if times > 1]
    assert not twice, f"{len(twice)} leads got their e-mail twice, e.g. {twice[:3]}"
    # None missing but the failed: a sender that died after the server took the e-mail leaves it
    # failed/interrupted, delivered or not (at most once).
    sent = {row.email for row in rows if row.status == "sent"}
    interrupted = {row.email for row in rows if row.last_error == "interrupted"}
    assert sent <= set(arrived) <= sent | interrupted

    # A transaction that reached DATA is an attempt: a message gets one, and one more per retry, never more.
    attempts = Counter(
        match.group(1)
        for _, address in sink.handler.sends
        if (match := VERP.search(address)) and match.group(1) in ours
    )
    beyond = {key: (times, ours[key].retry_count) for key, times in attempts.items()}
    beyond = {key: tries for key, tries in beyond.items() if tries[0] > tries[1] + 1}
    assert not beyond, f"messages attempted more often than their retries allow: {list(beyond.items())[:3]}"
    retries = len(settings.retry_backoff_seconds)

    # A real send is a transaction that reached DATA. A sender SIGKILLed between its server's 250 to MAIL FROM
    # and its claim's commit leaves a MAIL FROM without DATA and without its domain turn recorded: the next
    # sender may then start sooner after that empty transaction, never sooner after a real send.
    starts: dict[str, list[float]] = defaultdict(list)
    for at, address in sink.handler.sends:
        if (match := VERP.search(address)) and match.group(1) in ours:
            starts[address.rsplit("@", 1)[1]].append(at)
    closest = INTERVAL
    for domain in run.domains:
        gaps = [b - a for a, b in pairwise(sorted(starts[domain]))]
        assert min(gaps, default=INTERVAL) >= INTERVAL - GRACE - JITTER, f"{domain} burst: {min(gaps):.3f} s"
        closest = min([closest, *gaps])

    truth = await kpi_truth(settings, run.campaign_id)
    truth.pop("at_smtp")
    kpis = (await api.get(f"/campaigns/{run.campaign_id}"))["kpis"]
    assert {name: kpis[name] for name in truth} == truth
    # No command or event was given up on: a consumer that kept failing one would have dead-lettered it.
    assert not await take_dead_letters(settings)
    counts = {status: sum(1 for row in rows if row.status == status) for status in sorted(FINAL)}
    return counts | {
        "delivered_interrupted": len(set(arrived) & interrupted),
        "at_sink": sum(arrived.values()),
        # refused at the sink, then taken there on a retry
        "sent_after_refusals": sum(
            1
            for key, row in ours.items()
            if row.status == "sent" and attempts[key] == row.retry_count + 1 > 1
        ),
        # failed by the server's answers (not interrupted) before all retries were spent
        "failed_with_retries_left": sum(
            1
            for row in rows
            if row.status == "failed" and row.last_error != "interrupted" and row.retry_count < retries
        ),
        "closest_sends_of_a_domain_s": round(closest, 3),
    }


@pytest.fixture
def fault_settings(settings: Settings) -> Settings:
    # JSON logs: the cases read the services' events to show their fault happened.
    return settings.model_copy(
        update={"retry_backoff_seconds": [1, 2], "poll_seconds": 0.5, "log_format": "json"}
    )


@dataclass(frozen=True)
class Workers:
    schedulers: list[ServiceProcess]
    senders: list[ServiceProcess]


async def services(
    stack: AsyncExitStack, settings: Settings, tmp_path: Path, schedulers: int, senders: int
) -> Workers:
    async def start(name: str) -> ServiceProcess:
        return await stack.enter_async_context(subprocess_service(name, with_ports(settings, name), tmp_path))

    return Workers(
        [await start("scheduler") for _ in range(schedulers)], [await start("sender") for _ in range(senders)]
    )


@pytest.fixture
async def duplicator(settings: Settings) -> AsyncIterator[None]:
    """Every `SendMessage` delivered twice: a second copy of each is published as it passes."""
    topology = Topology(settings.broker_prefix)
    connection = await aio_pika.connect(settings.amqp_url)
    channel = await connection.channel()
    events = await channel.get_exchange(topology.events.name)
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(events, routing_key=SendMessage.routing_key)

    async def copy(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            if not (message.headers or {}).get("x-test-copy"):
                again = aio_pika.Message(message.body, headers={"x-test-copy": True}, delivery_mode=2)
                await events.publish(again, routing_key=SendMessage.routing_key)

    tag = await queue.consume(copy)
    yield
    await queue.cancel(tag)
    await connection.close()


async def run_under(
    fault: Callable[[Workers], Awaitable[None]] | None,
    api: ApiClient,
    settings: Settings,
    sink: SmtpSink,
    tmp_path: Path,
    figures: dict[str, Any],
    schedulers: int = 1,
    senders: int = 2,
    extra_seconds: float = 30,
    witness: Callable[[Workers, Run], Awaitable[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Start the services and a campaign, bring on `fault` while it runs, wait for the end and judge it.
    `witness` looks at the services before they stop, for what the sink and the database cannot show.
    The judgement's counts and the witness's go into `figures`, with the campaign's wall time."""
    started = time.monotonic()
    seen: dict[str, Any] = {}
    async with AsyncExitStack() as stack:
        workers = await services(stack, settings, tmp_path, schedulers, senders)
        run = await start_campaign(api, sink)
        if fault is not None:
            await fault(workers)
        await until_finished(settings, run.campaign_id, seconds=CAMPAIGN_SECONDS + extra_seconds)
        if witness is not None:
            seen = await witness(workers, run)
    counts = await judge(api, settings, sink, run) | seen
    figures.update(messages=LEADS, **counts, seconds=round(time.monotonic() - started))
    return counts


def events_of(processes: list[ServiceProcess], *names: str) -> list[dict[str, Any]]:
    return [event for process in processes for name in names for event in process.logged(name)]


async def message_ids(settings: Settings, campaign_id: uuid.UUID) -> set[str]:
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            ids = await session.scalars(select(Message.id).where(Message.campaign_id == campaign_id))
            return {str(message_id) for message_id in ids}
    finally:
        await engine.dispose()


# A sender refusing a command: the message was claimed already (by its twin), or the deadline passed.
REFUSED = ("sender.message.skipped", "sender.message.late")


async def every_copy_refused(workers: Workers, run: Run, settings: Settings) -> dict[str, Any]:
    """Each dispatch of a message sent two commands and only one can claim it: once the copies still on their
    way are consumed, every message has a refused command in the senders' logs."""
    ours = await message_ids(settings, run.campaign_id)

    def refused() -> set[str]:
        return {event["message_id"] for event in events_of(workers.senders, *REFUSED)} & ours

    for _ in range(120):
        if refused() == ours:
            break
        await asyncio.sleep(0.25)
    assert refused() == ours, f"{len(ours - refused())} of {len(ours)} messages never had a copy refused"
    return {name: len(events_of(workers.senders, name)) for name in REFUSED}


async def everyone_worked(workers: Workers, _: Run) -> dict[str, Any]:
    dispatched = [
        sum(event["dispatched"] for event in scheduler.logged("scheduler.dispatch.done"))
        for scheduler in workers.schedulers
    ]
    sent = [len(sender.logged("sender.message.sent")) for sender in workers.senders]
    assert all(dispatched), f"a scheduler dispatched nothing: {dispatched}"
    assert all(sent), f"a sender sent nothing: {sent}"
    return {"dispatched_by_scheduler": dispatched, "sent_by_sender": sent}


async def test_every_send_command_delivered_twice_sends_each_email_once(
    api: ApiClient,
    fault_settings: Settings,
    smtp_sink: SmtpSink,
    tmp_path: Path,
    figures: dict[str, Any],
    duplicator: None,
) -> None:
    async def copies_refused(workers: Workers, run: Run) -> dict[str, Any]:
        return await every_copy_refused(workers, run, fault_settings)

    counts = await run_under(None, api, fault_settings, smtp_sink, tmp_path, figures, witness=copies_refused)
    assert counts["sent"] == LEADS


async def test_two_schedulers_and_three_senders_share_one_campaign(
    api: ApiClient, fault_settings: Settings, smtp_sink: SmtpSink, tmp_path: Path, figures: dict[str, Any]
) -> None:
    counts = await run_under(
        None,
        api,
        fault_settings,
        smtp_sink,
        tmp_path,
        figures,
        schedulers=2,
        senders=3,
        witness=everyone_worked,
    )
    assert counts["sent"] == LEADS


async def test_a_server_answering_4xx_for_a_while_loses_nothing(
    api: ApiClient, fault_settings: Settings, smtp_sink: SmtpSink, tmp_path: Path, figures: dict[str, Any]
) -> None:
    smtp_sink.handler.reply = "451 4.3.2 System not accepting network messages"

    async def recover_after_4_s(_: Workers) -> None:
        await asyncio.sleep(4)
        smtp_sink.handler.reply = "250 2.0.0 OK: queued"

    counts = await run_under(
        recover_after_4_s, api, fault_settings, smtp_sink, tmp_path, figures, extra_seconds=60
    )
    assert counts["sent"] + counts["failed"] == LEADS
    assert smtp_sink.handler.data_started > len(smtp_sink.received)  # the 4xx answers really happened
    assert counts["sent_after_refusals"] > 0  # a refused e-mail was tried again, and went out
    assert counts["failed_with_retries_left"] == 0  # none was given up before its retries ran out


async def until_paused(api: ApiClient, domains: list[str], seconds: float) -> dict[str, dict[str, Any]]:
    """Each of `domains` as the api shows it, once all are paused."""
    for _ in range(int(seconds * 4)):
        shown = {d["domain"]: d for d in (await api.get("/domains?page_size=200"))["items"]}
        if all(shown[name]["state"] == "paused" for name in domains):
            return {name: shown[name] for name in domains}
        await asyncio.sleep(0.25)
    raise AssertionError(f"not all paused after {seconds} s: {[shown[n]['state'] for n in domains]}")


async def until_settled(settings: Settings, campaign_id: uuid.UUID, seconds: float) -> list[Any]:
    """The campaign's messages once none is on its way to a sender or in an SMTP transaction."""
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        for _ in range(int(seconds * 4)):
            async with session_factory(engine)() as session:
                rows = (
                    await session.execute(
                        select(
                            Message.id, Message.status, Message.domain_used, Message.retry_count, Lead.email
                        )
                        .join(Lead, Lead.id == Message.lead_id)
                        .where(Message.campaign_id == campaign_id)
                    )
                ).all()
            if not {row.status for row in rows} & {"dispatched", "sending"}:
                return list(rows)
            await asyncio.sleep(0.25)
    finally:
        await engine.dispose()
    raise AssertionError(f"messages still on their way after {seconds} s")


async def test_a_server_refusing_mail_by_policy_pauses_each_domain_within_3_sends_and_loses_nothing(
    api: ApiClient, fault_settings: Settings, smtp_sink: SmtpSink, tmp_path: Path, figures: dict[str, Any]
) -> None:
    """From the 31st mail on the server answers 5.7.1: each domain pauses at its third policy rejection,
    begins no SMTP transaction after its pause is recorded, and keeps every message planned (no bounce, no
    retry spent). Resumed, with the server accepting again, the campaign ends as if nothing had happened."""
    refusal = "550 5.7.1 Message refused as spam by policy"
    smtp_sink.answer_from(31, refusal, "rcpt")
    started = time.monotonic()
    async with AsyncExitStack() as stack:
        await services(stack, fault_settings, tmp_path, schedulers=1, senders=2)
        run = await start_campaign(api, smtp_sink)
        paused = await until_paused(api, run.domains, CAMPAIGN_SECONDS)
        rows = await until_settled(fault_settings, run.campaign_id, 30)
        # Nothing lost, nothing spent: every lead planned once, sent or waiting on its paused domain.
        assert sorted(row.email for row in rows) == sorted(run.emails)
        assert {row.status for row in rows} == {"sent", "planned"}
        assert all(row.retry_count == 0 for row in rows)
        assert sum(row.status == "sent" for row in rows) == len(smtp_sink.received) == 30
        assert (await api.get(f"/campaigns/{run.campaign_id}"))["status"] == "running"
        # Each domain's transactions: none begun after its pause was recorded, at most 3 refused before it.
        transactions: dict[str, list[float]] = defaultdict(list)
        for at, address in smtp_sink.handler.mail_from_wall:
            transactions[address.rsplit("@", 1)[1]].append(at)
        refused = Counter(address.rsplit("@", 1)[1] for _, address in smtp_sink.handler.mail_from_wall[30:])
        for name, domain in paused.items():
            assert domain["paused_cause"] == "policy_rejections", domain
            paused_at = datetime.fromisoformat(domain["paused_at"]).timestamp()
            late = [at - paused_at for at in transactions[name] if at > paused_at]
            assert not late, f"{name}: {len(late)} transactions begun after the pause, {late[0]:.3f} s after"
            assert refused[name] <= 3, f"{name} paused after {refused[name]} refusals"
        assert sum(refused.values()) == 3 * DOMAINS  # each domain really met the refusals
        pause_seconds = round(time.monotonic() - started)

        smtp_sink.handler.answers_from = None
        for domain in paused.values():
            assert (await api.http.post(f"/domains/{domain['id']}/resume")).status_code == 200
        await until_finished(fault_settings, run.campaign_id, seconds=CAMPAIGN_SECONDS + 30)
    counts = await judge(api, fault_settings, smtp_sink, run)
    assert counts["sent"] == LEADS
    figures.update(
        messages=LEADS, refused_per_domain=max(refused.values()), paused_after_s=pause_seconds, **counts,
        seconds=round(time.monotonic() - started),
    )  # fmt: skip


@pytest.fixture
def lease_settings(fault_settings: Settings) -> Settings:
    """A short sending lease, so the scheduler marks a dead sender's e-mails interrupted within the test."""
    return fault_settings.model_copy(update={"sending_lease_seconds": 10})


def kill_a_sender_in_data(sink: SmtpSink, senders: list[ServiceProcess], ack: bool) -> asyncio.Event:
    """Arm the sink: in the next DATA phase, SIGKILL the sender holding it. With `ack`, the server takes the
    e-mail first: the sender is stopped, answered 250 and killed before it can record the answer."""
    killed = asyncio.Event()
    test_loop = asyncio.get_running_loop()
    pids = [sender.process.pid for sender in senders]

    async def kill(session: Any) -> str | None:
        sink.handler.on_data = None
        pid = socket_owner(session.peer[1], sink.port, pids)
        loop = asyncio.get_running_loop()
        if ack:
            os.kill(pid, signal.SIGSTOP)
            loop.call_later(0.5, os.kill, pid, signal.SIGKILL)
            loop.call_later(0.5, test_loop.call_soon_threadsafe, killed.set)
            return None
        os.kill(pid, signal.SIGKILL)
        test_loop.call_soon_threadsafe(killed.set)
        return "421 4.3.0 the client is gone"

    sink.handler.on_data = kill
    return killed


@pytest.mark.parametrize("ack", [False, True], ids=["during-data", "during-ack"])
async def test_a_sender_killed_mid_transaction_loses_nothing_and_sends_nothing_twice(
    api: ApiClient,
    lease_settings: Settings,
    smtp_sink: SmtpSink,
    tmp_path: Path,
    figures: dict[str, Any],
    ack: bool,
) -> None:
    async def sigkill(workers: Workers) -> None:
        await some_sent(smtp_sink)
        await asyncio.wait_for(kill_a_sender_in_data(smtp_sink, workers.senders, ack).wait(), 30)

    counts = await run_under(sigkill, api, lease_settings, smtp_sink, tmp_path, figures, extra_seconds=60)
    assert counts["sent"] + counts["failed"] == LEADS
    assert counts["failed"] >= 1  # the killed sender's e-mail in DATA, at least
    if ack:  # the server took that one: delivered, and recorded as interrupted, not as sent
        assert counts["delivered_interrupted"] >= 1
    # The rest flowed on through the surviving sender.
    assert counts["sent"] >= LEADS - 2 * lease_settings.sender_concurrency


# Restarting the PostgreSQL and RabbitMQ the tests use: `make test` and `make faults` ask for it; a plain
# pytest run does not, since other runs on the machine may be using the same servers.
restarts = pytest.mark.skipif(
    os.environ.get("MAILDASH_FAULT_RESTARTS") != "1",
    reason="restarts the servers the tests use: set MAILDASH_FAULT_RESTARTS=1 (`make test` does)",
)
# Longer than the campaign is given, so that a campaign that does not finish says what it left unfinished.
restart_timeout = pytest.mark.timeout(CAMPAIGN_SECONDS + RESTART_SECONDS + 60)


async def command(*argv: str) -> None:
    process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL)
    assert await process.wait() == 0, argv


async def debian_cluster(settings: Settings) -> tuple[str, str]:
    """The version and name of the Debian cluster (`pg_ctlcluster`) of the server the tests use."""
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            name = str(await connection.scalar(text("SHOW cluster_name")))
    finally:
        await engine.dispose()
    version, slash, cluster = name.partition("/")
    assert slash, f"not a Debian cluster (cluster_name {name!r}): cannot restart it"
    return version, cluster


async def some_sent(sink: SmtpSink, count: int = 20) -> None:
    await sink.wait_for(len(sink.received) + count, timeout=60)


@restarts
@restart_timeout
async def test_rabbitmq_stopped_and_started_mid_campaign_loses_nothing(
    api: ApiClient, fault_settings: Settings, smtp_sink: SmtpSink, tmp_path: Path, figures: dict[str, Any]
) -> None:
    async def broker_away_for_5_s(_: Workers) -> None:
        await some_sent(smtp_sink)
        try:  # the local node, or the one RABBITMQ_NODENAME names
            await command("rabbitmqctl", "-q", "stop_app")
            await asyncio.sleep(5)
        finally:
            await command("rabbitmqctl", "-q", "start_app")

    counts = await run_under(
        broker_away_for_5_s, api, fault_settings, smtp_sink, tmp_path, figures, extra_seconds=RESTART_SECONDS
    )
    assert counts["sent"] == LEADS


@restarts
@restart_timeout
async def test_postgresql_restarted_mid_campaign_loses_nothing(
    api: ApiClient, fault_settings: Settings, smtp_sink: SmtpSink, tmp_path: Path, figures: dict[str, Any]
) -> None:
    version, cluster = await debian_cluster(fault_settings)

    async def database_restart(_: Workers) -> None:
        await some_sent(smtp_sink)
        await command("pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, "restart")

    counts = await run_under(
        database_restart, api, fault_settings, smtp_sink, tmp_path, figures, extra_seconds=RESTART_SECONDS
    )
    # A sender that got the server's answer while the database was away records it once it is back.
    assert counts["sent"] == LEADS
