"""The tracker's public endpoints take anything the internet sends: never a 500, never a record for junk."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import func, select

from services.tracker.main import create_app as create_tracker
from shared import tokens
from shared.db import create_engine, session_factory
from shared.db.models import MessageEventRow
from shared.settings import Settings
from tests.support.pipeline import Pipeline
from tests.support.samples import pixel_of
from tests.support.smtp import free_port
from tests.support.stack import inprocess_service

pytestmark = pytest.mark.integration

JUNK = [
    "",
    "x",
    "%00",
    "a" * 5000,
    "ü.ü",
    "..",
    "....",
    str(uuid.uuid4()),
    "%ff%fe",
    "<script>",
    "../../etc/passwd",
]


@pytest.fixture(scope="module")
async def tracker_url(settings: Settings) -> AsyncIterator[str]:
    async with inprocess_service(create_tracker, settings, free_port()) as url:
        yield url


async def opens_of(settings: Settings, message_id: str) -> int:
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            query = select(func.count()).where(
                MessageEventRow.message_id == uuid.UUID(message_id), MessageEventRow.kind == "opened"
            )
            return int(await session.scalar(query) or 0)
    finally:
        await engine.dispose()


async def test_the_pixel_is_always_the_gif_and_junk_records_nothing(
    pipeline: Pipeline, settings: Settings
) -> None:
    campaign, _ = await pipeline.campaign()
    mail = (await pipeline.sink.wait_for(len(pipeline.sink.received) + 1))[-1]

    async def sent() -> bool:
        return [m["status"] for m in await pipeline.messages(campaign["id"])] == ["sent"]

    await pipeline.until(sent)
    [message] = await pipeline.messages(campaign["id"])
    real_message = message["id"]  # a sent e-mail: a hit that passed the token check would be recorded
    forged_for_it = tokens.sign_message("not-our-secret", "open", real_message)
    async with httpx.AsyncClient(base_url=pipeline.tracker_url) as client:
        for m in [*JUNK, real_message]:
            for t in [*JUNK, forged_for_it]:
                reply = await client.get("/track/open.gif", params={"m": m, "t": t})
                assert reply.status_code == 200, (m, t)
                assert reply.headers["content-type"] == "image/gif"
                assert reply.headers["cache-control"].startswith("no-store")
        assert (await client.get("/track/open.gif")).status_code == 200
        assert (await client.get("/track/open.gif?m=%00&t=%00&t=x&m=y")).status_code == 200
        assert await opens_of(settings, real_message) == 0
        assert (await client.get(pixel_of(mail))).status_code == 200  # the genuine pixel does record
    assert await opens_of(settings, real_message) == 1


async def test_unsubscribe_links_that_are_not_ours_are_404_pages(tracker_url: str) -> None:
    async with httpx.AsyncClient(base_url=tracker_url) as client:
        # (dot-only or slashed "tokens" are normalised into other paths before they reach /u/)
        for token in [t for t in JUNK if t.strip(".") and "/" not in t]:
            for method in ("GET", "POST"):
                reply = await client.request(method, f"/u/{token}")
                assert reply.status_code == 404, (method, token, reply.status_code)
                assert reply.headers["content-type"].startswith("text/html")


async def test_click_redirects_only_to_the_url_signed_for_that_message(
    tracker_url: str, settings: Settings
) -> None:
    message = str(uuid.uuid4())
    url = "https://shop.example/offer?id=7"
    token = tokens.sign_message(settings.tracking_secret, "click", message, url)
    async with httpx.AsyncClient(base_url=tracker_url) as client:
        ok = await client.get("/track/click", params={"m": message, "u": url, "t": token})
        assert ok.status_code == 302
        assert ok.headers["location"] == url
        for m, u, t in [
            (message, "https://evil.example/", token),  # another URL with a genuine token
            (str(uuid.uuid4()), url, token),  # another message
            (message, url, token[:-2] + "xx"),  # altered token
            (message, url, ""),
            ("", "", ""),
            (message, url + "x" * 5000, token),
        ]:
            refused = await client.get("/track/click", params={"m": m, "u": u, "t": t})
            assert refused.status_code == 400, (m, u, t)
            assert "location" not in refused.headers
