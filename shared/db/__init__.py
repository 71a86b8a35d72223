"""Database access: engine and session factory. Models live in `shared.db.models`."""

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


def create_engine(database_url: str, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(database_url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def asyncpg_dsn(database_url: str) -> str:
    """The same database for a bare asyncpg connection (hot paths, LISTEN, COPY)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


# Errors after which the same work may succeed: the database went away, or chose us as a deadlock victim.
TRANSIENT = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.TransactionRollbackError,
)


def is_transient(error: BaseException) -> bool:
    """Whether `error`, or what caused it (SQLAlchemy wraps asyncpg's errors), is one of `TRANSIENT`."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, TRANSIENT):
            return True
        cause = cause.__cause__
    return False
