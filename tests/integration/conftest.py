from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.api.main import create_app as create_api
from shared.settings import Settings
from tests.support.api import ApiClient
from tests.support.smtp import free_port
from tests.support.stack import inprocess_service


# Per module: a test of broker outages must be able to own every outbox relay that runs.
@pytest.fixture(scope="module")
async def api_url(settings: Settings) -> AsyncIterator[str]:
    async with inprocess_service(create_api, settings, free_port()) as url:
        yield url


@pytest.fixture
async def api(api_url: str) -> AsyncIterator[ApiClient]:
    async with ApiClient(api_url) as client:
        await client.login()
        yield client
