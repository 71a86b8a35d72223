"""Migration 0016 (sequences) on data: a campaign's follow-up becomes its step 1, a follow-up message a
message of step 1, the per-step figures start from the messages there are; and down again, the follow-up is
back."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from shared.db import asyncpg_dsn
from shared.settings import Settings

pytestmark = pytest.mark.integration
BEFORE = "0015"  # the revision the sequences migration (0016) follows
NOW = datetime(2026, 12, 1, 10, tzinfo=UTC)


async def seed(url: str) -> dict[str, uuid.UUID]:
    ids = {name: uuid.uuid4() for name in ("workspace", "template", "domain", "lead", "with", "without")}
    ids |= {"original": uuid.uuid4(), "followup": uuid.uuid4()}
    db = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await db.execute("INSERT INTO workspaces (id, name) VALUES ($1, 'w')", ids["workspace"])
        await db.execute(
            "INSERT INTO templates (id, workspace_id, name, subject, body_html)"
            " VALUES ($1, $2, 't', 's', '')",
            ids["template"], ids["workspace"],
        )  # fmt: skip
        await db.execute(
            "INSERT INTO sending_domains (id, workspace_id, domain, from_email, from_name, smtp_host,"
            " smtp_port, smtp_security, min_interval_seconds, active)"
            " VALUES ($1, $2, 'd.example', 'a@d.example', '', '127.0.0.1', 25, 'none', 60, true)",
            ids["domain"], ids["workspace"],
        )  # fmt: skip
        await db.execute(
            "INSERT INTO leads (id, workspace_id, email, first_name, last_name, company, tags, fields,"
            " status) VALUES ($1, $2, 'l@lead.example', '', '', '', '{}', '{}', 'active')",
            ids["lead"], ids["workspace"],
        )  # fmt: skip
        for campaign, enabled in ((ids["with"], True), (ids["without"], False)):
            await db.execute(
                "INSERT INTO campaigns (id, workspace_id, name, status, template_id, followup_enabled,"
                ' followup_days, followup_attach_report, track_opens, track_clicks, "window", domains,'
                " audience_count, audience_excluded)"
                " VALUES ($1, $2, 'c', 'running', $3, $4, 5, true, true, false, '{}', '{}', 1, '{}')",
                campaign, ids["workspace"], ids["template"], enabled,
            )  # fmt: skip
        for message, followup, status in (
            (ids["original"], False, "sent"),
            (ids["followup"], True, "planned"),
        ):
            await db.execute(
                "INSERT INTO messages (id, workspace_id, campaign_id, lead_id, sending_domain_id,"
                " domain_used, scheduled_at, slot_ends_at, not_before, status, is_followup,"
                " parent_message_id, retry_count, sent_at, opened_at)"
                " VALUES ($1, $2, $3, $4, $5, 'd.example', $6, $6, $6, $7, $8, $9, 0, $10, $10)",
                message, ids["workspace"], ids["with"], ids["lead"], ids["domain"], NOW, status, followup,
                ids["original"] if followup else None, NOW if status == "sent" else None,
            )  # fmt: skip
        await db.execute(
            "INSERT INTO message_events (message_id, campaign_id, kind, occurred_at, is_machine, data)"
            " VALUES ($1, $2, 'sent', $3, false, '{}')",
            ids["original"], ids["with"], NOW,
        )  # fmt: skip
    finally:
        await db.close()
    return ids


async def rows(url: str, query: str, *args: Any) -> list[dict[str, Any]]:
    db = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return [dict(row) for row in await db.fetch(query, *args)]
    finally:
        await db.close()


def test_a_followup_becomes_step_one_and_comes_back_on_the_way_down(settings: Settings) -> None:
    from alembic import command

    from shared.db.migrate import alembic_config, drop_database, ensure_database

    url = settings.database_url.rsplit("/", 1)[0] + f"/maildash_migrations_{uuid.uuid4().hex[:8]}"
    config = alembic_config(url)
    try:
        asyncio.run(ensure_database(url))
        command.upgrade(config, BEFORE)
        ids = asyncio.run(seed(url))
        command.upgrade(config, "0016")

        steps = asyncio.run(rows(url, "SELECT * FROM campaign_steps"))
        assert steps == [
            {"campaign_id": ids["with"], "position": 1, "template_id": ids["template"], "delay_days": 5,
             "attach_report": True, "condition": "always"},
        ]  # fmt: skip
        messages = asyncio.run(rows(url, "SELECT id, step, is_followup FROM messages ORDER BY step"))
        assert messages == [
            {"id": ids["original"], "step": 0, "is_followup": False},
            {"id": ids["followup"], "step": 1, "is_followup": True},
        ]
        figures = asyncio.run(
            rows(
                url,
                "SELECT step, sum(planned)::int AS planned, sum(sent)::int AS sent,"
                " sum(opened)::int AS opened FROM campaign_step_kpis GROUP BY step ORDER BY step",
            )
        )
        assert figures == [
            {"step": 0, "planned": 1, "sent": 1, "opened": 1},
            {"step": 1, "planned": 1, "sent": 0, "opened": 0},
        ]

        command.downgrade(config, BEFORE)
        campaigns = asyncio.run(
            rows(
                url,
                "SELECT id, followup_enabled, followup_days, followup_attach_report FROM campaigns"
                " WHERE id = ANY($1) ORDER BY followup_enabled",
                [ids["with"], ids["without"]],
            )
        )
        # A disabled follow-up's days had no meaning: they come back as the default.
        assert campaigns == [
            {
                "id": ids["without"],
                "followup_enabled": False,
                "followup_days": 3,
                "followup_attach_report": False,
            },
            {"id": ids["with"], "followup_enabled": True, "followup_days": 5, "followup_attach_report": True},
        ]
        down = asyncio.run(rows(url, "SELECT id, is_followup FROM messages ORDER BY is_followup"))
        assert down == [
            {"id": ids["original"], "is_followup": False},
            {"id": ids["followup"], "is_followup": True},
        ]
    finally:
        asyncio.run(drop_database(url))
