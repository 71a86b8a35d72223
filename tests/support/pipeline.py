"""The scheduler and sender in this process with a clock the test can move, the api beside them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import pytest

from services.scheduler.main import create_app as create_scheduler
from services.sender.main import create_app as create_sender
from services.tracker.main import create_app as create_tracker
from shared.settings import Settings
from tests.support.api import ApiClient
from tests.support.clock import MovableClock
from tests.support.smtp import SmtpSink, free_port
from tests.support.stack import inprocess_service
from tools.smtp_sink import Received


@dataclass
class Pipeline:
    api: ApiClient
    sink: SmtpSink
    clock: MovableClock
    tracker_url: str
    settings: Settings  # as the services in it run

    async def campaign(
        self, leads: int = 1, interval: int = 0, **extra: Any
    ) -> tuple[dict[str, Any], list[str]]:
        domain = f"flow-{uuid.uuid4().hex[:8]}.example"
        await self.api.domain(domain, self.sink.port, interval=interval)
        lead_ids = [
            (await self.api.lead(f"{uuid.uuid4().hex[:8]}@lead.example", first_name="Jan"))["id"]
            for _ in range(leads)
        ]
        template = await self.api.template()
        return await self.api.campaign(template["id"], lead_ids, [domain], **extra), lead_ids

    async def sent_email(self) -> tuple[dict[str, Any], Received]:
        """A one-lead campaign's message once it is sent, and its e-mail as the sink took it."""
        campaign, [lead_id] = await self.campaign(leads=1)
        lead_email = (await self.api.get(f"/leads/{lead_id}"))["email"]

        async def sent() -> bool:
            return [m["status"] for m in await self.messages(campaign["id"])] == ["sent"]

        await self.until(sent)
        [message] = await self.messages(campaign["id"])
        [mail] = [m for m in self.sink.received if m.rcpt_tos == [lead_email]]
        return message, mail

    async def messages(self, campaign_id: str) -> list[dict[str, Any]]:
        return list(
            (await self.api.get(f"/campaigns/messages?campaign_id={campaign_id}&page_size=200"))["items"]
        )

    async def until(self, probe: Callable[[], Awaitable[bool]], seconds: float = 20.0) -> None:
        await until(probe, seconds)


async def until(probe: Callable[[], Awaitable[bool]], seconds: float = 20.0) -> None:
    """Wait for `probe` to say yes, looking every 50 ms; fail after `seconds`."""
    for _ in range(int(seconds * 20)):
        if await probe():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


@pytest.fixture
async def pipeline(api: ApiClient, settings: Settings, smtp_sink: SmtpSink) -> AsyncIterator[Pipeline]:
    clock = MovableClock()
    tracker_port = free_port()
    tuned = settings.model_copy(
        update={
            "retry_backoff_seconds": [1, 2],
            "tracker_port": tracker_port,
            "public_tracker_url": f"http://127.0.0.1:{tracker_port}",
        }
    )
    async with AsyncExitStack() as stack:
        for create_app in (create_scheduler, create_sender):
            await stack.enter_async_context(inprocess_service(create_app, tuned, free_port(), clock=clock))
        tracker_url = await stack.enter_async_context(
            inprocess_service(create_tracker, tuned, tracker_port, clock=clock)
        )
        yield Pipeline(api, smtp_sink, clock, tracker_url, tuned)
