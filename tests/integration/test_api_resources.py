"""Workspaces, tenancy, and changing, deleting, importing and previewing resources, over real HTTP."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import delete, update

from services.scheduler.service import Scheduler
from shared.clock import utcnow
from shared.db import create_engine, session_factory
from shared.db.models import Campaign, User
from shared.settings import Settings
from tests.support.api import ApiClient

pytestmark = pytest.mark.integration


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def new_workspace(api: ApiClient, api_url: str) -> tuple[ApiClient, dict[str, Any]]:
    email = f"{unique('admin')}@agency.example"
    created = await api.create(
        "/workspaces", {"name": unique("agency"), "admin_email": email, "admin_password": "correct horse"}
    )
    other = ApiClient(api_url)
    await other.login(email, "correct horse")
    return other, created


@pytest.fixture
async def outsider(api: ApiClient, api_url: str) -> AsyncIterator[ApiClient]:
    """The admin of a second workspace."""
    other, _ = await new_workspace(api, api_url)
    async with other:
        yield other


async def test_a_superuser_creates_workspaces_whose_admins_see_only_their_own(
    api: ApiClient, api_url: str
) -> None:
    await api.lead(f"{unique('owned')}@lead.example")  # so that a leak of leads would show
    other, created = await new_workspace(api, api_url)
    async with other:
        me = await other.get("/auth/me")
        assert me["workspace"] == created["workspace"]
        assert me["user"]["is_superuser"] is False
        assert (await other.get("/leads"))["total"] == 0
        refused = await other.http.post(
            "/workspaces",
            json={"name": unique("x"), "admin_email": "a@b.example", "admin_password": "12345678"},
        )
        assert refused.status_code == 403
        assert refused.json()["error_code"] == "forbidden"

    again = await api.http.post(
        "/workspaces",
        json={
            "name": created["workspace"]["name"],
            "admin_email": "new@b.example",
            "admin_password": "12345678",
        },
    )
    assert again.status_code == 409
    short = await api.http.post(
        "/workspaces", json={"name": unique("x"), "admin_email": "c@b.example", "admin_password": "short"}
    )
    assert short.status_code == 422
    assert short.json()["fields"][0]["loc"] == ["body", "admin_password"]


async def test_a_token_of_a_deleted_user_is_refused(api: ApiClient, api_url: str, settings: Settings) -> None:
    other, created = await new_workspace(api, api_url)
    async with other:
        assert (await other.http.get("/auth/me")).status_code == 200
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            async with session_factory(engine)() as session, session.begin():
                await session.execute(delete(User).where(User.id == uuid.UUID(created["admin"]["id"])))
        finally:
            await engine.dispose()
        refused = await other.http.get("/auth/me")
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"] == "Bearer"


async def planned(settings: Settings, campaign_id: str) -> None:
    """Plan a draft campaign's messages, as the scheduler does on a start (without sending them)."""
    engine = create_engine(settings.database_url, pool_size=1)
    sessions = session_factory(engine)
    try:
        async with sessions() as session, session.begin():
            row = uuid.UUID(campaign_id)
            await session.execute(update(Campaign).where(Campaign.id == row).values(status="scheduled"))
        assert await Scheduler(sessions, settings, utcnow).start_campaign(row) == 1
    finally:
        await engine.dispose()


async def test_no_resource_of_one_workspace_is_visible_or_usable_from_another(
    api: ApiClient, outsider: ApiClient, settings: Settings
) -> None:
    """Every probe aims at a row that exists, with everything else in the request the outsider's own: only
    the borrowed row can make it fail."""
    domain = await api.domain(f"{unique('tenant')}.example", 1025)
    lead = await api.lead(f"{unique('lead')}@lead.example")
    template = await api.template()
    suppression = await api.create("/suppressions", {"email": f"{unique('s')}@x.example"})
    campaign = await api.campaign(
        template["id"], [lead["id"]], [domain["domain"]], schedule={"start_mode": "draft"}
    )
    await planned(settings, campaign["id"])
    [message] = (await api.get(f"/campaigns/messages?campaign_id={campaign['id']}"))["items"]
    rows = {
        "domains": domain["id"],
        "leads": lead["id"],
        "templates": template["id"],
        "campaigns": campaign["id"],
    }
    for path, row_id in rows.items():
        assert (await outsider.get(f"/{path}"))["total"] == 0, path  # the outsider has none of its own yet
        assert (await outsider.http.get(f"/{path}/{row_id}")).status_code == 404, path
    assert (await outsider.get("/suppressions"))["total"] == 0
    for query in (f"campaign_id={campaign['id']}", f"lead_id={lead['id']}", "page_size=200"):
        assert (await outsider.get(f"/campaigns/messages?{query}"))["total"] == 0, query
    # A resend the owner would be refused with 409 (the message is only planned): 404 for the outsider.
    assert (await outsider.http.post(f"/campaigns/messages/{message['id']}/resend")).status_code == 404

    changes = {"domains": {"active": False}, "leads": {"first_name": "Mallory"}, "templates": {"name": "x"}}
    for path, body in changes.items():
        assert (await outsider.http.patch(f"/{path}/{rows[path]}", json=body)).status_code == 404, path
    for path in ("domains", "leads", "templates", "suppressions"):
        row_id = suppression["id"] if path == "suppressions" else rows[path]
        assert (await outsider.http.delete(f"/{path}/{row_id}")).status_code == 404, path
    for action in ("start", "pause", "resume", "stop", "dry-run"):
        assert (await outsider.http.post(f"/campaigns/{campaign['id']}/{action}")).status_code == 404, action
    assert (await outsider.http.post(f"/domains/{domain['id']}/resume")).status_code == 404

    own_template = await outsider.template()
    own_domain = await outsider.domain(f"{unique('mine')}.example", 1025)
    own_lead = await outsider.lead(f"{unique('mine')}@lead.example")
    for template_id, lead_id in ((template["id"], own_lead["id"]), (own_template["id"], lead["id"])):
        preview = await outsider.http.post(f"/templates/{template_id}/preview", json={"lead_id": lead_id})
        assert preview.status_code == 404, (template_id, lead_id)
    own = {
        "name": "borrowed",
        "template_id": own_template["id"],
        "audience": {"mode": "static", "lead_ids": [own_lead["id"]]},
        "schedule": {"start_mode": "draft"},
        "domains": [own_domain["domain"]],
    }
    assert (await outsider.http.post("/campaigns/dry-run", json=own)).status_code == 200  # all its own: fine
    for borrowed, field in (
        ({"template_id": template["id"]}, ["body", "template_id"]),
        ({"domains": [domain["domain"]]}, ["body", "domains"]),
        ({"audience": {"mode": "static", "lead_ids": [lead["id"]]}}, ["body", "audience", "lead_ids"]),
    ):
        refused = await outsider.http.post("/campaigns", json=own | borrowed)
        assert refused.status_code == 422, refused.text
        assert [f["loc"] for f in refused.json()["fields"]] == [field], refused.text
    assert (await outsider.get("/campaigns"))["total"] == 0
    # Nothing was changed for the owner.
    assert (await api.get(f"/domains/{domain['id']}"))["active"] is True
    assert (await api.get(f"/leads/{lead['id']}"))["first_name"] == ""
    assert (await api.get(f"/templates/{template['id']}"))["name"] == template["name"]
    assert (await api.get(f"/campaigns/{campaign['id']}"))["status"] == "scheduled"
    assert (await api.http.post(f"/campaigns/{campaign['id']}/stop")).status_code == 200  # leave no due work


async def test_domains_change_and_delete_unless_a_campaign_uses_them(api: ApiClient) -> None:
    smtp = {"host": "127.0.0.1", "port": 1025, "security": "none", "password": "s3cret"}
    domain = await api.domain(f"{unique('edit')}.example", 1025, smtp=smtp)
    changed = await api.http.patch(
        f"/domains/{domain['id']}",
        json={"from_name": "Sales team", "daily_cap": 40, "smtp": {"port": 2525, "password": None}},
    )
    assert changed.status_code == 200, changed.text
    data = changed.json()["data"]
    assert (data["from_name"], data["daily_cap"], data["smtp"]["port"]) == ("Sales team", 40, 2525)
    assert data["smtp"]["has_password"] is False
    assert data["smtp"]["host"] == "127.0.0.1"  # untouched
    for bad in ({"from_name": None}, {"domain": "other.example"}, {"smtp": {"port": 0}}):
        refused = await api.http.patch(f"/domains/{domain['id']}", json=bad)
        assert refused.status_code == 422, bad

    template = await api.template()
    lead = await api.lead(f"{unique('lead')}@lead.example")
    campaign = await api.campaign(
        template["id"], [lead["id"]], [domain["domain"]], schedule={"start_mode": "draft"}
    )
    in_use = await api.http.delete(f"/domains/{domain['id']}")
    assert in_use.status_code == 409
    assert "stop them first" in in_use.json()["error"]
    assert (await api.http.delete(f"/templates/{template['id']}")).status_code == 409
    assert (await api.http.post(f"/campaigns/{campaign['id']}/stop")).status_code == 200
    finished = await api.http.delete(f"/templates/{template['id']}")
    assert finished.status_code == 409
    assert "history" in finished.json()["error"]

    unused = await api.domain(f"{unique('unused')}.example", 1025)
    deleted = await api.http.delete(f"/domains/{unused['id']}")
    assert deleted.status_code == 200
    assert deleted.json()["data"] == {"id": unused["id"], "deleted": True}
    assert (await api.http.get(f"/domains/{unused['id']}")).status_code == 404


async def test_a_domains_mailbox_is_set_kept_without_its_password_shown_without_it_and_removed(
    api: ApiClient,
) -> None:
    imap = {"host": "127.0.0.1", "port": 10993, "security": "tls", "username": "sales@box.example"}
    refused = await api.http.post("/domains", json={**_domain(unique("nopass")), "imap": imap})
    # A new mailbox needs its password.
    assert refused.status_code == 422, refused.text
    assert refused.json()["fields"][0]["loc"] == ["body", "imap", "password"]
    domain = await api.domain(f"{unique('box')}.example", 1025, imap={**imap, "password": "s3cret"})
    assert domain["imap"] == {
        **imap, "has_password": True, "folders": ["INBOX"], "reports_folder": None,
        "active": True, "state": "ok", "failures": 0, "last_error": None, "last_error_at": None,
        "last_success_at": None, "idle_supported": None,
    }  # fmt: skip
    moved = {**imap, "folders": ["INBOX", "Junk"], "reports_folder": "Reports"}
    changed = await api.http.patch(f"/domains/{domain['id']}", json={"imap": moved})
    assert changed.status_code == 200, changed.text
    assert changed.json()["data"]["imap"]["folders"] == ["INBOX", "Junk"]
    assert changed.json()["data"]["imap"]["has_password"] is True  # the stored one kept
    for folder in ("In*box", "Ünbox", 'a"b', ""):
        bad = await api.http.patch(f"/domains/{domain['id']}", json={"imap": {**imap, "folders": [folder]}})
        assert bad.status_code == 422, folder
    removed = await api.http.patch(f"/domains/{domain['id']}", json={"imap": None})
    assert removed.json()["data"]["imap"] is None
    assert (await api.get(f"/domains/{domain['id']}"))["imap"] is None
    untested = await api.http.post(f"/domains/{domain['id']}/imap/test")
    assert untested.status_code == 404


async def test_a_domains_health_thresholds_layer_over_its_workspaces_and_the_defaults(
    api: ApiClient, outsider: ApiClient
) -> None:
    """A new domain is active with empty figures, judged by the defaults; a workspace's thresholds override
    them, a domain's own override those (null: inherited again). Another workspace's are not touched."""
    domain = await outsider.domain(f"{unique('health')}.example", 1025)
    assert (domain["state"], domain["paused_cause"], domain["paused_reason"], domain["paused_at"]) == (
        "active", None, None, None,
    )  # fmt: skip
    assert domain["health"]["last_24h"] == domain["health"]["last_100_sends"] == {
        "sends": 0, "hard_bounces": 0, "complaints": 0, "policy_rejections": 0, "bounce_rate": 0.0,
        "complaint_rate": 0.0,
    }  # fmt: skip
    defaults = {
        "bounce_rate": 0.05, "bounce_min_sends": 20, "complaint_rate": 0.003, "policy_rejections_per_hour": 3,
        "authentication_failures": 5, "connection_failures": 10, "deferrals": 20,
    }  # fmt: skip
    inheriting = dict.fromkeys(defaults)  # null: inherited from the level below
    assert (domain["health"]["thresholds"], domain["health_thresholds"]) == (defaults, inheriting)
    assert (await outsider.get("/workspace/settings"))["health_thresholds_effective"] == defaults

    workspace = {"bounce_rate": 0.1, "connection_failures": 4}
    changed = await outsider.http.patch("/workspace/settings", json={"health_thresholds": workspace})
    assert changed.json()["data"] == {
        "health_thresholds": inheriting | workspace, "health_thresholds_effective": defaults | workspace,
    }  # fmt: skip
    set_here = {"connection_failures": 2, "bounce_min_sends": 50}
    own = await outsider.http.patch(f"/domains/{domain['id']}", json={"health_thresholds": set_here})
    assert own.json()["data"]["health_thresholds"] == inheriting | set_here
    assert own.json()["data"]["health"]["thresholds"] == defaults | workspace | set_here
    inherited = await outsider.http.patch(
        f"/domains/{domain['id']}", json={"health_thresholds": {"connection_failures": None}}
    )
    assert inherited.json()["data"]["health_thresholds"] == inheriting | {"bounce_min_sends": 50}
    assert inherited.json()["data"]["health"]["thresholds"]["connection_failures"] == 4  # the workspace's
    assert (await api.get("/workspace/settings"))["health_thresholds"] == inheriting  # the other workspace's

    for bad in (
        {"bounce_rate": 0}, {"bounce_rate": 1.5}, {"complaint_rate": "much"},
        {"policy_rejections_per_hour": 0}, {"connection_failures": 10**7}, {"spam_score": 5},
    ):  # fmt: skip
        for path, body in (
            (f"/domains/{domain['id']}", {"health_thresholds": bad}),
            ("/workspace/settings", {"health_thresholds": bad}),
        ):
            refused = await outsider.http.patch(path, json=body)
            assert refused.status_code == 422, (path, bad, refused.text)
    assert (
        await outsider.http.patch(f"/domains/{domain['id']}", json={"health_thresholds": None})
    ).status_code == 422
    assert (await outsider.http.post(f"/domains/{domain['id']}/resume")).status_code == 409  # it is active


def _domain(name: str) -> dict[str, Any]:
    return {
        "domain": f"{name}.example",
        "from_email": f"sales@{name}.example",
        "smtp": {"host": "127.0.0.1", "port": 1025, "security": "none"},
    }


async def test_leads_change_refuse_a_taken_address_and_delete(api: ApiClient) -> None:
    lead = await api.lead(f"{unique('a')}@lead.example", first_name="Jan")
    taken = await api.lead(f"{unique('b')}@lead.example")
    changed = await api.http.patch(f"/leads/{lead['id']}", json={"company": "Acme", "tags": ["vip"]})
    assert changed.status_code == 200
    assert (changed.json()["data"]["company"], changed.json()["data"]["first_name"]) == ("Acme", "Jan")
    clash = await api.http.patch(f"/leads/{lead['id']}", json={"email": taken["email"].upper()})
    assert clash.status_code == 409
    assert (await api.http.patch(f"/leads/{lead['id']}", json={"email": "not-an-address"})).status_code == 422
    assert (await api.http.delete(f"/leads/{lead['id']}")).status_code == 200
    assert (await api.http.get(f"/leads/{lead['id']}")).status_code == 404


async def test_templates_change_with_checked_syntax_and_preview_for_a_lead(api: ApiClient) -> None:
    template = await api.template(
        body_html="<p>Hi {{ first_name }} of {{ fields.city }}</p><p>[{{ country }}|{{ timezone }}]</p>"
    )
    lead = await api.lead(
        f"{unique('p')}@lead.example", first_name="Anna", fields={"city": "Utrecht"}, country="Netherlands"
    )
    broken = await api.http.patch(f"/templates/{template['id']}", json={"subject": "Hi {{ first_name"})
    assert broken.status_code == 422
    changed = await api.http.patch(f"/templates/{template['id']}", json={"subject": "For {{ first_name }}"})
    assert changed.json()["data"]["subject"] == "For {{ first_name }}"

    preview = await api.http.post(f"/templates/{template['id']}/preview", json={"lead_id": lead["id"]})
    assert preview.status_code == 200, preview.text
    shown = preview.json()["data"]
    assert shown["subject"] == "For Anna"
    assert "Hi Anna of Utrecht" in shown["html"]
    assert "[NL|]" in shown["html"]  # its country as stored (the code), no zone of its own given
    assert shown["text"].startswith("Hi Anna of Utrecht")
    followup = await api.http.post(
        f"/templates/{template['id']}/preview", json={"lead_id": lead["id"], "followup": True}
    )
    assert followup.json()["data"]["subject"] == "Re: For Anna"
    missing = await api.http.post(f"/templates/{template['id']}/preview", json={"lead_id": str(uuid.uuid4())})
    assert missing.status_code == 404

    failing = await api.template(body_html="{{ 1 / 0 }}")
    refused = await api.http.post(f"/templates/{failing['id']}/preview", json={"lead_id": lead["id"]})
    assert refused.status_code == 422
    assert "failed to render" in refused.json()["error"]


async def test_suppressions_add_once_list_and_delete(api: ApiClient) -> None:
    email = f"{unique('Stop')}@Example.org"
    first = await api.http.post("/suppressions", json={"email": email, "reason": "asked by phone"})
    assert first.status_code == 201
    again = await api.http.post("/suppressions", json={"email": email.lower()})
    assert again.status_code == 200
    assert again.json()["data"]["id"] == first.json()["data"]["id"]
    domain = await api.http.post("/suppressions", json={"domain": f"{unique('competitor')}.example"})
    assert domain.status_code == 201
    for bad in ({}, {"email": "a@b.example", "domain": "b.example"}, {"domain": "not a domain"}):
        assert (await api.http.post("/suppressions", json=bad)).status_code == 422, bad
    found = await api.get(f"/suppressions?search={email[:10]}")
    assert [s["email"] for s in found["items"]] == [email.lower()]
    assert (await api.http.delete(f"/suppressions/{first.json()['data']['id']}")).status_code == 200
    assert (await api.get(f"/suppressions?search={email[:10]}"))["total"] == 0


def upload(content: bytes) -> dict[str, Any]:
    return {"file": ("leads.csv", content, "text/csv")}


async def test_a_csv_import_reports_each_bad_row_and_imports_the_rest(api: ApiClient) -> None:
    existing = await api.lead(f"{unique('old')}@lead.example", first_name="Old", company="Keep")
    fresh = f"{unique('new')}@lead.example"
    csv_text = (
        "Email,first_name,tags,city\n"
        f"{fresh},Anna,vip;q3,Utrecht\n"
        "not-an-address,Bob,,\n"
        f"{existing['email'].upper()},Renamed,,Delft\n"
        "\n"
        f"{fresh},Again,,\n"
        "x@y.example,too,many,values,here\n"
    )
    reply = await api.http.post("/leads/import", files=upload(csv_text.encode()))
    assert reply.status_code == 200, reply.text
    result = reply.json()["data"]
    assert (result["created"], result["updated"], result["skipped"]) == (1, 1, 1)
    assert [e["row"] for e in result["errors"]] == [3, 7]
    assert "email" in result["errors"][0]["error"]

    [anna] = (await api.get(f"/leads?search={fresh}"))["items"]
    assert (anna["first_name"], anna["tags"], anna["fields"]) == ("Anna", ["vip", "q3"], {"city": "Utrecht"})
    updated = await api.get(f"/leads/{existing['id']}")
    assert (updated["first_name"], updated["company"], updated["fields"]) == (
        "Renamed",
        "Keep",
        {"city": "Delft"},
    )


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"first_name\nAnna\n", "email"),
        (b"", "email"),
        (b"email\nfirst-row@ok.example\n\xff\xfe@x.example\n", "UTF-8"),
        (b"email,email\na@b.example,c@d.example\n", "twice"),
    ],
)
async def test_a_file_that_is_not_a_lead_csv_is_refused_whole(
    api: ApiClient, content: bytes, why: str
) -> None:
    before = (await api.get("/leads"))["total"]
    reply = await api.http.post("/leads/import", files=upload(content))
    assert reply.status_code == 422, reply.text
    assert why in reply.json()["error"]
    assert (await api.get("/leads"))["total"] == before
