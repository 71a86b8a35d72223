"""Real PostgreSQL and RabbitMQ for the integration tier, isolated per test run.

Where they come from, in order: MAILDASH_TEST_DATABASE_URL / MAILDASH_TEST_AMQP_URL; the local services when
they answer; testcontainers when Docker is there. Each run gets its own database and its own broker names
(`Settings.broker_prefix`), and removes both at the end.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from urllib.parse import urlsplit

import pytest

from shared.db.migrate import drop_database, upgrade
from shared.messaging import remove_topology
from shared.settings import Settings
from tests.support.smtp import SmtpSink, running_sink

pytest_plugins = ["tests.support.pipeline"]  # the `pipeline` fixture

LOCAL_DATABASE = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
LOCAL_AMQP = "amqp://guest:guest@127.0.0.1:5672/"


def _answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def _database_server(stack: ExitStack) -> str:
    url = os.environ.get("MAILDASH_TEST_DATABASE_URL") or LOCAL_DATABASE
    if _answers(url, 5432):
        return url
    from testcontainers.postgres import PostgresContainer

    container = stack.enter_context(PostgresContainer("postgres:16", driver="asyncpg"))
    return container.get_connection_url()


def _amqp_server(stack: ExitStack) -> str:
    url = os.environ.get("MAILDASH_TEST_AMQP_URL") or LOCAL_AMQP
    if _answers(url, 5672):
        return url
    from testcontainers.rabbitmq import RabbitMqContainer

    container = stack.enter_context(RabbitMqContainer("rabbitmq:3.13"))
    params = container.get_connection_params()
    return f"amqp://guest:guest@{params.host}:{params.port}/"


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    run = uuid.uuid4().hex[:10]
    with ExitStack() as stack:
        server = _database_server(stack)
        database_url = server.rsplit("/", 1)[0] + f"/maildash_test_{run}"
        upgrade(database_url)
        test_settings = Settings(
            database_url=database_url,
            amqp_url=_amqp_server(stack),
            broker_prefix=f"test-{run}",
            poll_seconds=1.0,
            log_format="console",
        )
        yield test_settings
        asyncio.run(remove_topology(test_settings.amqp_url, test_settings.broker_prefix))
        asyncio.run(drop_database(database_url))


@pytest.fixture
async def smtp_sink() -> AsyncIterator[SmtpSink]:
    async with running_sink() as sink:
        yield sink
