"""All SQL of the webhooks worker: claiming an endpoint (a lease), and recording what one attempt got."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# The endpoint whose oldest pending delivery has waited longest, if it is due, not disabled and not leased
# by another worker; SKIP LOCKED lets concurrent claims pass each other. Only the oldest pending delivery of
# an endpoint is ever sent: that is the order per endpoint.
CLAIM = text("""
WITH due AS (
  SELECT e.id FROM webhook_endpoints AS e
  CROSS JOIN LATERAL (
    SELECT d.next_attempt_at FROM webhook_deliveries AS d
    WHERE d.endpoint_id = e.id AND d.status = 'pending' ORDER BY d.seq LIMIT 1
  ) AS head
  WHERE e.enabled AND (e.leased_until IS NULL OR e.leased_until < :now) AND head.next_attempt_at <= :now
  ORDER BY head.next_attempt_at
  LIMIT 1
  FOR UPDATE OF e SKIP LOCKED
)
UPDATE webhook_endpoints AS e SET lease_token = :token, leased_until = :until
FROM due WHERE e.id = due.id
RETURNING e.id, e.workspace_id, e.url, e.secret_encrypted
""")
HEAD = text("""
SELECT id, event_id, event_type, payload, failures, first_attempt_at, created_at FROM webhook_deliveries
WHERE endpoint_id = :endpoint AND status = 'pending' ORDER BY seq LIMIT 1
""")
ATTEMPT = text("""
INSERT INTO webhook_attempts (id, delivery_id, endpoint_id, workspace_id, attempted_at, status_code,
  succeeded, duration_ms, error, response)
VALUES (gen_random_uuid(), :delivery, :endpoint, :workspace, :now, :status_code, :succeeded, :duration_ms,
  :error, :response)
""")
DELIVERED = text("""
UPDATE webhook_deliveries SET status = 'delivered', delivered_at = :now, attempts = attempts + 1,
  failures = 0, last_error = NULL
WHERE id = :delivery AND status = 'pending'
""")
# `retry_at` null: given up, the delivery failed for good.
FAILED = text("""
UPDATE webhook_deliveries
SET attempts = attempts + 1, failures = failures + 1, last_error = :error,
  first_attempt_at = coalesce(first_attempt_at, :now),
  status = CASE WHEN CAST(:retry_at AS timestamptz) IS NULL THEN 'failed' ELSE status END,
  next_attempt_at = coalesce(:retry_at, next_attempt_at)
WHERE id = :delivery AND status = 'pending'
""")
DISABLE = text("""
UPDATE webhook_endpoints SET enabled = false, disabled_reason = :reason, disabled_at = :now, updated_at = :now
WHERE id = :endpoint AND enabled
""")
RELEASE = text("""
UPDATE webhook_endpoints SET lease_token = NULL, leased_until = NULL
WHERE id = :endpoint AND lease_token = :token
""")


@dataclass(frozen=True)
class Claim:
    """An endpoint leased to this worker, with the delivery to send to it now."""

    token: uuid.UUID
    endpoint_id: uuid.UUID
    workspace_id: uuid.UUID
    url: str
    secret_encrypted: str
    delivery_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    payload: dict[str, Any]
    failures: int
    first_attempt_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class Outcome:
    """What one request got: a status code, or none and an error (refused, timed out, not public …)."""

    status_code: int | None
    succeeded: bool
    duration_ms: int
    error: str | None
    response: str | None


async def claim(session: AsyncSession, now: datetime, until: datetime) -> Claim | None:
    token = uuid.uuid4()
    endpoint = (await session.execute(CLAIM, {"now": now, "until": until, "token": token})).first()
    if endpoint is None:
        return None
    head = (await session.execute(HEAD, {"endpoint": endpoint.id})).one()
    return Claim(
        token, endpoint.id, endpoint.workspace_id, endpoint.url, endpoint.secret_encrypted, head.id,
        head.event_id, head.event_type, head.payload, head.failures, head.first_attempt_at, head.created_at,
    )  # fmt: skip


async def record(
    session: AsyncSession, claim: Claim, outcome: Outcome, now: datetime, retry_at: datetime | None
) -> None:
    """The attempt, the delivery's new state (`retry_at`: when to try again after a failure; None: give
    up) and the lease released."""
    ids = {"delivery": claim.delivery_id, "endpoint": claim.endpoint_id}
    await session.execute(
        ATTEMPT,
        {
            **ids, "workspace": claim.workspace_id, "now": now, "status_code": outcome.status_code,
            "succeeded": outcome.succeeded, "duration_ms": outcome.duration_ms, "error": outcome.error,
            "response": outcome.response,
        },
    )  # fmt: skip
    if outcome.succeeded:
        await session.execute(DELIVERED, {**ids, "now": now})
    else:
        await session.execute(FAILED, {**ids, "now": now, "error": outcome.error, "retry_at": retry_at})
    await session.execute(RELEASE, {**ids, "token": claim.token})


async def disable(session: AsyncSession, endpoint_id: uuid.UUID, reason: str, now: datetime) -> None:
    await session.execute(DISABLE, {"endpoint": endpoint_id, "reason": reason, "now": now})
