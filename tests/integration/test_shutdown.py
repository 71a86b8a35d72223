"""SIGTERM drains: an SMTP transaction in flight finishes and is recorded before the sender exits."""

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


async def test_sigterm_lets_the_sender_finish_the_email_it_is_sending(
    api: ApiClient, settings: Settings, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    smtp_sink.handler.data_delay = 3.0
    await api.domain("drain.example", smtp_sink.port)
    lead = await api.lead("drain@client.example")
    template = await api.template()
    stack = with_ports(settings, "scheduler", "sender")
    async with (
        subprocess_service("scheduler", stack, tmp_path),
        subprocess_service("sender", stack, tmp_path) as sender,
    ):
        campaign = await api.campaign(template["id"], [lead["id"]], ["drain.example"])
        for _ in range(300):
            if smtp_sink.handler.data_started:
                break
            await asyncio.sleep(0.05)
        assert smtp_sink.handler.data_started == 1
        assert smtp_sink.received == []  # the signal lands while the server holds DATA

        exit_code = await asyncio.to_thread(sender.terminate, signal.SIGTERM)

        # uvicorn re-raises the signal after its graceful shutdown: "terminated by SIGTERM", not a crash.
        assert exit_code == -signal.SIGTERM, sender.log()
        assert "Traceback" not in sender.log()
        assert len(smtp_sink.received) == 1
        detail = await api.get(f"/campaigns/{campaign['id']}")
        assert detail["kpis"]["total_sent"] == 1
