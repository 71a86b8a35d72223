"""The tracker's mailbox reader (`python -m services.tracker inbox`) against Debian's Dovecot, with the whole
stack: mail lands in the sending mailbox (LMTP or the Maildir), the reader finds it, and the lead, the
messages and the KPIs change as they should; each mail exactly once, whatever happens to the reader or the
server."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from shared.db import asyncpg_dsn, create_engine, session_factory
from shared.imap import FAILING_AFTER
from shared.settings import Settings
from tests.support import hostile_mail, mailbox_mail
from tests.support.api import ALWAYS_OPEN, ApiClient
from tests.support.dovecot import Dovecot, installed, running_dovecot
from tests.support.pipeline import Pipeline
from tests.support.samples import postfix_dsn
from tests.support.stack import ServiceProcess, subprocess_service, with_ports
from tests.support.tls import TlsFiles, self_signed

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not installed(), reason="dovecot is not installed (make test installs it)"),
]

PASSWORD = "mailbox-secret"
FAST = {
    "inbox_lease_seconds": 2.0,
    "inbox_poll_seconds": 1.0,
    "inbox_idle_seconds": 20.0,
    "inbox_timeout_seconds": 5.0,
    "inbox_backoff_seconds": [0.2, 0.5, 1.0],
    "log_format": "json",
}


@pytest.fixture(scope="module")
def imap_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    with running_dovecot(tmp_path_factory.mktemp("dovecot")) as server:
        yield server


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(asyncpg_dsn(settings.database_url))
    yield connection
    await connection.close()


@pytest.fixture(autouse=True)
async def accounts_of_this_test_only(db: asyncpg.Connection) -> None:
    """The database is the run's: the mailboxes of earlier tests are switched off, so readers read ours."""
    await db.execute("UPDATE mailbox_accounts SET active = false")


@dataclass
class Sent:
    """A campaign sent from a domain whose mailbox is on the Dovecot, and its mails as the leads got them."""

    campaign_id: str
    domain: str
    domain_id: str
    mailbox: str  # the sending address, the IMAP user
    account_id: uuid.UUID
    leads: list[str]  # addresses
    mails: list[Any]  # as the sink took them, in lead order


async def sent_campaign(
    pipeline: Pipeline, imap_server: Dovecot, settings: Settings, leads: int = 1, **account: Any
) -> Sent:
    campaign, lead_ids = await pipeline.campaign(
        leads=leads,
        followup={"enabled": True, "days": 2},
        schedule={"start_mode": "now", "window": ALWAYS_OPEN},
    )

    async def sent() -> bool:
        messages = await pipeline.messages(campaign["id"])
        return sum(m["status"] == "sent" for m in messages) == leads

    await pipeline.until(sent, seconds=30)
    emails = [(await pipeline.api.get(f"/leads/{lead}"))["email"] for lead in lead_ids]
    mails = [next(m for m in pipeline.sink.received if m.rcpt_tos == [email]) for email in emails]
    domain = campaign["domains"][0]
    domain_id, mailbox, account_id = await add_account(pipeline, imap_server, settings, domain, **account)
    return Sent(campaign["id"], domain, domain_id, mailbox, account_id, emails, mails)


async def add_account(
    pipeline: Pipeline, imap_server: Dovecot, settings: Settings, domain: str, **account: Any
) -> tuple[str, str, uuid.UUID]:
    """The domain's sending address as a Dovecot user, and as the domain's mailbox through the api: the
    domain's id, the address and the account's id."""
    mailbox = f"sales@{domain}"
    imap_server.add_user(mailbox, PASSWORD)
    [domain_row] = (await pipeline.api.get(f"/domains?search={domain}"))["items"]
    changed = await pipeline.api.http.patch(
        f"/domains/{domain_row['id']}", json={"imap": imap_account(imap_server, mailbox, **account)}
    )
    assert changed.status_code == 200, changed.text
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            account_id = await session.scalar(
                text("SELECT id FROM mailbox_accounts WHERE sending_domain_id = :d"), {"d": domain_row["id"]}
            )
    finally:
        await engine.dispose()
    return domain_row["id"], mailbox, account_id


def imap_account(imap_server: Dovecot, mailbox: str, **changes: Any) -> dict[str, Any]:
    """The `imap` object of a domain whose mailbox is `mailbox` on this Dovecot, as the api takes it."""
    imap = {"host": "127.0.0.1", "port": imap_server.port, "security": "none", "username": mailbox}
    return {**imap, "password": PASSWORD, **changes}


def reply_to(sent: Sent) -> bytes:
    """The first lead answering the campaign's e-mail."""
    return mailbox_mail.reply(sent.mailbox, sent.leads[0], sent.mails[0].message["Message-ID"])


@contextlib.asynccontextmanager
async def reader(settings: Settings, log_dir: Path, **tuning: Any) -> AsyncIterator[ServiceProcess]:
    tuned = with_ports(settings.model_copy(update={**FAST, **tuning}), "inbox")
    async with subprocess_service("inbox", tuned, log_dir) as process:
        yield process


async def until(probe: Any, seconds: float = 20.0) -> None:
    for _ in range(int(seconds * 20)):
        if await probe():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


async def lead_status(db: asyncpg.Connection, email: str) -> str:
    return str(await db.fetchval("SELECT status FROM leads WHERE lower(email) = lower($1)", email))


async def statuses(db: asyncpg.Connection, campaign_id: str) -> list[tuple[bool, str]]:
    rows = await db.fetch(
        "SELECT is_followup, status FROM messages WHERE campaign_id = $1 ORDER BY is_followup, status",
        uuid.UUID(campaign_id),
    )
    return [(row["is_followup"], row["status"]) for row in rows]


async def counters(db: asyncpg.Connection, campaign_id: str) -> dict[str, int]:
    row = await db.fetchrow(
        "SELECT sum(replied)::int AS replied, sum(complained)::int AS complained,"
        " sum(bounced)::int AS bounced FROM campaign_kpis WHERE campaign_id = $1",
        uuid.UUID(campaign_id),
    )
    return dict(row)


async def processed(db: asyncpg.Connection, account_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT folder, uidvalidity, uid, mail_key, outcome, reason FROM mailbox_mails WHERE account_id = $1"
        " ORDER BY id",
        account_id,
    )
    return [dict(row) for row in rows]


async def followup_planned(db: asyncpg.Connection, campaign_id: str) -> bool:
    return (True, "planned") in await statuses(db, campaign_id)


async def test_a_reply_in_the_mailbox_makes_the_lead_replied_cancels_its_follow_up_and_stays_unread(
    pipeline: Pipeline, imap_server: Dovecot, settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    sent = await sent_campaign(pipeline, imap_server, settings)
    await until(lambda: followup_planned(db, sent.campaign_id))
    async with reader(settings, tmp_path) as process:
        original = sent.mails[0].message["Message-ID"]
        imap_server.deliver(sent.mailbox, mailbox_mail.reply(sent.mailbox, sent.leads[0], original))

        async def replied() -> bool:
            return await lead_status(db, sent.leads[0]) == "replied"

        await until(replied)
        assert await statuses(db, sent.campaign_id) == [(False, "sent"), (True, "cancelled")]
        assert (await counters(db, sent.campaign_id))["replied"] == 1
        assert [m["outcome"] for m in await processed(db, sent.account_id)] == ["replied"]
        # The person's mail is the user's: still unread, where it was.
        [flags] = imap_server.flags(sent.mailbox).values()
        assert "\\Seen" not in flags
        assert process.logged("tracker.inbox.mail.replied")
        # What the user sees: the mailbox's health, the reply in the KPIs and on the message.
        [domain] = (await pipeline.api.get(f"/domains?search={sent.domain}"))["items"]
        shown = domain["imap"]
        assert (shown["state"], shown["idle_supported"], shown["folders"]) == ("ok", True, ["INBOX"])
        assert shown["has_password"] is True
        assert not {"password", "password_encrypted"} & set(shown)
        kpis = (await pipeline.api.get(f"/campaigns/{sent.campaign_id}"))["kpis"]
        assert (kpis["total_replied"], kpis["reply_rate"]) == (1, 1.0)
        [first] = [m for m in await pipeline.messages(sent.campaign_id) if not m["is_followup"]]
        assert first["replied_at"] is not None
        tested = await pipeline.api.http.post(f"/domains/{domain['id']}/imap/test")
        assert tested.json()["data"] == {
            "ok": True,
            "error": None,
            "folders": ["INBOX"],
            "idle_supported": True,
        }


async def test_a_dsn_bounces_and_an_arf_report_complains_and_both_go_to_the_reports_folder(
    pipeline: Pipeline, imap_server: Dovecot, settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    sent = await sent_campaign(pipeline, imap_server, settings, leads=2, reports_folder="Reports")
    imap_server.doveadm("mailbox", "create", "-u", sent.mailbox, "Reports")
    bounced, complaining = sent.mails
    # Providers rewrite the envelope sender to the mailbox: the DSN comes to the mailbox, naming the original.
    imap_server.deliver(
        sent.mailbox, postfix_dsn(sent.mailbox, bounced.message["Message-ID"], to=sent.mailbox)
    )
    arf = mailbox_mail.arf_report(
        sent.mailbox, complaining.mail_from, complaining.message["Message-ID"], sent.leads[1]
    )
    imap_server.deliver(sent.mailbox, arf)
    async with reader(settings, tmp_path):

        async def both() -> bool:
            return [await lead_status(db, lead) for lead in sent.leads] == ["bounced", "complained"]

        await until(both)
        suppressed = await db.fetch(
            "SELECT email, reason FROM suppressions WHERE email = ANY($1)", sent.leads
        )
        assert {row["email"]: row["reason"].split(":")[0] for row in suppressed} == {
            sent.leads[0]: "hard bounce", sent.leads[1]: "complaint",
        }  # fmt: skip
        assert await statuses(db, sent.campaign_id) == [
            (False, "bounced"), (False, "sent"), (True, "cancelled"), (True, "cancelled"),
        ]  # fmt: skip
        assert await counters(db, sent.campaign_id) == {"replied": 0, "complained": 1, "bounced": 1}
        health = await db.fetchrow(  # counted towards the domain in the transaction of the run
            "SELECT hard_bounces, complaints FROM domain_health WHERE sending_domain_id = $1",
            uuid.UUID(sent.domain_id),
        )
        assert dict(health) == {"hard_bounces": 1, "complaints": 1}
        assert imap_server.uids(sent.mailbox) == []
        assert len(imap_server.uids(sent.mailbox, "Reports")) == 2


async def test_an_out_of_office_is_recorded_and_changes_nothing(
    pipeline: Pipeline, imap_server: Dovecot, settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    sent = await sent_campaign(pipeline, imap_server, settings)
    await until(lambda: followup_planned(db, sent.campaign_id))
    original = sent.mails[0].message["Message-ID"]
    imap_server.deliver(sent.mailbox, mailbox_mail.out_of_office(sent.mailbox, sent.leads[0], original))
    async with reader(settings, tmp_path):

        async def recorded() -> bool:
            return [m["outcome"] for m in await processed(db, sent.account_id)] == ["automatic_reply"]

        await until(recorded)
    assert await lead_status(db, sent.leads[0]) == "active"
    assert await statuses(db, sent.campaign_id) == [(False, "sent"), (True, "planned")]
    assert (await counters(db, sent.campaign_id))["replied"] == 0


async def replies_recorded(db: asyncpg.Connection, campaign_id: str) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM message_events WHERE campaign_id = $1 AND kind = 'replied'",
            uuid.UUID(campaign_id),
        )
    )


async def test_a_reader_killed_mid_batch_and_restarted_processes_each_mail_exactly_once(
    pipeline: Pipeline, imap_server: Dovecot, settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    sent = await sent_campaign(pipeline, imap_server, settings)
    original = sent.mails[0].message["Message-ID"]
    count = 60
    for _ in range(count):  # each a reply of its own (its own Message-ID) to the same e-mail
        imap_server.write(sent.mailbox, mailbox_mail.reply(sent.mailbox, sent.leads[0], original))
    # Runs of 5 mails, each one transaction: killed with some runs recorded and others fetched or being read.
    async with reader(settings, tmp_path, inbox_batch=5) as first:

        async def some() -> bool:
            return len(await processed(db, sent.account_id)) >= 5

        await until(some)
        first.terminate(signal.SIGKILL)
    done_before = len(await processed(db, sent.account_id))
    assert done_before < count  # it really died mid-batch
    async with reader(settings, tmp_path):  # its lease expires, the new reader takes the account over

        async def all_of_them() -> bool:
            return len(await processed(db, sent.account_id)) >= count

        await until(all_of_them, seconds=40)
        await asyncio.sleep(0.5)  # nothing more comes
    rows = await processed(db, sent.account_id)
    assert len(rows) == count
    assert len({row["uid"] for row in rows}) == count
    assert await replies_recorded(db, sent.campaign_id) == count
    assert (await counters(db, sent.campaign_id))["replied"] == 1  # one message, replied to


async def test_two_readers_share_the_accounts_and_each_mail_is_processed_once(
    pipeline: Pipeline, imap_server: Dovecot, settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    accounts = [await sent_campaign(pipeline, imap_server, settings) for _ in range(2)]
    for sent in accounts:
        for _ in range(10):
            imap_server.write(
                sent.mailbox,
                mailbox_mail.reply(sent.mailbox, sent.leads[0], sent.mails[0].message["Message-ID"]),
            )
    async with reader(settings, tmp_path) as one, reader(settings, tmp_path) as other:

        async def all_of_them() -> bool:
            return [len(await processed(db, sent.account_id)) for sent in accounts] == [10, 10]

        await until(all_of_them, seconds=40)

        async def shared_out() -> bool:  # the first one up took both, then gave one back to the second
            return bool(
                one.logged("tracker.inbox.lease.claimed") and other.logged("tracker.inbox.lease.claimed")
            )

        await until(shared_out, seconds=10)
        for sent in accounts:
            assert len(await processed(db, sent.account_id)) == 10
            assert await replies_recorded(db, sent.campaign_id) == 10


async def test_mailboxes_with_more_mail_than_the_reader_processes_take_wait_their_turn_and_never_fail(
    pipeline: Pipeline, imap_server: Dovecot, settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    accounts = []
    for _ in range(6):
        domain = f"busy-{uuid.uuid4().hex[:8]}.example"
        await pipeline.api.domain(domain, pipeline.sink.port)
        _, mailbox, account_id = await add_account(pipeline, imap_server, settings, domain)
        imap_server.write(mailbox, mailbox_mail.reply(mailbox, "someone@elsewhere.example", None))
        accounts.append(account_id)
    # One reader process and no queue before it: six mailboxes with mail at once are five too many.
    async with reader(settings, tmp_path, inbound_readers=1, inbound_backlog=0) as process:

        async def all_read() -> bool:
            return [len(await processed(db, account)) for account in accounts] == [1] * len(accounts)

        await until(all_read)
        assert not process.logged("tracker.inbox.connect.failed")
    failures = await db.fetch("SELECT failures FROM mailbox_accounts WHERE id = ANY($1)", accounts)
    assert [row["failures"] for row in failures] == [0] * len(accounts)


async def test_a_changed_uidvalidity_reads_the_folder_again_without_counting_twice(
    pipeline: Pipeline, imap_server: Dovecot, settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    sent = await sent_campaign(pipeline, imap_server, settings)
    original = sent.mails[0].message["Message-ID"]
    for _ in range(3):
        imap_server.deliver(sent.mailbox, mailbox_mail.reply(sent.mailbox, sent.leads[0], original))
    async with reader(settings, tmp_path):
        await until(lambda: _processed_count(db, sent.account_id, 3))
    imap_server.set_uidvalidity(sent.mailbox, "INBOX", 4242)
    imap_server.deliver(sent.mailbox, mailbox_mail.reply(sent.mailbox, sent.leads[0], original))
    async with reader(settings, tmp_path) as again:
        await until(lambda: _processed_count(db, sent.account_id, 4))
        await until(lambda: _checkpoint_is(db, sent.account_id, 4242, 4))
        assert again.logged("tracker.inbox.uidvalidity.changed")
    assert await replies_recorded(db, sent.campaign_id) == 4
    assert [row["uidvalidity"] == 4242 for row in await processed(db, sent.account_id)] == [False] * 3 + [
        True
    ]


async def _processed_count(db: asyncpg.Connection, account_id: uuid.UUID, count: int) -> bool:
    return len(await processed(db, account_id)) >= count


async def _checkpoint_is(
    db: asyncpg.Connection, account_id: uuid.UUID, uidvalidity: int, last_uid: int
) -> bool:
    row = await db.fetchrow(
        "SELECT uidvalidity, last_uid FROM mailbox_checkpoints WHERE account_id = $1", account_id
    )
    return row is not None and (row["uidvalidity"], row["last_uid"]) == (uidvalidity, last_uid)


async def test_a_connection_dropped_during_idle_is_reopened_and_the_next_mail_still_counts(
    pipeline: Pipeline, imap_server: Dovecot, settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    sent = await sent_campaign(pipeline, imap_server, settings)
    async with reader(settings, tmp_path) as process:

        def logged(event: str) -> list[dict[str, Any]]:
            return [r for r in process.logged(event) if r["account_id"] == str(sent.account_id)]

        async def idling() -> bool:
            return bool(logged("tracker.inbox.connect.ok"))

        await until(idling)
        await asyncio.sleep(0.5)  # in IDLE by now
        imap_server.kick(sent.mailbox)

        async def reconnected() -> bool:
            return len(logged("tracker.inbox.connect.ok")) >= 2

        await until(reconnected)
        assert logged(
            "tracker.inbox.connect.failed"
        )  # a failure like any other: backed off, then reconnected
        original = sent.mails[0].message["Message-ID"]
        imap_server.deliver(sent.mailbox, mailbox_mail.reply(sent.mailbox, sent.leads[0], original))

        async def replied() -> bool:
            return await lead_status(db, sent.leads[0]) == "replied"

        await until(replied)


async def test_bad_mail_is_skipped_with_its_reason_and_never_blocks_the_mailbox(
    pipeline: Pipeline, imap_server: Dovecot, settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    sent = await sent_campaign(pipeline, imap_server, settings)
    original = sent.mails[0].message["Message-ID"]
    genuine = mailbox_mail.reply(sent.mailbox, sent.leads[0], original)
    bad = [
        hostile_mail.garbage(200_000),
        hostile_mail.many_parts(genuine, 10_000),
        hostile_mail.attachment(genuine, 20 * 1024 * 1024),
        hostile_mail.broken_encodings(genuine),
    ]
    for raw in bad:
        imap_server.write(sent.mailbox, raw)
    imap_server.write(sent.mailbox, mailbox_mail.reply(sent.mailbox, sent.leads[0], original))
    async with reader(settings, tmp_path) as process:
        await until(lambda: _processed_count(db, sent.account_id, len(bad) + 1), seconds=40)
        rows = await processed(db, sent.account_id)
        outcomes = [row["outcome"] for row in rows]
        assert outcomes.count("skipped") >= 3, (
            rows
        )  # garbage, 10,000 parts, 20 MB (broken encodings may read)
        assert outcomes[-1] == "replied"
        assert all(row["reason"] for row in rows if row["outcome"] == "skipped")
        assert process.logged("tracker.inbox.mail.skipped")
        await until(lambda: _checkpoint_is(db, sent.account_id, rows[0]["uidvalidity"], len(bad) + 1))
    assert await lead_status(db, sent.leads[0]) == "replied"


@contextlib.asynccontextmanager
async def refusing(
    db: asyncpg.Connection, table: str, when: str
) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """While inside, or until the function it gives is called, PostgreSQL refuses a row of `table` that
    matches `when` (on NEW): a failure of the database's own, not a transient one."""
    name = f"refuse_{uuid.uuid4().hex[:8]}"
    await db.execute(
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS"
        f" $$ BEGIN IF {when} THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$;"
        f" CREATE TRIGGER {name} BEFORE INSERT OR UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION {name}()"
    )

    async def allow() -> None:
        await db.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}; DROP FUNCTION IF EXISTS {name}()")

    try:
        yield allow
    finally:
        await allow()


async def test_a_mail_whose_recording_fails_is_skipped_alone_and_the_run_around_it_counts(
    pipeline: Pipeline, imap_server: Dovecot, settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    sent = await sent_campaign(pipeline, imap_server, settings)
    original = sent.mails[0].message["Message-ID"]
    poisoned = mailbox_mail.reply(sent.mailbox, sent.leads[0], original).replace(
        b"Message-ID: <", b"Message-ID: <poisoned-"
    )
    replies = [mailbox_mail.reply(sent.mailbox, sent.leads[0], original) for _ in range(4)]
    imap_server.write_all(sent.mailbox, [*replies[:2], poisoned, *replies[2:]])
    async with (
        refusing(db, "mailbox_mails", "NEW.mail_key LIKE '<poisoned-%'"),
        reader(settings, tmp_path) as process,
    ):
        await until(lambda: _checkpoint_is_past(db, sent.account_id, 5))
        assert process.logged("tracker.inbox.run.failed")  # the run's one transaction, then one per mail
    rows = await processed(db, sent.account_id)
    assert [row["outcome"] for row in rows] == ["replied", "replied", "skipped", "replied", "replied"]
    assert rows[2]["reason"].startswith("recording it failed")
    assert await replies_recorded(db, sent.campaign_id) == 4


async def _checkpoint_is_past(db: asyncpg.Connection, account_id: uuid.UUID, last_uid: int) -> bool:
    found = await db.fetchval("SELECT last_uid FROM mailbox_checkpoints WHERE account_id = $1", account_id)
    return found is not None and found >= last_uid


async def test_a_database_error_backs_the_account_off_and_its_reading_goes_on_once_it_is_gone(
    pipeline: Pipeline, imap_server: Dovecot, settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    sent = await sent_campaign(pipeline, imap_server, settings)
    imap_server.write(sent.mailbox, reply_to(sent))
    # Neither its success nor its failure can be recorded on the account: it used to end its reading.
    async with (
        refusing(db, "mailbox_accounts", f"NEW.id = '{sent.account_id}'") as allow,
        reader(settings, tmp_path) as process,
    ):

        async def failed_twice() -> bool:
            return len(account_events(process, "tracker.inbox.failure.unrecorded", sent)) >= 2

        async def replied() -> bool:
            return await lead_status(db, sent.leads[0]) == "replied"

        await until(failed_twice)
        assert not await replied()
        await allow()
        await until(replied)


# The mailbox's health: servers without IDLE, wrong passwords, TLS, and what the api shows of it.

WRONG_PASSWORD = "not-the-mailbox-secret"


@pytest.fixture(scope="module")
def polled_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    with running_dovecot(tmp_path_factory.mktemp("dovecot-without-idle"), idle=False) as server:
        yield server


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, certificate: TlsFiles) -> Iterator[Dovecot]:
    with running_dovecot(tmp_path_factory.mktemp("dovecot-tls"), tls=certificate) as server:
        yield server


async def mailbox_shown(pipeline: Pipeline, sent: Sent) -> dict[str, Any]:
    """The domain's `imap` object, as the user sees it."""
    return dict((await pipeline.api.get(f"/domains/{sent.domain_id}"))["imap"])


def account_events(process: ServiceProcess, event: str, sent: Sent) -> list[dict[str, Any]]:
    return [r for r in process.logged(event) if r["account_id"] == str(sent.account_id)]


async def test_a_server_without_idle_is_polled_and_the_api_says_idle_is_not_supported(
    pipeline: Pipeline, polled_server: Dovecot, settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    sent = await sent_campaign(pipeline, polled_server, settings)
    async with reader(settings, tmp_path, inbox_poll_seconds=0.5) as process:

        async def caught_up() -> bool:  # the folder was read once: only a later poll can find new mail
            return await db.fetchrow(
                "SELECT 1 FROM mailbox_checkpoints WHERE account_id = $1", sent.account_id
            ) is not None  # fmt: skip

        await until(caught_up)
        polled_server.deliver(sent.mailbox, reply_to(sent))

        async def replied() -> bool:
            return await lead_status(db, sent.leads[0]) == "replied"

        await until(replied, seconds=10)
        # Found by polling in the session it had, not by connecting again.
        assert [r["idle"] for r in account_events(process, "tracker.inbox.connect.ok", sent)] == [False]
    shown = await mailbox_shown(pipeline, sent)
    assert (shown["state"], shown["idle_supported"]) == ("ok", False)
    tested = await pipeline.api.http.post(f"/domains/{sent.domain_id}/imap/test")
    assert (tested.json()["data"]["ok"], tested.json()["data"]["idle_supported"]) == (True, False)


async def test_a_wrong_password_backs_off_shows_failing_without_the_secret_and_recovers_once_fixed(
    pipeline: Pipeline, imap_server: Dovecot, settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    good = await sent_campaign(pipeline, imap_server, settings)
    bad = await sent_campaign(pipeline, imap_server, settings, password=WRONG_PASSWORD)
    backoff = [0.05, 0.1, 0.2]
    async with reader(settings, tmp_path, inbox_backoff_seconds=backoff) as process:

        async def failing() -> bool:
            return bool((await mailbox_shown(pipeline, bad))["state"] == "failing")

        await until(failing)
        shown = await mailbox_shown(pipeline, bad)
        assert shown["failures"] >= FAILING_AFTER
        assert shown["last_error"] == "the IMAP server refused the user name or password"
        assert shown["last_success_at"] is None
        failures = account_events(process, "tracker.inbox.connect.failed", bad)[:FAILING_AFTER]
        assert [r["failures"] for r in failures] == list(range(1, FAILING_AFTER + 1))
        assert [r["retry_in"] for r in failures] == [0.05, 0.1, 0.2, 0.2, 0.2]  # its last step repeats
        assert [r["failing"] for r in failures] == [False] * (FAILING_AFTER - 1) + [True]
        # Meanwhile the other mailbox on the same reader is read as ever.
        imap_server.deliver(good.mailbox, reply_to(good))

        async def good_replied() -> bool:
            return await lead_status(db, good.leads[0]) == "replied"

        await until(good_replied)
        assert (await mailbox_shown(pipeline, good))["state"] == "ok"
        assert (await mailbox_shown(pipeline, bad))["state"] == "failing"
        # The user puts the right password in: the failures are forgotten and the mailbox is read again.
        fixed = await pipeline.api.http.patch(
            f"/domains/{bad.domain_id}", json={"imap": imap_account(imap_server, bad.mailbox)}
        )
        assert fixed.status_code == 200, fixed.text
        imap_server.deliver(bad.mailbox, reply_to(bad))

        async def recovered() -> bool:
            shown = await mailbox_shown(pipeline, bad)
            read = await lead_status(db, bad.leads[0]) == "replied"
            return read and (shown["state"], shown["failures"]) == ("ok", 0)

        await until(recovered)
        shown = await mailbox_shown(pipeline, bad)
        # An attempt under way with the old password may have failed after the change: its error stays
        # shown as history, older than the success.
        assert shown["last_error"] is None or shown["last_error_at"] < shown["last_success_at"]
        for secret in (WRONG_PASSWORD, PASSWORD):
            assert secret not in process.log()
            assert secret not in (await pipeline.api.http.get(f"/domains/{bad.domain_id}")).text


async def test_replies_are_read_over_tls_and_starttls_from_a_server_the_reader_trusts(
    pipeline: Pipeline,
    tls_server: Dovecot,
    certificate: TlsFiles,
    settings: Settings,
    db: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    over_tls = await sent_campaign(pipeline, tls_server, settings, security="tls", port=tls_server.tls_port)
    over_starttls = await sent_campaign(pipeline, tls_server, settings, security="starttls")
    for sent in (over_tls, over_starttls):
        tls_server.deliver(sent.mailbox, reply_to(sent))
    async with reader(settings, tmp_path, imap_ca_file=str(certificate.certificate)):

        async def both_replied() -> bool:
            return [await lead_status(db, sent.leads[0]) for sent in (over_tls, over_starttls)] == [
                "replied"
            ] * 2

        await until(both_replied)
    for sent in (over_tls, over_starttls):
        assert (await mailbox_shown(pipeline, sent))["state"] == "ok"
    # Dovecot says how each logged in: over TLS, both (a plain login on localhost says "secured").
    logins = [line for line in (tls_server.base / "dovecot.log").read_text().splitlines() if "Login:" in line]
    for sent in (over_tls, over_starttls):
        mine = [line for line in logins if f"user=<{sent.mailbox}>" in line]
        assert mine
        assert all(", TLS" in line for line in mine), mine


async def test_a_certificate_the_reader_does_not_trust_is_a_clear_error_and_no_crash(
    pipeline: Pipeline, tls_server: Dovecot, settings: Settings, tmp_path: Path
) -> None:
    sent = await sent_campaign(pipeline, tls_server, settings, security="tls", port=tls_server.tls_port)
    untrusted = "the IMAP server's TLS certificate is not trusted (self-signed certificate)"
    async with reader(settings, tmp_path, inbox_backoff_seconds=[0.1]) as process:  # the system's CAs only

        async def refused() -> bool:
            return bool((await mailbox_shown(pipeline, sent))["failures"] >= 2)

        await until(refused)
        assert (await mailbox_shown(pipeline, sent))["last_error"] == untrusted
        assert process.process.poll() is None  # still running: the next attempt is backed off
        assert not process.logged("tracker.inbox.read.failed")  # an expected failure, not a traceback
    tested = await pipeline.api.http.post(f"/domains/{sent.domain_id}/imap/test")
    assert tested.json()["data"] == {"ok": False, "error": untrusted, "folders": [], "idle_supported": None}


async def test_the_connection_test_with_a_wrong_password_says_why_and_shows_no_secret(
    api: ApiClient, imap_server: Dovecot
) -> None:
    domain = f"check-{uuid.uuid4().hex[:8]}.example"
    mailbox = f"sales@{domain}"
    imap_server.add_user(mailbox, PASSWORD)
    imap = imap_account(imap_server, mailbox, password=WRONG_PASSWORD)
    created = await api.domain(domain, smtp_port=25, imap=imap)  # its SMTP server is never contacted
    tested = await api.http.post(f"/domains/{created['id']}/imap/test")
    assert tested.status_code == 200, tested.text
    assert tested.json()["data"] == {
        "ok": False,
        "error": "the IMAP server refused the user name or password",
        "folders": [],
        "idle_supported": None,
    }
    assert WRONG_PASSWORD not in tested.text
    assert PASSWORD not in tested.text
