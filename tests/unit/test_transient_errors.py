"""Which database errors a handler waits out (`shared.db.is_transient`) and which fail its delivery."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError

from shared.db import is_transient


def wrapped(error: BaseException) -> BaseException:
    """How SQLAlchemy's asyncpg dialect raises a driver error: its own error, caused by the driver's."""
    try:
        raise DBAPIError("SELECT 1", None, Exception("adapted")) from error
    except DBAPIError as outer:
        return outer


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connection refused"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.DeadlockDetectedError("deadlock detected"),
    ],
    ids=type,
)
def test_the_database_going_away_is_waited_out_bare_or_wrapped(error: BaseException) -> None:
    assert is_transient(error)
    assert is_transient(wrapped(error))


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.UniqueViolationError("duplicate key"),
        IntegrityError("INSERT", None, Exception("duplicate key")),
        ValueError("a bad event"),
    ],
    ids=type,
)
def test_an_error_in_the_work_itself_is_not(error: BaseException) -> None:
    assert not is_transient(error)
    assert not is_transient(wrapped(error))
