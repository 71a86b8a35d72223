"""Every query the api runs for a workspace's admin carries that workspace: a walk through every route of the
api, with every SQL statement PostgreSQL receives captured and judged.

Judged statements are those the api's code issued (its frames on the stack). Each must come from a
repository module (routes and use cases hold no SQL), must not name another workspace's id, and each
reference to a workspace's table must be filtered by `<table>.workspace_id = <the caller's workspace>` (an
INSERT must write it; a table without a `workspace_id`, such as a campaign's audience, must be reached
through a filtered owner). The shared modules the campaign repository calls with rows it read in the
workspace (message transitions, the KPI store, slot reservations) are held to the first two rules only.
The walk must call every repository method, so a new query without a route in the walk fails here too.
"""

from __future__ import annotations

import inspect
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import greenlet
import pytest
from fastapi import FastAPI
from sqlalchemy import event, select, update

from services.api.accounts.repository import AccountRepository
from services.api.campaigns.repository import CampaignRepository, MessageRepository
from services.api.domains.repository import DomainRepository
from services.api.esp_webhooks.repository import EspWebhookRepository
from services.api.kit.repository import WorkspaceRepository
from services.api.leads.repository import LeadRepository
from services.api.main import create_app
from services.api.oauth.repository import OAuthAccountRepository, OAuthFlowRepository
from services.api.suppressions.repository import SuppressionRepository
from services.api.templates.repository import TemplateRepository
from services.api.webhooks.repository import WebhookEndpointRepository
from services.api.workspace.repository import WorkspaceSettingsRepository
from services.scheduler.service import Scheduler
from shared.clock import utcnow
from shared.db import create_engine, domain_health, message_store, session_factory
from shared.db.message_store import on_session
from shared.db.models import Base, Campaign, Message, SendingDomain, Workspace
from shared.reputation import Cause, Verdict
from shared.settings import Settings
from tests.support.api import ApiClient
from tests.support.smtp import free_port
from tests.support.stack import inprocess_service

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
API = ROOT / "services" / "api"
SHARED_CALLEES = {
    "shared/db/message_store.py",
    "shared/db/kpi.py",
    "shared/db/slots.py",
    "shared/db/domain_health.py",
    "shared/messaging.py",
}
TABLES = Base.metadata.tables.values()
# users carry a workspace too, but accounts are looked up across workspaces by design (a login by address).
OWNED = {t.name for t in TABLES if "workspace_id" in t.c and t.name != "users"}
THROUGH_OWNER = {
    t.name
    for t in TABLES
    if "workspace_id" not in t.c and any(fk.column.table.name in OWNED for fk in t.foreign_keys)
}
REPOSITORIES = [
    WorkspaceRepository,
    AccountRepository,
    CampaignRepository,
    MessageRepository,
    DomainRepository,
    EspWebhookRepository,
    LeadRepository,
    OAuthAccountRepository,
    OAuthFlowRepository,
    WebhookEndpointRepository,
    SuppressionRepository,
    TemplateRepository,
    WorkspaceSettingsRepository,
]


@dataclass(frozen=True)
class Statement:
    sql: str
    rows: tuple[tuple[Any, ...], ...]  # its parameters: one row, or each row of an executemany
    frames: tuple[tuple[str, str], ...]  # (path from the project root, qualified function), innermost first

    @property
    def api_frames(self) -> list[tuple[str, str]]:
        return [f for f in self.frames if f[0].startswith("services/api/")]


def _project_frames(frame: Any) -> list[tuple[str, str]]:
    found = []
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if path.is_relative_to(ROOT) and ".venv" not in path.parts and "tests" not in path.parts:
            found.append((path.relative_to(ROOT).as_posix(), frame.f_code.co_qualname))
        frame = frame.f_back
    return found


def _frames() -> tuple[tuple[str, str], ...]:
    """The project's frames that led to this statement: SQLAlchemy's asyncio layer runs it in a greenlet whose
    parent holds the awaiting coroutines."""
    here = _project_frames(inspect.currentframe())
    parent = greenlet.getcurrent().parent
    return tuple(here + (_project_frames(parent.gr_frame) if parent is not None else []))


def capturing(captured: list[Statement]) -> Callable[..., FastAPI]:
    def create(settings: Settings) -> FastAPI:
        app = create_app(settings)

        @event.listens_for(app.state.runtime.engine.sync_engine, "before_cursor_execute")
        def _capture(_conn: Any, _cursor: Any, sql: str, parameters: Any, _context: Any, many: bool) -> None:
            rows = parameters if many else [parameters]
            captured.append(Statement(sql, tuple(tuple(row or ()) for row in rows), _frames()))

        return app

    return create


def _bound(statement: Statement, sql: str, workspace_id: uuid.UUID) -> set[str]:
    """The tables and aliases that `sql` filters by `<name>.workspace_id = <workspace_id>`."""
    return {
        name
        for name, index in re.findall(r"\b(\w+)\.workspace_id = \$(\d+)", sql)
        if all(row[int(index) - 1] == workspace_id for row in statement.rows)
    }


def _values(statement: Statement) -> set[Any]:
    """Every parameter value, arrays opened."""
    found: set[Any] = set()
    for row in statement.rows:
        for value in row:
            found.update(value if isinstance(value, list | tuple) else [value])
    return found


def scoping_faults(statement: Statement, workspace_id: uuid.UUID, others: set[uuid.UUID]) -> list[str]:
    """What is wrong with one statement the api ran for `workspace_id`; empty when it is scoped."""
    sql = " ".join(statement.sql.split())
    faults = []
    api = statement.api_frames
    if api and not api[0][0].endswith("repository.py"):
        faults.append(f"SQL outside a repository, from {api[0]}")
    values = _values(statement)
    if others & values:
        faults.append("names another workspace's id")
    if statement.frames and statement.frames[0][0] in SHARED_CALLEES:
        return faults  # a shared module's statement about rows the repository read in the workspace
    if re.match(r"(CREATE|TRUNCATE|DROP)\b", sql, re.I):
        return faults  # the import's scratch table: no rows of any workspace
    filtered = _bound(statement, sql, workspace_id)
    references = [
        (reference, table)
        for table in OWNED | THROUGH_OWNER
        for reference in re.finditer(rf"(?<![.\w]){table}\b(?!\.)(?: AS (\w+))?", sql)
    ]
    owners = {reference.group(1) or table for reference, table in references if table in OWNED} & filtered
    inserting = re.match(r"(?:WITH \w+ AS \()?INSERT INTO (\w+) \(([^)]*)\) (\w+)", sql, re.I)
    for reference, table in references:
        name = reference.group(1) or table
        if inserting and reference.start() == inserting.start(1):
            if inserting.group(3).upper() == "SELECT":
                if not filtered:
                    faults.append(f"inserts into {table} rows not filtered by the workspace")
            elif table not in OWNED:
                faults.append(f"inserts into {table} without a workspace-filtered owner")
            elif "workspace_id" not in inserting.group(2).split(", ") or workspace_id not in values:
                faults.append(f"inserts into {table} without the workspace")
        elif table in OWNED and name not in filtered:
            faults.append(f"reads or writes {name} ({table}) without {name}.workspace_id = the caller's")
        elif table in THROUGH_OWNER and not owners:
            faults.append(f"reaches {table} without a workspace-filtered owner")
    return faults


def repository_methods() -> set[str]:
    """Every method of the repositories that may run SQL, as `Class.method`."""
    return {
        f"{cls.__name__}.{name}"
        for cls in REPOSITORIES
        for name, member in vars(cls).items()
        if inspect.iscoroutinefunction(member)
    }


@pytest.fixture
async def captured(settings: Settings) -> AsyncIterator[tuple[str, list[Statement]]]:
    found: list[Statement] = []
    # An OAuth2 provider to connect mailboxes with (Google's endpoints are fixed: nothing is fetched).
    google = {"oauth_google_client_id": "walk-client", "oauth_google_client_secret": "walk-secret"}
    async with inprocess_service(capturing(found), settings.model_copy(update=google), free_port()) as url:
        yield url, found


async def fail_one_message(settings: Settings, campaign_id: str) -> None:
    """Plan the draft's messages as the scheduler does on a start, and fail one of them as a message that no
    slot could take (so that it can be resent)."""
    engine = create_engine(settings.database_url, pool_size=1)
    sessions = session_factory(engine)
    row = uuid.UUID(campaign_id)
    try:
        async with sessions() as session, session.begin():
            await session.execute(update(Campaign).where(Campaign.id == row).values(status="scheduled"))
        assert await Scheduler(sessions, settings, utcnow).start_campaign(row) > 0
        async with sessions() as session, session.begin():
            message_id = await session.scalar(select(Message.id).where(Message.campaign_id == row).limit(1))
            assert message_id is not None
            assert await message_store.fail_without_slot(on_session(session), message_id, "for the walk")
    finally:
        await engine.dispose()


async def pause_domain(settings: Settings, domain_id: str) -> None:
    """Pause a domain as its health would (policy rejections), so that it can be resumed."""
    engine = create_engine(settings.database_url, pool_size=1)
    row = uuid.UUID(domain_id)
    try:
        async with session_factory(engine)() as session, session.begin():
            domain = await session.get_one(SendingDomain, row)
            verdict = Verdict(Cause.POLICY_REJECTIONS, "for the walk")
            paused = await domain_health.pause(
                on_session(session), row, domain.workspace_id, domain.domain, verdict, utcnow
            )
            assert paused
    finally:
        await engine.dispose()


async def walk_every_route(superuser: ApiClient, url: str, settings: Settings) -> uuid.UUID:
    """As the admin of a new workspace, every route of the api (and each branch that reads differently)."""
    suffix = uuid.uuid4().hex[:8]
    admin_email = f"walker-{suffix}@scoping.example"
    created = await superuser.create(
        "/workspaces",
        {"name": f"scoping-{suffix}", "admin_email": admin_email, "admin_password": "correct horse"},
    )
    colleague = f"colleague-{suffix}@scoping.example"
    await superuser.create(
        "/workspaces", {"name": f"other-{suffix}", "admin_email": colleague, "admin_password": "12345678"}
    )
    for action in ("deactivate", "activate"):
        assert (await superuser.http.post(f"/users/{action}", json={"email": colleague})).status_code == 200
    async with ApiClient(url) as api:
        await api.login(admin_email, "correct horse")
        await api.get("/auth/me")
        domain = await api.domain(f"walk-{suffix}.example", 1025, health_thresholds={"bounce_rate": 0.1})
        mailbox = {"host": "127.0.0.1", "port": 1, "security": "none", "username": "walk"}
        spare = await api.domain(f"spare-{suffix}.example", 1025, imap={**mailbox, "password": "secret"})
        assert (await api.http.post("/domains", json={**_domain_body(domain)})).status_code == 409
        await api.get("/domains?search=walk")
        await api.get(f"/domains/{domain['id']}")
        assert (await api.http.patch(f"/domains/{spare['id']}", json={"daily_cap": 10})).status_code == 200
        thresholds = {"health_thresholds": {"connection_failures": 3, "bounce_rate": None}}
        assert (await api.http.patch(f"/domains/{domain['id']}", json=thresholds)).status_code == 200
        for _ in range(2):  # the workspace's settings: new, then changed
            changed = await api.http.patch(
                "/workspace/settings", json={"health_thresholds": {"complaint_rate": 0.01}}
            )
            assert changed.status_code == 200, changed.text
        await api.get("/workspace/settings")
        assert (await api.http.post(f"/domains/{spare['id']}/resume")).status_code == 409  # active
        await pause_domain(settings, spare["id"])
        assert (await api.http.post(f"/domains/{spare['id']}/resume")).status_code == 200
        # A warm-up plan: the detail then says where it stands today (pacing: what providers slowed it).
        warmup = {"start_per_day": 5, "growth_percent": 20, "max_per_day": 50}
        assert (await api.http.patch(f"/domains/{spare['id']}", json={"warmup": warmup})).status_code == 200
        assert (await api.get(f"/domains/{spare['id']}"))["warmup"]["cap_today"] == 5
        # A mailbox replaced (the stored password kept), tested (nothing listens there), and removed.
        replaced = await api.http.patch(f"/domains/{spare['id']}", json={"imap": {**mailbox, "port": 2}})
        assert replaced.status_code == 200, replaced.text
        tested = await api.http.post(f"/domains/{spare['id']}/imap/test")
        assert tested.json()["data"]["ok"] is False, tested.text
        assert (await api.http.patch(f"/domains/{spare['id']}", json={"imap": None})).status_code == 200
        # Connecting its mailbox with OAuth2 is started (the provider's callback has no token: the flow's
        # `state` names the workspace, outside this walk); there is no grant to disconnect yet.
        started = await api.http.post(f"/domains/{spare['id']}/oauth", json={"provider": "google"})
        assert started.status_code == 200, started.text
        assert (await api.http.delete(f"/domains/{spare['id']}/oauth")).status_code == 404
        assert (
            await api.http.post(f"/domains/{domain['id']}/dkim", json={"ed25519": True})
        ).status_code == 200
        assert (await api.http.get(f"/domains/{domain['id']}/checks")).status_code in (
            200,
            503,
        )  # DNS or none
        lead = await api.lead(f"jan-{suffix}@client.example", tags=["walk"])
        other = await api.lead(f"piet-{suffix}@client.example", tags=["walk"])
        assert (await api.http.post("/leads", json={"email": lead["email"]})).status_code == 409
        await api.get("/leads?search=jan&status=active&tag=walk")
        await api.get(f"/leads/{lead['id']}")
        patched = await api.http.patch(f"/leads/{other['id']}", json={"email": f"p-{suffix}@client.example"})
        assert patched.status_code == 200
        csv = f"email,first_name,city\nnew-{suffix}@client.example,New,Delft\n{lead['email']},Jan,Utrecht\n"
        imported = await api.http.post("/leads/import", files={"file": ("l.csv", csv.encode(), "text/csv")})
        assert imported.json()["data"]["created"] == 1, imported.text
        pdf = {"file": ("r.pdf", b"%PDF-1.4 walk", "application/pdf")}
        for _ in range(2):  # a new report, then a replaced one
            assert (await api.http.put(f"/leads/{lead['id']}/report", files=pdf)).status_code == 200
        template = await api.template()
        await api.get("/templates?search=Intro")
        await api.get(f"/templates/{template['id']}")
        assert (
            await api.http.patch(f"/templates/{template['id']}", json={"name": "Walk"})
        ).status_code == 200
        preview = await api.http.post(f"/templates/{template['id']}/preview", json={"lead_id": lead["id"]})
        assert preview.status_code == 200, preview.text
        for _ in range(2):  # a new suppression, then the existing one
            await api.http.post("/suppressions", json={"domain": f"blocked-{suffix}.example"})
        suppression = await api.create("/suppressions", {"email": f"gone-{suffix}@client.example"})
        await api.get("/suppressions?search=gone")
        await api.get(f"/suppressions/{suppression['id']}")
        assert (await api.http.delete(f"/suppressions/{suppression['id']}")).status_code == 200

        topics = {"topic_arns": ["arn:aws:sns:eu-west-1:123456789012:walk"]}
        hook = await api.create("/esp-webhooks", {"provider": "ses", **topics})
        assert (await api.http.post("/esp-webhooks", json={"provider": "ses", **topics})).status_code == 409
        mailgun = await api.create("/esp-webhooks", {"provider": "mailgun", "signing_key": "k" * 32})
        await api.get("/esp-webhooks?search=ses")
        await api.get(f"/esp-webhooks/{hook['id']}")
        patched_hook = await api.http.patch(f"/esp-webhooks/{mailgun['id']}", json={"signing_key": "n" * 32})
        assert patched_hook.status_code == 200, patched_hook.text
        assert (await api.http.delete(f"/esp-webhooks/{hook['id']}")).status_code == 200
        secret = "whsec_" + "A" * 32
        endpoint = await api.create(
            "/webhook-endpoints",
            {"url": "http://127.0.0.1:9/walk", "event_types": ["campaign.paused"], "secret": secret},
        )
        await api.get("/webhook-endpoints?search=walk")

        wizard = {
            "name": "walk",
            "template_id": template["id"],
            "audience": {"mode": "tags", "tags": ["walk"]},
            "schedule": {"start_mode": "draft"},
            "domains": [domain["domain"]],
        }
        assert (await api.http.post("/campaigns/dry-run", json=wizard)).status_code == 200
        static = {
            **wizard,
            "audience": {"mode": "static", "lead_ids": [lead["id"], other["id"]]},
            "schedule": {"start_mode": "draft", "window_mode": "recipient"},  # reads the leads' zones too
        }
        draft = await api.create("/campaigns", static)
        assert (
            await api.http.post(f"/campaigns/{draft['id']}/dry-run")
        ).status_code == 200  # nothing planned
        await fail_one_message(settings, draft["id"])
        assert (await api.http.post(f"/campaigns/{draft['id']}/dry-run")).status_code == 200  # some planned
        messages = await api.get(f"/campaigns/messages?campaign_id={draft['id']}&status=failed")
        resent = await api.http.post(f"/campaigns/messages/{messages['items'][0]['id']}/resend")
        assert resent.status_code == 200, resent.text
        await api.get(f"/campaigns/messages?lead_id={lead['id']}&is_followup=false&domain={domain['domain']}")
        await api.get("/campaigns?status=scheduled&search=walk&created_from=2020-01-01T00:00:00Z")
        await api.get(f"/campaigns/{draft['id']}?step=1")
        steps = {"steps": [{"template_id": template["id"], "delay_days": 2, "condition": "not_opened"}]}
        assert (await api.http.put(f"/campaigns/{draft['id']}/steps", json=steps)).status_code == 200
        for action in ("pause", "resume", "stop"):
            assert (await api.http.post(f"/campaigns/{draft['id']}/{action}")).status_code == 200, action
        hooked = f"/webhook-endpoints/{endpoint['id']}"
        [delivery] = (await api.get(f"{hooked}/deliveries?status=pending"))["items"]  # the pause
        assert (await api.http.post(f"{hooked}/deliveries/{delivery['id']}/redeliver")).status_code == 202
        await api.get(f"{hooked}/attempts")
        await api.get(hooked)
        assert (await api.http.patch(hooked, json={"enabled": False, "secret": secret})).status_code == 200
        assert (await api.http.delete(hooked)).status_code == 200
        started = await api.create("/campaigns", {**static, "schedule": {"start_mode": "draft"}})
        assert (await api.http.post(f"/campaigns/{started['id']}/start")).status_code == 200
        assert (await api.http.post(f"/campaigns/{started['id']}/stop")).status_code == 200

        assert (await api.http.delete(f"/domains/{domain['id']}")).status_code == 409  # campaigns name it
        assert (await api.http.delete(f"/templates/{template['id']}")).status_code == 409
        assert (await api.http.delete(f"/domains/{spare['id']}")).status_code == 200
        unused = await api.template()
        assert (await api.http.delete(f"/templates/{unused['id']}")).status_code == 200
        assert (await api.http.delete(f"/leads/{other['id']}")).status_code == 200
    return uuid.UUID(created["workspace"]["id"])


def _domain_body(domain: dict[str, Any]) -> dict[str, Any]:
    return {
        "domain": domain["domain"],
        "from_email": domain["from_email"],
        "smtp": {"host": "127.0.0.1", "port": 1025, "security": "none"},
    }


async def test_every_query_of_the_api_is_scoped_to_the_callers_workspace(
    captured: tuple[str, list[Statement]], settings: Settings
) -> None:
    url, statements = captured
    async with ApiClient(url) as superuser:
        await superuser.login()
        start = len(statements)
        workspace_id = await walk_every_route(superuser, url, settings)
    walked = [s for s in statements[start:] if s.api_frames]
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            others = set(await session.scalars(select(Workspace.id))) - {workspace_id}
    finally:
        await engine.dispose()
    account_queries = [s for s in walked if s.api_frames[0][0] == "services/api/accounts/repository.py"]
    faults = {
        (" ".join(s.sql.split())[:300], fault)
        for s in walked
        if s not in account_queries
        for fault in scoping_faults(s, workspace_id, others)
    }
    assert not faults, "\n".join(f"{fault}: {sql}" for sql, fault in sorted(faults))
    called = {qualname for s in walked for path, qualname in s.api_frames if path.endswith("repository.py")}
    assert repository_methods() - called == set(), "repository methods the walk never ran"
