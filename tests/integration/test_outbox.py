"""A campaign committed while RabbitMQ is unreachable is published, and planned, once it answers again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import delete, func, select

from services.api.main import create_app as create_api
from shared.db import create_engine, session_factory
from shared.db.models import Message, OutboxRow
from shared.events import CampaignStopped
from shared.messaging import OutboxRelay, Topology, create_broker
from shared.settings import Settings
from tests.support.api import ApiClient
from tests.support.proxy import tcp_proxy
from tests.support.smtp import free_port
from tests.support.stack import inprocess_service, subprocess_service, with_ports

pytestmark = pytest.mark.integration


async def count(settings: Settings, model: type, campaign_id: str) -> int:
    """Rows of one campaign: its messages, or its events waiting in the outbox."""
    column = Message.campaign_id if model is Message else OutboxRow.payload["campaign_id"].astext
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            query = select(func.count()).select_from(model).where(column == campaign_id)
            return int(await session.scalar(query) or 0)
    finally:
        await engine.dispose()


async def wait_until(probe: Callable[[], Awaitable[int]], expected: int, seconds: float = 20.0) -> None:
    for _ in range(int(seconds * 10)):
        if await probe() == expected:
            return
        await asyncio.sleep(0.1)
    assert await probe() == expected


async def test_broker_outage_between_commit_and_publish_loses_no_campaign(
    settings: Settings, tmp_path: Path
) -> None:
    amqp = urlsplit(settings.amqp_url)
    async with tcp_proxy(amqp.hostname or "127.0.0.1", amqp.port or 5672, start_up=False) as broker_link:
        behind_proxy = settings.model_copy(
            update={"amqp_url": settings.amqp_url.replace(f":{amqp.port}", f":{broker_link.port}")}
        )
        async with (
            inprocess_service(create_api, behind_proxy, free_port()) as api_url,
            ApiClient(api_url) as api,
        ):
            await api.login()
            await api.domain("outage.example", 1025)
            lead = await api.lead("outage@client.example")
            template = await api.template()
            campaign = await api.campaign(template["id"], [lead["id"]], ["outage.example"])
            assert campaign["status"] == "scheduled"

            # RabbitMQ is unreachable: the committed event waits in the outbox.
            await asyncio.sleep(2)
            assert await count(settings, OutboxRow, campaign["id"]) == 1

            # The link comes back: the api's relay publishes it into the durable queue.
            await broker_link.up()
            await wait_until(lambda: count(settings, OutboxRow, campaign["id"]), 0)

        # A scheduler started only now still finds the campaign waiting, and plans it.
        assert await count(settings, Message, campaign["id"]) == 0
        async with subprocess_service("scheduler", with_ports(settings, "scheduler"), tmp_path):
            await wait_until(lambda: count(settings, Message, campaign["id"]), 1)


async def test_a_row_that_cannot_be_published_holds_up_nothing_else(settings: Settings) -> None:
    """A poison row (here: a routing key no queue is bound to) stays and is logged; the rest go out."""
    engine = create_engine(settings.database_url, pool_size=2)
    sessions = session_factory(engine)
    broker = create_broker(settings.amqp_url, prefetch=1)
    await broker.connect()
    try:
        await Topology(settings.broker_prefix).declare(broker)
        good = CampaignStopped(workspace_id=uuid.uuid4(), campaign_id=uuid.uuid4())
        async with sessions() as session, session.begin():
            session.add(OutboxRow(routing_key="nobody.listens", payload={"event_id": str(uuid.uuid4())}))
            session.add(OutboxRow(routing_key=good.routing_key, payload=good.model_dump(mode="json")))
        relay = OutboxRelay(sessions, broker, Topology(settings.broker_prefix), settings.database_url)
        assert await relay.drain_once() >= 1
        async with sessions() as session:
            left = list(await session.scalars(select(OutboxRow.routing_key)))
        assert "nobody.listens" in left
        assert good.routing_key not in left
        async with sessions() as session, session.begin():
            await session.execute(delete(OutboxRow).where(OutboxRow.routing_key == "nobody.listens"))
    finally:
        await broker.stop()
        await engine.dispose()
