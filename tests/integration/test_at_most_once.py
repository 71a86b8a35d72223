"""At most once: a sender killed while the SMTP server holds DATA never sends that message again."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from shared.settings import Settings
from tests.support.api import ApiClient
from tests.support.smtp import SmtpSink
from tests.support.stack import subprocess_service, with_ports

pytestmark = pytest.mark.integration


async def test_a_sender_killed_mid_data_leaves_the_message_interrupted_never_resent(
    api: ApiClient, settings: Settings, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    smtp_sink.handler.data_delay = 2.0
    # A short lease so the reconciler decides within the test; production uses minutes.
    quick = with_ports(settings.model_copy(update={"sending_lease_seconds": 10}), "scheduler", "sender")
    await api.domain("killed.example", smtp_sink.port)
    lead = await api.lead("killed@client.example")
    template = await api.template()
    async with subprocess_service("scheduler", quick, tmp_path):
        async with subprocess_service("sender", quick, tmp_path) as doomed:
            campaign = await api.campaign(template["id"], [lead["id"]], ["killed.example"])
            for _ in range(300):
                if smtp_sink.handler.data_started:
                    break
                await asyncio.sleep(0.05)
            assert smtp_sink.handler.data_started == 1
            await asyncio.to_thread(doomed.terminate, signal.SIGKILL)

        # RabbitMQ redelivers the unacknowledged command to a fresh sender: it must not send again.
        smtp_sink.handler.data_delay = 0.0
        async with subprocess_service("sender", with_ports(quick, "sender"), tmp_path):
            for _ in range(400):
                [message] = (await api.get(f"/campaigns/messages?campaign_id={campaign['id']}"))["items"]
                if message["status"] == "failed":
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)

    assert message["status"] == "failed"
    assert message["last_error"] == "interrupted"
    assert smtp_sink.handler.data_started == 1  # one SMTP transaction, ever
    detail = await api.get(f"/campaigns/{campaign['id']}")
    assert detail["kpis"]["total_failed"] == 1
    assert detail["kpis"]["total_sent"] == 0
    assert detail["status"] == "completed"  # nothing left to send; the failed message can be resent by hand
