"""A campaign the planner cannot fit is accepted (only a dry-run plans before the start), so the scheduler
must end what does not fit as failed messages with the reason: never a start event redelivered until it lands
in the dead letters, leaving the campaign with nothing planned."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from shared.planning.slots import HORIZON_DAYS
from shared.settings import Settings
from tests.support.api import ApiClient
from tests.support.broker import all_consumed, take_dead_letters
from tests.support.pipeline import Pipeline

pytestmark = pytest.mark.integration

MONDAYS_ONLY = {"days": [0], "start": "08:00", "end": "17:00", "holidays": None, "timezone": "UTC"}
# One e-mail a Monday fits HORIZON_DAYS / 7 leads, give or take one (the start's weekday, whether today's
# window is still open); this many more cannot be planned.
BEYOND = 20


async def _leads(api: ApiClient, count: int) -> list[str]:
    tag = f"many-{uuid.uuid4().hex[:6]}"
    csv = "email,tags\n" + "".join(f"{tag}-{i}@many.example,{tag}\n" for i in range(count))
    imported = await api.http.post("/leads/import", files={"file": ("many.csv", csv.encode(), "text/csv")})
    assert imported.json()["data"]["created"] == count, imported.text
    ids: list[str] = []
    for page in range(1, count // 200 + 2):
        ids += [
            lead["id"] for lead in (await api.get(f"/leads?tag={tag}&page_size=200&page={page}"))["items"]
        ]
    return ids


async def test_leads_beyond_the_planners_horizon_fail_with_the_reason_and_the_rest_is_planned(
    api: ApiClient, pipeline: Pipeline, settings: Settings
) -> None:
    fits = HORIZON_DAYS // 7
    leads = await _leads(api, fits + BEYOND)
    domain = f"capped-{uuid.uuid4().hex[:6]}.example"
    await api.domain(domain, pipeline.sink.port, interval=60, daily_cap=1)
    template = await api.template()
    body: dict[str, Any] = {
        "name": "Too big for its cap",
        "template_id": template["id"],
        "audience": {"mode": "static", "lead_ids": leads},
        "schedule": {"start_mode": "now", "window": MONDAYS_ONLY},
        "domains": [domain],
    }
    assert (await api.http.post("/campaigns/dry-run", json=body)).status_code == 422
    campaign = await api.create("/campaigns", body)

    async def planned() -> bool:
        kpis = (await api.get(f"/campaigns/{campaign['id']}"))["kpis"]
        return bool(kpis["total_planned"] == len(leads))

    await pipeline.until(planned)
    failed = await api.get(f"/campaigns/messages?campaign_id={campaign['id']}&status=failed&page_size=200")
    assert BEYOND - 2 <= failed["total"] <= BEYOND
    # The leads that found no Monday are the last ones, in audience order.
    assert {m["lead_id"] for m in failed["items"]} == set(leads[len(leads) - failed["total"] :])
    assert all(f"no open slot within {HORIZON_DAYS} days" in m["last_error"] for m in failed["items"])
    kpis = (await api.get(f"/campaigns/{campaign['id']}"))["kpis"]
    assert kpis["total_failed"] == failed["total"]
    waiting = await api.get(f"/campaigns/messages?campaign_id={campaign['id']}&status=planned&page_size=1")
    assert waiting["total"] == len(leads) - failed["total"]

    await pipeline.until(lambda: all_consumed(settings))
    assert not await take_dead_letters(settings)
