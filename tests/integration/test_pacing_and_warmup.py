"""Adaptive pacing per receiving provider and warm-up, with real parts: recipients' MX records in a real DNS
server (dnsmasq), a receiving SMTP server (aiosmtpd) that starts answering 421 4.7.0 to one provider's mails,
the scheduler and sender in this process on the real clock, and PostgreSQL as the judge."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import Any

import asyncpg
import pytest

from services.api.main import create_app as create_api
from services.scheduler.main import create_app as create_scheduler
from services.scheduler.providers import ProviderLookups
from services.sender.main import create_app as create_sender
from shared.clock import utcnow
from shared.db import asyncpg_dsn, create_engine, session_factory
from shared.db.models import SendingDomain
from shared.db.slots import lead_providers, load_domains
from shared.settings import Settings
from tests.support.api import ALWAYS_OPEN, ApiClient
from tests.support.clock import MovableClock
from tests.support.dns import Zone, needs_dnsmasq, running_dns
from tests.support.pipeline import until
from tests.support.smtp import SmtpSink, free_port, running_sink
from tests.support.stack import inprocess_service
from tools.smtp_sink import AnswerFrom

pytestmark = [pytest.mark.integration, needs_dnsmasq]

PROVIDER_A, PROVIDER_B = "provider-a.example", "provider-b.example"
DEFERRAL = "421 4.7.0 Try again later, closing connection"
SLACK = 0.05  # seconds: the sink's clock against the sender's, and the time between them


@dataclass
class Stack:
    api: ApiClient
    sink: SmtpSink
    settings: Settings
    suffix: str
    dns: str  # the DNS server, as `Settings.dns_server` takes it
    restart_sender: Callable[[], Awaitable[None]]

    def recipient(self, name: str) -> str:
        return f"{name}-{self.suffix}.example"

    async def until(self, probe: Callable[[], Awaitable[bool]], seconds: float = 60.0) -> None:
        await until(probe, seconds)

    async def query(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        connection = await asyncpg.connect(asyncpg_dsn(self.settings.database_url))
        try:
            return list(await connection.fetch(sql, *args))
        finally:
            await connection.close()


@pytest.fixture(scope="module")
async def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """Two recipient domains whose MX hosts belong to provider A, a third at provider B; api, scheduler and
    sender with a small pace (floor 1 s, cap 8 s) and that DNS server. Each test sends from domains of its
    own."""
    suffix = uuid.uuid4().hex[:8]
    zone = Zone(
        mx={
            f"alpha-{suffix}.example": [(10, f"mx1.{PROVIDER_A}"), (20, f"mx2.{PROVIDER_A}")],
            f"beta-{suffix}.example": [(5, f"inbound.eu.{PROVIDER_A}"), (50, "mx.backup.example")],
            f"gamma-{suffix}.example": [(10, f"mx.{PROVIDER_B}")],
            f"delta-{suffix}.example": [(10, f"mx.{PROVIDER_A}")],  # for the look-ups alone
            f"epsilon-{suffix}.example": [(10, f"mx.{PROVIDER_B}")],
        }
    )
    directory = tmp_path_factory.mktemp("dns")
    async with running_dns(zone, directory) as dns, running_sink() as sink, AsyncExitStack() as services:
        tuned = settings.model_copy(
            update={
                "dns_server": dns,
                "pace_floor_seconds": 1,
                "pace_max_interval_seconds": 8,
                "pace_quiet_seconds": 3600,
            }
        )
        api_url = await services.enter_async_context(inprocess_service(create_api, tuned, free_port()))
        await services.enter_async_context(inprocess_service(create_scheduler, tuned, free_port()))
        sender = AsyncExitStack()
        await sender.enter_async_context(inprocess_service(create_sender, tuned, free_port()))

        async def restart_sender() -> None:
            await sender.aclose()
            await sender.enter_async_context(inprocess_service(create_sender, tuned, free_port()))

        try:
            async with ApiClient(api_url) as api:
                await api.login()
                yield Stack(api, sink, tuned, suffix, dns, restart_sender)
        finally:
            await sender.aclose()


def _attempts(sink: SmtpSink, recipient_of: dict[str, str]) -> list[tuple[float, str]]:
    """(MAIL FROM time, recipient domain) of every SMTP transaction of these messages (by id without dashes)
    that reached DATA, in order; the VERP return path names the message."""
    named = [(at, mail_from.split("+", 1)[1].split("@")[0]) for at, mail_from in sink.handler.sends]
    return [(at, recipient_of[message]) for at, message in named if message in recipient_of]


async def test_a_provider_that_defers_is_paced_while_another_keeps_the_domains_pace(stack: Stack) -> None:
    api, sink = stack.api, stack.sink
    alpha, beta, gamma = (stack.recipient(name) for name in ("alpha", "beta", "gamma"))
    domain = await api.domain(f"paced-{stack.suffix}.example", sink.port, interval=1)
    # The second alpha lead's slot comes a second after beta's deferral: its sender re-plans it at the pace.
    order = [alpha, beta, alpha, gamma, gamma, gamma, gamma, gamma]
    leads = [(await api.lead(f"lead{i}@{name}"))["id"] for i, name in enumerate(order)]
    # Provider A (alpha and beta) starts deferring at its second mail; provider B never does.
    sink.handler.answers_from = AnswerFrom(2, DEFERRAL, to=lambda rcpt: rcpt.endswith((alpha, beta)))
    template = await api.template()
    # A start a second ahead: the recipients' providers are looked up before the first slot.
    start_at = (utcnow() + timedelta(seconds=1)).isoformat()
    schedule = {"start_mode": "at", "start_at": start_at, "window": ALWAYS_OPEN}
    campaign = await api.campaign(template["id"], leads, [domain["domain"]], schedule=schedule)

    async def paces() -> list[asyncpg.Record]:
        return await stack.query(
            "SELECT provider, interval_seconds, deferrals FROM provider_paces WHERE sending_domain_id = $1",
            uuid.UUID(domain["id"]),
        )

    async def deferred_twice() -> bool:
        return any(row["deferrals"] >= 2 for row in await paces())

    await stack.until(deferred_twice)
    sink.handler.answers_from = None  # the provider takes mail again
    # One provider for both recipient domains, its pace doubled twice: 1 s → 2 s → 4 s.
    assert [tuple(row) for row in await paces()] == [(PROVIDER_A, 4, 2)]
    detail = await api.get(f"/domains/{domain['id']}")
    [pace] = detail["pacing"]
    assert (pace["provider"], pace["interval_seconds"], pace["deferrals"]) == (PROVIDER_A, 4, 2)
    assert datetime.fromisoformat(pace["until"]) > datetime.fromisoformat(pace["deferred_at"])
    messages = (await api.get(f"/campaigns/messages?campaign_id={campaign['id']}&page_size=50"))["items"]
    deferred = [m for m in messages if (m["last_error"] or "").startswith("421 4.7.0")]
    assert deferred
    assert {m["lead_email"].split("@")[1] for m in deferred} <= {alpha, beta}
    assert all(m["status"] in ("planned", "dispatched", "sending") for m in deferred)
    assert all(m["retry_count"] == 0 for m in deferred)  # a deferral spends no try

    await stack.restart_sender()  # the pace lives in PostgreSQL: the new sender keeps it
    assert [tuple(row) for row in await paces()] == [(PROVIDER_A, 4, 2)]

    async def completed() -> bool:
        return (await api.get(f"/campaigns/{campaign['id']}"))["status"] == "completed"

    await stack.until(completed)
    messages = (await api.get(f"/campaigns/messages?campaign_id={campaign['id']}&page_size=50"))["items"]
    assert sorted(m["status"] for m in messages) == ["sent"] * len(order)
    assert {m["retry_count"] for m in messages} == {0}
    received = Counter(r.rcpt_tos[0] for r in sink.received)
    assert [received[f"lead{i}@{name}"] for i, name in enumerate(order)] == [1] * len(order)
    providers = await stack.query(
        "SELECT domain, provider FROM recipient_providers WHERE domain = ANY($1)", [alpha, beta, gamma]
    )
    assert dict(map(tuple, providers)) == {alpha: PROVIDER_A, beta: PROVIDER_A, gamma: PROVIDER_B}
    history = await stack.query(
        "SELECT e.data->>'provider' FROM message_events e JOIN messages m ON m.id = e.message_id"
        " WHERE m.campaign_id = $1 AND e.kind = 'deferred'",
        uuid.UUID(campaign["id"]),
    )
    assert [row[0] for row in history] == [PROVIDER_A, PROVIDER_A]

    recipient_of = {m["id"].replace("-", ""): m["lead_email"].split("@")[1] for m in messages}
    attempts = _attempts(sink, recipient_of)
    to_a = [at for at, name in attempts if name in (alpha, beta)]
    to_b = [at for at, name in attempts if name == gamma]
    assert (len(to_a), len(to_b)) == (3 + 2, 5)  # two of provider A's mails were tried twice
    # The domain's own throttle holds for every attempt: 1 s less its grace (a quarter).
    assert all(b - a >= 0.75 - SLACK for a, b in pairwise(sorted(to_a + to_b)))
    # Towards provider A: after the first deferral 2 s apart, after the second 4 s (less a quarter's grace).
    gaps = [b - a for a, b in pairwise(to_a)]
    assert gaps[1] >= 1.5 - SLACK
    assert all(gap >= 3.0 - SLACK for gap in gaps[2:])
    # Provider B kept the domain's pace meanwhile: it had sends closer together than A's slower pace.
    assert min(b - a for a, b in pairwise(to_b)) < 3.0

    # Planning keeps the pace too: in a dry-run now, A's leads are the pace apart, B's the domain's interval.
    more = [(await api.lead(f"more{i}@{name}"))["id"] for i, name in enumerate([alpha, gamma, beta, gamma])]
    wizard = {
        "name": "more",
        "template_id": template["id"],
        "audience": {"mode": "static", "lead_ids": more},
        "schedule": {"start_mode": "now", "window": ALWAYS_OPEN},
        "domains": [domain["domain"]],
    }
    planned = await stack.api.http.post("/campaigns/dry-run", json=wizard)
    assert planned.status_code == 200, planned.text
    slots = [datetime.fromisoformat(slot["scheduled_at"]) for slot in planned.json()["data"]["slots"]]
    assert (slots[2] - slots[0]).total_seconds() >= 4
    assert (slots[3] - slots[1]).total_seconds() <= 2


async def test_providers_are_looked_up_by_mx_kept_for_their_ttl_and_asked_again_when_dns_was_away(
    stack: Stack,
) -> None:
    delta, epsilon = stack.recipient("delta"), stack.recipient("epsilon")
    unknown = f"nothing-{stack.suffix}.example"  # no MX: its own provider
    domains = [delta, epsilon, unknown]
    # Due an hour from now: on this test's clock, not on the running scheduler's, which leaves them alone.
    await stack.query(
        "INSERT INTO recipient_providers (domain, expires_at)"
        " SELECT unnest($1::text[]), now() + interval '1 hour'",
        domains,
    )
    clock, wanted = MovableClock(), asyncio.Event()
    clock.advance(timedelta(hours=1, seconds=1))
    silent = free_port()  # nothing answers there
    away = stack.settings.model_copy(update={"dns_server": f"127.0.0.1:{silent}", "dns_timeout_seconds": 0.3})
    engine = create_engine(stack.settings.database_url, pool_size=2)
    try:
        sessions = session_factory(engine)
        assert await ProviderLookups(sessions, away, clock, wanted).resolve_due(batch=100) >= 3

        async def rows() -> dict[str, asyncpg.Record]:
            found = await stack.query("SELECT * FROM recipient_providers WHERE domain = ANY($1)", domains)
            return {row["domain"]: row for row in found}

        # DNS away: nothing known, planning lets each domain stand for itself; asked again after the retry.
        for row in (await rows()).values():
            assert row["provider"] is None
            assert row["wanted"]
            assert "no DNS answer" in row["error"]
            again = row["expires_at"] - clock()
            assert timedelta(seconds=299) < again <= timedelta(seconds=300)
        assert await ProviderLookups(sessions, stack.settings, clock, wanted).resolve_due(batch=100) == 0

        clock.advance(timedelta(seconds=301))
        assert await ProviderLookups(sessions, stack.settings, clock, wanted).resolve_due(batch=100) >= 3
        found = await rows()
        assert {domain: row["provider"] for domain, row in found.items()} == {
            delta: PROVIDER_A,
            epsilon: PROVIDER_B,
            unknown: unknown,
        }
        assert not any(row["wanted"] or row["error"] for row in found.values())
        # dnsmasq gives its records a TTL of 0: kept the least time, a minute; a domain without MX an hour.
        kept = {domain: row["expires_at"] - clock() for domain, row in found.items()}
        assert timedelta(seconds=55) < kept[delta] <= timedelta(seconds=60)
        assert timedelta(seconds=3595) < kept[unknown] <= timedelta(seconds=3600)
    finally:
        await engine.dispose()


async def test_planning_reads_more_ids_than_one_statement_takes_parameters(stack: Stack) -> None:
    """A resume re-plans every unsent message of a campaign at once: more ids than asyncpg's 32,767
    parameters of one statement."""
    domain = await stack.api.domain(f"many-{stack.suffix}.example", stack.sink.port, interval=60)
    domain_id = uuid.UUID(domain["id"])
    await stack.query(
        "INSERT INTO provider_paces (sending_domain_id, provider, workspace_id, interval_seconds, slowed_at)"
        " SELECT id, 'slow.example', workspace_id, 3600, now() FROM sending_domains WHERE id = $1",
        domain_id,
    )
    engine = create_engine(stack.settings.database_url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            row = await session.get_one(SendingDomain, domain_id)
            ids = [uuid.uuid4() for _ in range(40_000)]
            loads = await load_domains(session, [row], utcnow(), stack.settings.pace_rules, ids, lock=False)
            assert set(loads[domain_id].slowdowns) == {"slow.example"}
            assert await lead_providers(session, loads.values(), ids) == {}
    finally:
        await engine.dispose()


async def test_a_warmup_plans_day_by_day_beside_the_daily_cap(stack: Stack) -> None:
    api = stack.api
    first_day = datetime.now(UTC).date() + timedelta(days=2)
    warmup = {
        "start_per_day": 2,
        "growth_percent": 50,
        "max_per_day": 10,
        "start_date": first_day.isoformat(),
    }
    domain = await api.domain(f"warm-{stack.suffix}.example", stack.sink.port, interval=60, warmup=warmup)
    assert domain["warmup"] == warmup
    leads = [(await api.lead(f"w{i}@{stack.recipient('gamma')}"))["id"] for i in range(30)]
    template = await api.template()
    start = datetime.combine(first_day, datetime.min.time(), UTC)
    wizard = {
        "name": "warm",
        "template_id": template["id"],
        "audience": {"mode": "static", "lead_ids": leads[:20]},
        "schedule": {
            "start_mode": "at",
            "start_at": start.isoformat(),
            "window": {**ALWAYS_OPEN, "timezone": "UTC"},
        },
        "domains": [domain["domain"]],
    }

    async def per_day(payload: dict[str, Any]) -> dict[date, int]:
        planned = await api.http.post("/campaigns/dry-run", json=payload)
        assert planned.status_code == 200, planned.text
        return {date.fromisoformat(day["date"]): day["count"] for day in planned.json()["data"]["per_day"]}

    def days(*counts: int, skip: int = 0) -> dict[date, int]:
        return {first_day + timedelta(days=skip + n): count for n, count in enumerate(counts)}

    # 2, 3, 4.5 → 4, 6.75 → 6, then the last 5 of the 20 (10.125 → 10 allowed).
    assert await per_day(wizard) == days(2, 3, 4, 6, 5)

    # A real start plans the same days.
    campaign = await api.create("/campaigns", wizard)

    async def messages() -> list[dict[str, Any]]:
        found = await api.get(f"/campaigns/messages?campaign_id={campaign['id']}&page_size=50")
        return list(found["items"])

    async def planned_all() -> bool:
        return len(await messages()) == 20

    await stack.until(planned_all, seconds=20)
    starts = [datetime.fromisoformat(m["scheduled_at"]).astimezone(UTC).date() for m in await messages()]
    assert {day: starts.count(day) for day in set(starts)} == days(2, 3, 4, 6, 5)

    # The domain's own daily cap, lower than the plan from its third day, holds beside it, and both count
    # every campaign's e-mails: the days above are full, 10 more leads take 3 a day after them.
    assert (await api.http.patch(f"/domains/{domain['id']}", json={"daily_cap": 3})).status_code == 200
    more = {**wizard, "audience": {"mode": "static", "lead_ids": leads[20:]}}
    assert await per_day(more) == days(3, 3, 3, 1, skip=5)


async def test_the_domain_detail_says_where_its_warmup_stands_today(stack: Stack) -> None:
    api = stack.api
    # Without a start date the plan starts today (in the default window's time zone, Europe/Amsterdam).
    plan = {"start_per_day": 2, "growth_percent": 100, "max_per_day": 50}
    domain = await api.domain(f"today-{stack.suffix}.example", stack.sink.port, interval=1, warmup=plan)
    leads = [(await api.lead(f"t{i}@{stack.recipient('gamma')}"))["id"] for i in range(3)]
    template = await api.template()
    campaign = await api.campaign(
        template["id"], leads, [domain["domain"]], schedule={"start_mode": "now", "window": ALWAYS_OPEN}
    )

    async def two_sent() -> bool:
        statuses = [
            m["status"] for m in (await api.get(f"/campaigns/messages?campaign_id={campaign['id']}"))["items"]
        ]
        return statuses.count("sent") == 2

    await stack.until(two_sent, seconds=30)
    warmup = (await api.get(f"/domains/{domain['id']}"))["warmup"]
    assert warmup["start_date"] == warmup["today"]
    assert (warmup["day"], warmup["cap_today"]) == (1, 2)
    assert (warmup["planned_today"], warmup["sent_today"]) == (2, 2)  # the third lead waits for tomorrow (4)
    changed = await api.http.patch(f"/domains/{domain['id']}", json={"warmup": {**plan, "max_per_day": 3}})
    assert changed.json()["data"]["warmup"]["start_date"] == warmup["start_date"]  # a change keeps its start


@pytest.mark.parametrize(
    "warmup",
    [
        {"start_per_day": 20, "growth_percent": 10, "max_per_day": 10},  # a cap below the start
        {"start_per_day": 0, "growth_percent": 10, "max_per_day": 10},
        {"start_per_day": 1, "growth_percent": 1001, "max_per_day": 10},
        {"start_per_day": 1, "growth_percent": 10, "max_per_day": 2**31},
        {"start_per_day": 1, "growth_percent": 10, "max_per_day": 10, "start_date": "2026-02-30"},
        {"start_per_day": 1, "growth_percent": 10, "max_per_day": 10, "extra": 1},
    ],
)
async def test_a_warmup_that_cannot_be_refused_422_and_nothing_changes(
    api: ApiClient, warmup: dict[str, Any]
) -> None:
    name = f"bad-{uuid.uuid4().hex[:8]}.example"
    created = await api.http.post(
        "/domains",
        json={
            "domain": name,
            "from_email": f"sales@{name}",
            "smtp": {"host": "127.0.0.1", "port": 25, "security": "none"},
            "warmup": warmup,
        },
    )
    assert created.status_code == 422, created.text
    domain = await api.domain(name, 25, warmup={"start_per_day": 5, "growth_percent": 10, "max_per_day": 50})
    patched = await api.http.patch(f"/domains/{domain['id']}", json={"warmup": warmup})
    assert patched.status_code == 422, patched.text
    assert (await api.get(f"/domains/{domain['id']}"))["warmup"]["start_per_day"] == 5
    removed = await api.http.patch(f"/domains/{domain['id']}", json={"warmup": None})
    assert removed.json()["data"]["warmup"] is None
