"""The whole way through real processes, RabbitMQ, PostgreSQL and SMTP: wizard → e-mail → open → KPIs."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from shared.settings import Settings
from tests.support.api import ApiClient
from tests.support.smtp import SmtpSink
from tests.support.stack import subprocess_service, with_ports

pytestmark = pytest.mark.integration


async def wait_for_detail(api: ApiClient, campaign_id: str, done, timeout: float = 30.0) -> dict:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        detail = await api.get(f"/campaigns/{campaign_id}")
        if done(detail) or asyncio.get_running_loop().time() > deadline:
            return detail
        await asyncio.sleep(0.1)


@pytest.fixture
async def stack_api(settings: Settings, tmp_path: Path) -> AsyncIterator[ApiClient]:
    """The four services as separate processes, as in production; a logged-in client of the api."""
    stack_settings = with_ports(settings, "api", "scheduler", "sender", "tracker")
    async with AsyncExitStack() as stack:
        services = {
            name: await stack.enter_async_context(subprocess_service(name, stack_settings, tmp_path))
            for name in ("api", "scheduler", "sender", "tracker")
        }
        api = await stack.enter_async_context(ApiClient(services["api"].url))
        await api.login()
        yield api


async def test_campaign_travels_from_wizard_to_inbox_to_kpis(
    stack_api: ApiClient, smtp_sink: SmtpSink
) -> None:
    api = stack_api
    await api.domain("thin.example", smtp_sink.port)
    lead = await api.lead("jan@client.example", first_name="Jan", company="Client BV")
    template = await api.template(
        body_html='<p>Hi {{ first_name }} from {{ company }}</p><a href="https://offer.example/?a=1&amp;b=2">offer</a>'
    )
    tracking = {"opens": True, "clicks": True}
    campaign = await api.campaign(template["id"], [lead["id"]], ["thin.example"], tracking=tracking)
    assert campaign["status"] == "scheduled"
    assert campaign["audience_count"] == 1

    [mail] = await smtp_sink.wait_for(1)
    email = mail.message
    assert mail.rcpt_tos == ["jan@client.example"]
    assert mail.mail_from.startswith("bounce+")
    assert mail.mail_from.endswith("@thin.example")
    assert email["Subject"] == "Hello Jan"
    assert email["Message-ID"].endswith("@thin.example>")
    assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = email.get_body(("html",)).get_content()
    assert "Hi Jan from Client BV" in html
    assert "Hi Jan from Client BV" in email.get_body(("plain",)).get_content()

    sent = await wait_for_detail(api, campaign["id"], lambda d: d["kpis"]["total_sent"] == 1)
    assert sent["kpis"]["total_planned"] == 1
    assert sent["kpis"]["total_sent"] == 1
    assert sent["kpis"]["total_opened"] == 0

    pixel = re.search(r'src="([^"]+/track/open\.gif[^"]+)"', html)
    assert pixel is not None
    async with httpx.AsyncClient() as browser:
        forged = await browser.get(pixel.group(1).replace("&amp;", "&")[:-2] + "xx")
        assert forged.status_code == 200
        hit = await browser.get(pixel.group(1).replace("&amp;", "&"), headers={"User-Agent": "Mozilla/5.0"})
        tracked_link = re.search(r'href="([^"]+/track/click[^"]+)"', html)
        assert tracked_link is not None
        followed = await browser.get(tracked_link.group(1).replace("&amp;", "&"))
        assert followed.status_code == 302
        assert followed.headers["location"] == "https://offer.example/?a=1&b=2"
    assert hit.status_code == 200
    assert hit.headers["content-type"] == "image/gif"
    assert hit.headers["cache-control"].startswith("no-store")

    opened = await api.get(f"/campaigns/{campaign['id']}")
    assert opened["kpis"]["total_opened"] == 1
    assert opened["kpis"]["open_rate"] == 1.0
    # Completion is recorded when the scheduler consumes MessageSent: asynchronous, so wait for it.
    done = await wait_for_detail(api, campaign["id"], lambda d: d["status"] == "completed")
    assert done["status"] == "completed"
    [today] = opened["timeline"]
    assert (today["planned"], today["sent"], today["opened"]) == (1, 1, 1)


async def test_one_click_unsubscribe_from_the_email_header_stops_the_followup(
    stack_api: ApiClient, smtp_sink: SmtpSink
) -> None:
    api = stack_api
    await api.domain("unsub.example", smtp_sink.port)
    lead = await api.lead("leave@client.example")
    template = await api.template()
    campaign = await api.campaign(
        template["id"], [lead["id"]], ["unsub.example"], followup={"enabled": True, "days": 2}
    )
    [mail] = await smtp_sink.wait_for(1)
    header = mail.message["List-Unsubscribe"]
    https_link = re.search(r"<(http[^>]+)>", header)
    assert https_link is not None
    link = https_link.group(1)

    async def followup_planned() -> bool:
        listed = await api.get(f"/campaigns/messages?campaign_id={campaign['id']}")
        return bool(listed["total"] == 2)

    for _ in range(200):
        if await followup_planned():
            break
        await asyncio.sleep(0.1)
    assert await followup_planned()
    async with httpx.AsyncClient() as client:
        assert (await client.get(link)).status_code == 200  # a confirmation page: a GET changes nothing
        assert (await api.get(f"/leads/{lead['id']}"))["status"] == "active"
        one_click = await client.post(link, data={"List-Unsubscribe": "One-Click"})
        assert one_click.status_code == 200
        assert (await client.post(link)).status_code == 200  # repeating is harmless
        forged = await client.post(link[:-3] + "xyz")
        assert forged.status_code == 404

    assert (await api.get(f"/leads/{lead['id']}"))["status"] == "unsubscribed"
    detail = await api.get(f"/campaigns/{campaign['id']}")
    assert detail["kpis"]["total_unsubscribed"] == 1
    assert detail["kpis"]["total_cancelled"] == 1  # the follow-up
    messages = await api.get(f"/campaigns/messages?campaign_id={campaign['id']}&is_followup=true")
    assert [m["status"] for m in messages["items"]] == ["cancelled"]
