"""Traces: with an OTLP endpoint in the environment, one trace follows a campaign from the api's request
that starts it, through RabbitMQ, the outbox, the scheduler's plan and its later dispatch, to the SMTP
transaction."""

from __future__ import annotations

import re
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from shared.settings import Settings
from tests.support.api import ApiClient
from tests.support.otlp import running_receiver
from tests.support.smtp import SmtpSink
from tests.support.stack import subprocess_service, with_ports

pytestmark = pytest.mark.integration

BROWSER = {"User-Agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15"}


async def test_one_trace_runs_from_the_campaign_start_to_the_smtp_transaction(
    settings: Settings, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    stack_settings = with_ports(settings, "api", "scheduler", "sender", "tracker")
    async with running_receiver() as receiver, AsyncExitStack() as stack:
        # The standard variables: the endpoint turns tracing on; spans leave in batches every 100 ms.
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        services = {
            name: await stack.enter_async_context(subprocess_service(name, stack_settings, tmp_path, otel))
            for name in ("api", "scheduler", "sender", "tracker")
        }
        api = await stack.enter_async_context(ApiClient(services["api"].url))
        await api.login()
        await api.domain("traced.example", smtp_sink.port)
        lead = await api.lead("ada@traced-client.example", first_name="Ada")
        template = await api.template()
        await api.campaign(template["id"], [lead["id"]], ["traced.example"])
        [mail] = await smtp_sink.wait_for(1)
        assert mail.rcpt_tos == ["ada@traced-client.example"]

        sent = await receiver.wait_for(
            lambda span: (
                span.name == "SMTP RCPT DATA"
                and span.attributes.get("maildash.sending_domain") == "traced.example"
            )
        )
        # The start's request is the root; each later step is a child of the one before it.
        await receiver.wait_for(lambda span: span.trace_id == sent.trace_id and span.parent_id == "")
        # The lead opens it: the tracker's event joins the campaign's trace too.
        html = mail.message.get_body(("html",)).get_content()
        pixel = re.search(r'src="([^"]+/track/open\.gif[^"]+)"', html)
        assert pixel is not None
        async with httpx.AsyncClient() as browser:
            assert (await browser.get(pixel[1].replace("&amp;", "&"), headers=BROWSER)).status_code == 200
        opened = await receiver.wait_for(
            lambda span: span.name.endswith(".message.opened publish") and span.trace_id == sent.trace_id
        )

    chain = receiver.ancestry(sent)
    assert {span.trace_id for span in chain} == {sent.trace_id}
    assert chain[-1].parent_id == "", "the chain reaches the root of the trace"
    steps = [(span.service, span.name) for span in reversed(chain)]
    assert steps[0] == ("maildash-api", "POST /api/v1/campaigns")
    # Whichever service's relay published each event (they share the outbox), the scheduler planned in the
    # trace of the start, and the sender sent in it.
    events = f"{settings.broker_prefix}.events"
    started = steps.index(("maildash-scheduler", f"{events}.campaign.started process"))
    send = steps.index(("maildash-sender", f"{events}.message.send process"))
    assert 0 < started < send < steps.index(("maildash-sender", "SMTP RCPT DATA"))
    assert opened.service in {f"maildash-{name}" for name in services}  # whichever relay published it
