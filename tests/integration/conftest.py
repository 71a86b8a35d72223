from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

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


FIGURES = pytest.StashKey[dict[str, dict[str, Any]]]()


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> dict[str, Any]:
    """What a test measured, printed at the end of the run (each fault case reports its own figures)."""
    found: dict[str, Any] = {}
    request.config.stash.setdefault(FIGURES, {})[request.node.name] = found
    return found


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    measured = {name: found for name, found in config.stash.get(FIGURES, {}).items() if found}
    if measured:
        terminalreporter.section("figures")
        for name, found in measured.items():
            terminalreporter.line(f"{name}: " + ", ".join(f"{key} {value}" for key, value in found.items()))
