"""OAuth2 mailboxes (issue 17) end to end, with real servers: the test authorization server
(tests/support/oauth_server.py), aiosmtpd taking only XOAUTH2 and checking tokens by introspection, the api,
scheduler and sender. A domain connects its mailbox, sends with XOAUTH2, goes on sending when its token
expires or is refused, pauses with `needs_reauth` (nothing lost) when the grant is revoked, and two processes
needing a fresh token at once refresh it once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from services.api.main import create_app as create_api
from shared.clock import utcnow
from shared.db import asyncpg_dsn, oauth_accounts
from shared.oauth import Mechanism
from shared.oauth_tokens import TokenSource
from shared.settings import Settings
from tests.support import mailbox_mail
from tests.support.api import ApiClient
from tests.support.dovecot import Dovecot, installed, running_dovecot
from tests.support.oauth_server import CLIENT_ID, CLIENT_SECRET, OAuthServer, running_oauth_server
from tests.support.oauth_smtp import OAuthSmtp, running_oauth_smtp
from tests.support.pipeline import Pipeline, until
from tests.support.smtp import free_port
from tests.support.stack import inprocess_service, subprocess_service, with_ports

pytestmark = [
    pytest.mark.integration,
    # The test submission server takes XOAUTH2 in the clear, on loopback (the providers' servers want TLS).
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
]
needs_dovecot = pytest.mark.skipif(not installed(), reason="dovecot is not installed (make test installs it)")
# Another backend of this test's database waiting for a row lock.
WAITING_ON_A_LOCK = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    " AND wait_event_type = 'Lock'"
)
FAST_READER = {
    "inbox_lease_seconds": 2.0,
    "inbox_poll_seconds": 1.0,
    "inbox_timeout_seconds": 5.0,
    "inbox_backoff_seconds": [0.2, 0.5, 1.0],
    "log_format": "json",
}


@pytest.fixture(scope="module")
async def oauth_server() -> AsyncIterator[OAuthServer]:
    async with running_oauth_server() as server:
        yield server


@pytest.fixture(scope="module")
def api_port() -> int:
    return free_port()


def oauth_settings(settings: Settings, server: OAuthServer, api_port: int) -> Settings:
    return settings.model_copy(
        update={
            "oauth_oidc_issuer": server.url,
            "oauth_oidc_client_id": CLIENT_ID,
            "oauth_oidc_client_secret": CLIENT_SECRET,
            "oauth_redirect_url": f"http://127.0.0.1:{api_port}/api/v1/oauth/callback",
        }
    )


@pytest.fixture(scope="module")
def settings(settings: Settings, oauth_server: OAuthServer, api_port: int) -> Settings:
    """The session's, with the test authorization server as this deployment's generic OpenID provider."""
    return oauth_settings(settings, oauth_server, api_port)


@pytest.fixture(scope="module")
async def api_url(settings: Settings, api_port: int) -> AsyncIterator[str]:
    async with inprocess_service(create_api, settings, api_port) as url:
        yield url


@pytest.fixture
async def smtp_sink(oauth_server: OAuthServer) -> AsyncIterator[OAuthSmtp]:
    """What the pipeline sends to: a submission server that takes only XOAUTH2."""
    oauth_server.access_lifetime, oauth_server.refresh_delay, oauth_server.email_for = 3600, 0.0, None
    async with running_oauth_smtp(f"{oauth_server.url}/introspect") as server:
        yield server


async def a_domain(api: ApiClient, smtp_port: int, interval: int = 0) -> dict[str, Any]:
    return await api.domain(f"oauth-{uuid.uuid4().hex[:8]}.example", smtp_port, interval=interval)


async def connect(api: ApiClient, domain_id: str) -> httpx.Response:
    """What a person does: open the authorize URL the api answers, approve (the test server approves at once),
    and be sent back to the api's callback."""
    start = await api.http.post(f"/domains/{domain_id}/oauth", json={"provider": "oidc"})
    assert start.status_code == 200, start.text
    async with httpx.AsyncClient() as browser:
        consent = await browser.get(start.json()["data"]["authorize_url"])
        assert consent.status_code == 302, consent.text
        return await browser.get(consent.headers["location"])


async def campaign(pipeline: Pipeline, domain: str, leads: int) -> str:
    lead_ids = [
        (await pipeline.api.lead(f"{uuid.uuid4().hex[:8]}@lead.example", first_name="Jan"))["id"]
        for _ in range(leads)
    ]
    template = await pipeline.api.template()
    return str((await pipeline.api.campaign(template["id"], lead_ids, [domain]))["id"])


async def statuses(pipeline: Pipeline, campaign_id: str) -> list[str]:
    return sorted(m["status"] for m in await pipeline.messages(campaign_id))


async def test_connecting_a_mailbox_keeps_the_grant_encrypted_and_answers_no_token(
    api: ApiClient, oauth_server: OAuthServer, settings: Settings
) -> None:
    domain = await a_domain(api, free_port())
    callback = await connect(api, domain["id"])
    assert callback.status_code == 200, callback.text
    assert callback.json()["data"] == {
        "domain_id": domain["id"], "provider": "oidc", "email": domain["from_email"], "state": "active",
    }  # fmt: skip
    shown = await api.get(f"/domains/{domain['id']}")
    assert shown["oauth"]["email"] == domain["from_email"]
    assert shown["oauth"]["state"] == "active"
    assert shown["oauth"]["reconnect_url"] is None
    answers = callback.text + (await api.http.get(f"/domains/{domain['id']}")).text
    assert not [token for token in oauth_server.issued if token in answers]
    db = await asyncpg.connect(asyncpg_dsn(settings.database_url))
    try:
        stored = await db.fetchrow(
            "SELECT * FROM oauth_accounts WHERE sending_domain_id = $1", uuid.UUID(domain["id"])
        )
    finally:
        await db.close()
    assert stored is not None
    assert not [token for token in oauth_server.issued if token in str(dict(stored))]
    # The state works once.
    async with httpx.AsyncClient() as browser:
        again = await browser.get(str(callback.url))
    assert again.status_code == 422
    assert "expired" in again.json()["error"]
    # Connecting again replaces the grant, and revokes the one replaced.
    [first] = [g for g in oauth_server.grants.values() if g.email == domain["from_email"]]
    assert (await connect(api, domain["id"])).status_code == 200
    assert first.revoked
    assert [g.revoked for g in oauth_server.grants.values() if g.email == domain["from_email"]] == [
        True,
        False,
    ]


async def test_a_mailbox_other_than_the_from_address_is_refused_and_its_grant_revoked(
    api: ApiClient, oauth_server: OAuthServer
) -> None:
    domain = await a_domain(api, free_port())
    oauth_server.email_for = "someone.else@elsewhere.example"
    try:
        callback = await connect(api, domain["id"])
    finally:
        oauth_server.email_for = None
    assert callback.status_code == 422, callback.text
    body = callback.json()
    assert body["data"] is None
    assert "someone.else@elsewhere.example" in body["error"]
    assert domain["from_email"] in body["error"]
    [grant] = [g for g in oauth_server.grants.values() if g.email == "someone.else@elsewhere.example"]
    assert grant.revoked
    assert (await api.get(f"/domains/{domain['id']}"))["oauth"] is None


async def test_an_unknown_provider_or_state_is_refused_in_the_envelope(api: ApiClient) -> None:
    domain = await a_domain(api, free_port())
    google = await api.http.post(f"/domains/{domain['id']}/oauth", json={"provider": "google"})
    assert google.status_code == 422
    assert "not configured" in google.json()["error"]
    callback = await api.http.get("/oauth/callback", params={"state": "forged", "code": "x"}, headers={})
    assert callback.status_code == 422
    assert callback.json()["error_code"] == "validation_error"


async def test_a_denied_consent_is_refused_with_the_providers_reason(api: ApiClient) -> None:
    domain = await a_domain(api, free_port())
    start = await api.http.post(f"/domains/{domain['id']}/oauth", json={"provider": "oidc"})
    state = dict(httpx.URL(start.json()["data"]["authorize_url"]).params)["state"]
    callback = await api.http.get(
        "/oauth/callback",
        params={"state": state, "error": "access_denied", "error_description": "the user said no"},
        headers={"Authorization": ""},
    )
    assert callback.status_code == 422
    assert "access_denied the user said no" in callback.json()["error"]
    assert (await api.get(f"/domains/{domain['id']}"))["oauth"] is None


async def test_disconnecting_forgets_the_grant_and_revokes_it(
    api: ApiClient, oauth_server: OAuthServer
) -> None:
    domain = await a_domain(api, free_port())
    assert (await connect(api, domain["id"])).status_code == 200
    [grant] = [g for g in oauth_server.grants.values() if g.email == domain["from_email"]]
    disconnected = await api.http.delete(f"/domains/{domain['id']}/oauth")
    assert disconnected.status_code == 200, disconnected.text
    assert disconnected.json()["data"]["deleted"] is True
    assert grant.revoked
    assert (await api.get(f"/domains/{domain['id']}"))["oauth"] is None
    assert (await api.http.delete(f"/domains/{domain['id']}/oauth")).status_code == 404


async def test_deleting_a_domain_while_a_refused_refresh_pauses_it_waits_for_the_refresh_not_a_deadlock(
    api: ApiClient, settings: Settings
) -> None:
    """A refused refresh locks the grant, then pauses its domain; a delete of the domain at that moment waits
    for the grant, rather than holding the domain and waiting for the grant (PostgreSQL would abort one)."""
    domain = await a_domain(api, free_port())
    assert (await connect(api, domain["id"])).status_code == 200
    db = await asyncpg.connect(asyncpg_dsn(settings.database_url))
    try:
        async with db.transaction():
            grant = await oauth_accounts.read(db, uuid.UUID(domain["id"]), lock=True)
            assert grant is not None
            deleting = asyncio.create_task(api.http.delete(f"/domains/{domain['id']}"))

            async def delete_waits_on_a_lock() -> bool:  # (before the fix, having taken the domain's)
                return bool(await db.fetchval(WAITING_ON_A_LOCK))

            await until(delete_waits_on_a_lock)
            assert not deleting.done()
            assert await oauth_accounts.needs_reauth(db, grant, "invalid_grant", utcnow)
        deleted = await deleting
    finally:
        await db.close()
    assert deleted.status_code == 200, deleted.text
    assert (await api.http.get(f"/domains/{domain['id']}")).status_code == 404


async def test_a_campaign_sends_with_xoauth2_and_goes_on_as_its_tokens_expire(
    pipeline: Pipeline, oauth_server: OAuthServer, smtp_sink: OAuthSmtp
) -> None:
    domain = await a_domain(pipeline.api, smtp_sink.port, interval=2)
    # Each access token is due for refresh 1 s after it is issued (300 s margin): over the campaign, the
    # sender refreshes before each send (a session it logged in with an older token stays good).
    oauth_server.access_lifetime = 301
    assert (await connect(pipeline.api, domain["id"])).status_code == 200
    refreshes = oauth_server.refreshes
    campaign_id = await campaign(pipeline, domain["domain"], leads=3)

    async def sent() -> bool:
        return await statuses(pipeline, campaign_id) == ["sent"] * 3

    await pipeline.until(sent, 30)
    assert len(smtp_sink.received) == 3
    assert oauth_server.refreshes > refreshes
    assert oauth_server.refreshes >= refreshes + 2
    assert smtp_sink.addresses == {domain["from_email"]}
    assert {mechanism for mechanism, _ in smtp_sink.oauth.logins} == {Mechanism.XOAUTH2}  # all it offers
    assert smtp_sink.oauth.refusals == 0


async def test_a_token_the_server_refuses_is_refreshed_once_and_the_send_retried_with_oauthbearer(
    pipeline: Pipeline, oauth_server: OAuthServer
) -> None:
    """A server offering OAUTHBEARER too (as Google does) gets it."""
    offered = (Mechanism.XOAUTH2, Mechanism.OAUTHBEARER)
    async with running_oauth_smtp(f"{oauth_server.url}/introspect", offered) as server:
        domain = await a_domain(pipeline.api, server.port)
        assert (await connect(pipeline.api, domain["id"])).status_code == 200
        oauth_server.expire_access_tokens()  # the provider ended them; we still hold one valid for an hour
        refreshes = oauth_server.refreshes
        campaign_id = await campaign(pipeline, domain["domain"], leads=1)

        async def sent() -> bool:
            return await statuses(pipeline, campaign_id) == ["sent"]

        await pipeline.until(sent, 30)
    assert server.oauth.refusals == 1
    assert server.oauth.logins == [(Mechanism.OAUTHBEARER, domain["from_email"])]
    assert oauth_server.refreshes == refreshes + 1
    [message] = await pipeline.messages(campaign_id)
    assert message["retry_count"] == 0


async def test_a_revoked_grant_pauses_the_domain_for_reauth_and_loses_nothing(
    pipeline: Pipeline, oauth_server: OAuthServer, smtp_sink: OAuthSmtp
) -> None:
    domain = await a_domain(pipeline.api, smtp_sink.port)
    assert (await connect(pipeline.api, domain["id"])).status_code == 200
    oauth_server.revoke_all()
    oauth_server.expire_access_tokens()
    campaign_id = await campaign(pipeline, domain["domain"], leads=2)

    async def paused() -> bool:
        shown = await pipeline.api.get(f"/domains/{domain['id']}")
        return bool(shown["state"] == "paused")

    await pipeline.until(paused, 30)
    shown = await pipeline.api.get(f"/domains/{domain['id']}")
    assert shown["paused_cause"] == "needs_reauth"
    assert shown["oauth"]["state"] == "needs_reauth"
    assert shown["oauth"]["reconnect_url"] == f"/api/v1/domains/{domain['id']}/oauth"
    await asyncio.sleep(1.5)  # the scheduler's next round: still nothing sent, nothing failed
    assert await statuses(pipeline, campaign_id) == ["planned", "planned"]
    assert smtp_sink.received == []

    # Resuming it without connecting again changes nothing for long: its first send pauses it again.
    resumed = await pipeline.api.http.post(f"/domains/{domain['id']}/resume")
    assert resumed.status_code == 200, resumed.text
    await pipeline.until(paused, 30)
    assert (await pipeline.api.get(f"/domains/{domain['id']}"))["paused_cause"] == "needs_reauth"

    async def held() -> bool:  # each sender that took one gives it back once it finds the domain paused
        return await statuses(pipeline, campaign_id) == ["planned", "planned"]

    await pipeline.until(held, 30)
    assert smtp_sink.received == []

    # Connecting again resumes the domain, and its messages go.
    assert (await connect(pipeline.api, domain["id"])).status_code == 200
    assert (await pipeline.api.get(f"/domains/{domain['id']}"))["state"] == "active"

    async def sent() -> bool:
        return await statuses(pipeline, campaign_id) == ["sent", "sent"]

    await pipeline.until(sent, 30)


async def test_two_processes_needing_a_fresh_token_at_once_refresh_it_once(
    api: ApiClient, oauth_server: OAuthServer, settings: Settings
) -> None:
    domain = await a_domain(api, free_port())
    oauth_server.access_lifetime = 301  # due for refresh a second after it is issued
    try:
        assert (await connect(api, domain["id"])).status_code == 200
    finally:
        oauth_server.access_lifetime = 3600
    await asyncio.sleep(1.1)
    oauth_server.refresh_delay = 0.5  # a slow provider: both ask while the first refresh is under way
    refreshes = oauth_server.refreshes
    try:
        async with TokenSource(settings, utcnow) as first, TokenSource(settings, utcnow) as second:
            domain_id = uuid.UUID(domain["id"])
            one, two = await asyncio.gather(first.access(domain_id), second.access(domain_id))
    finally:
        oauth_server.refresh_delay = 0.0
    assert oauth_server.refreshes == refreshes + 1
    assert one is not None
    assert one == two
    assert first.refreshes + second.refreshes == 1


@pytest.fixture(scope="module")
def oauth_imap(tmp_path_factory: pytest.TempPathFactory, oauth_server: OAuthServer) -> Iterator[Dovecot]:
    """Dovecot checking XOAUTH2 bearer tokens against the test server's introspection endpoint."""
    introspection = f"{oauth_server.url}/introspect"
    with running_dovecot(tmp_path_factory.mktemp("dovecot"), oauth2_introspection=introspection) as server:
        yield server


@needs_dovecot
async def test_the_mailbox_reader_logs_in_with_oauthbearer_refreshing_a_refused_token_and_reads_the_reply(
    pipeline: Pipeline,
    oauth_server: OAuthServer,
    smtp_sink: OAuthSmtp,
    oauth_imap: Dovecot,
    settings: Settings,
    tmp_path: Path,
) -> None:
    domain = await a_domain(pipeline.api, smtp_sink.port)
    assert (await connect(pipeline.api, domain["id"])).status_code == 200
    campaign_id = await campaign(pipeline, domain["domain"], leads=1)

    async def sent() -> bool:
        return await statuses(pipeline, campaign_id) == ["sent"]

    await pipeline.until(sent, 30)
    [mail] = smtp_sink.received
    mailbox = domain["from_email"]
    oauth_imap.add_user(mailbox, uuid.uuid4().hex)  # its mail home; the reader never uses this password
    imap = {"host": "127.0.0.1", "port": oauth_imap.port, "security": "none", "username": mailbox}
    changed = await pipeline.api.http.patch(f"/domains/{domain['id']}", json={"imap": imap})
    assert changed.status_code == 200, changed.text  # no password: the domain's grant logs in
    assert changed.json()["data"]["imap"]["has_password"] is False
    db = await asyncpg.connect(asyncpg_dsn(settings.database_url))
    try:  # the run's other mailboxes are not this test's to read
        await db.execute(
            "UPDATE mailbox_accounts SET active = false WHERE sending_domain_id <> $1",
            uuid.UUID(domain["id"]),
        )
    finally:
        await db.close()
    oauth_server.expire_access_tokens()  # Dovecot refuses the token we hold: one forced refresh
    refreshes = oauth_server.refreshes
    tuned = with_ports(settings.model_copy(update=FAST_READER), "inbox")
    async with subprocess_service("inbox", tuned, tmp_path) as reader:
        oauth_imap.deliver(mailbox, mailbox_mail.reply(mailbox, mail.rcpt_tos[0], mail.message["Message-ID"]))

        async def replied() -> bool:
            [message] = await pipeline.messages(campaign_id)
            return message["replied_at"] is not None

        await pipeline.until(replied, 30)
    assert oauth_server.refreshes == refreshes + 1
    shown = (await pipeline.api.get(f"/domains/{domain['id']}"))["imap"]
    assert shown["state"] == "ok"
    tested = await pipeline.api.http.post(f"/domains/{domain['id']}/imap/test")
    assert tested.json()["data"]["ok"] is True, tested.text
    log = reader.log()
    assert "tracker.inbox.connect.ok" in log
    # The refusal was answered at once and the retry made in the same attempt: no failure, no back-off.
    assert "tracker.inbox.connect.failed" not in log
    assert f"user=<{mailbox}>, method=OAUTHBEARER" in (oauth_imap.base / "dovecot.log").read_text()
    assert not [token for token in oauth_server.issued if token in log]
    assert CLIENT_SECRET not in log


async def test_no_token_or_client_secret_appears_in_the_logs_of_a_whole_run_or_in_an_answer(
    oauth_server: OAuthServer, smtp_sink: OAuthSmtp, settings: Settings, tmp_path: Path
) -> None:
    """api, scheduler and sender as in production (subprocesses, JSON logs at DEBUG): connect, send while
    tokens expire and one is refused, then a revoked grant. Every token the provider handed out, and the
    client secret, are looked for in every log line and every answer."""
    ran = with_ports(settings, "api", "scheduler", "sender", "tracker")
    ran = ran.model_copy(
        update={
            "log_format": "json",
            "log_level": "DEBUG",
            "oauth_redirect_url": f"http://127.0.0.1:{ran.api_port}/api/v1/oauth/callback",
        }
    )
    answers: list[str] = []
    async with (
        subprocess_service("api", ran, tmp_path) as api_process,
        subprocess_service("scheduler", ran, tmp_path) as scheduler,
        subprocess_service("sender", ran, tmp_path) as sender,
        ApiClient(api_process.url) as api,
    ):
        await api.login()
        domain = await a_domain(api, smtp_sink.port, interval=2)
        oauth_server.access_lifetime = 301  # due for refresh a second after it is issued
        callback = await connect(api, domain["id"])
        assert callback.status_code == 200, callback.text
        answers.append(callback.text)
        lead_ids = [(await api.lead(f"{uuid.uuid4().hex[:8]}@lead.example"))["id"] for _ in range(2)]
        template = await api.template()
        campaign_id = (await api.campaign(template["id"], lead_ids, [domain["domain"]]))["id"]
        messages = f"/campaigns/messages?campaign_id={campaign_id}"

        async def all_sent() -> bool:
            reply = await api.http.get(messages)
            answers.append(reply.text)
            return [m["status"] for m in reply.json()["data"]["items"]] == ["sent", "sent"]

        await until(all_sent, 30)
        oauth_server.revoke_all()
        oauth_server.expire_access_tokens()
        second = (await api.campaign(template["id"], lead_ids[:1], [domain["domain"]]))["id"]

        async def needs_reauth() -> bool:
            reply = await api.http.get(f"/domains/{domain['id']}")
            answers.append(reply.text)
            return bool(reply.json()["data"]["paused_cause"] == "needs_reauth")

        await until(needs_reauth, 30)
        answers.append((await api.http.get(f"/campaigns/messages?campaign_id={second}")).text)
        answers.append((await api.http.delete(f"/domains/{domain['id']}/oauth")).text)
        logs = {process.name: process.log() for process in (api_process, scheduler, sender)}
    assert oauth_server.refreshes >= 1
    assert "oauth.grant.needs_reauth" in logs["sender"]
    assert "oauth.refresh.done" in logs["sender"]
    assert domain["domain"] in logs["sender"]  # the logs do speak of this domain's logins, without secrets
    secrets = [*oauth_server.issued, CLIENT_SECRET]
    for name, text in [*logs.items(), *((f"answer {n}", a) for n, a in enumerate(answers))]:
        assert not [secret for secret in secrets if secret in text], name
