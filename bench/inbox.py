"""The tracker's mailbox reader (issue 16) against Debian's Dovecot (tests/support/dovecot.py), in three
parts, each in a fresh database and broker prefix, each printing one JSON line:

- `replies N`: the whole stack (api, scheduler, sender in their own processes, an aiosmtpd sink) sends a
  campaign with follow-ups from a domain whose mailbox is on the Dovecot; the reader holds that mailbox with
  IDLE (production settings). N human replies are delivered over LMTP, one at a time with a small gap; for
  each, the time from the start of its LMTP delivery until GET /leads/{id} shows it `replied` and the
  campaign's messages show its follow-up `cancelled`. Raw, in the same run: a bare aioimaplib session IDLE
  in the same mailbox, the time from the same delivery start until it hears the mail's EXISTS.
- `backlog N`: a campaign of 1,000 leads is sent as above; then N mails (mostly unrelated: newsletters,
  notes, some with an attachment; and replies, out-of-office answers, DSNs and ARF reports to the campaign)
  are written into one mailbox's Maildir and indexed by Dovecot before anything reads them. Raw first: a bare
  aioimaplib session SELECTs the folder and FETCHes every mail's BODY.PEEK[], 100 UIDs per FETCH (the
  reader's batch). Then ours: from starting the reader process until every mail has its processed-mail row and
  the checkpoint is at the last UID.
- `memory N`: N Dovecot users, each the mailbox account of its own sending domain with one mail in it; one
  reader process reads them all; once every account is connected, its mail processed and the reader idle,
  VmRSS of the reader process and, separately, of its child mail-reader processes.

Run as `python -m bench.inbox [replies|backlog|memory] [N]` (all three without arguments); needs Dovecot
(`make mail-packages`) and, as Dovecot refuses mail access as root otherwise, runs the mail as `nobody`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aioimaplib

from bench.common import ALWAYS_OPEN, bench_database, percentile, raw_connection, seed_campaign
from bench.sending import smtp_sink
from shared import crypto
from shared.db import create_engine, session_factory
from shared.db.models import MailboxAccount
from shared.settings import Settings
from tests.support import hostile_mail, mailbox_mail
from tests.support.api import ApiClient
from tests.support.dovecot import Dovecot, running_dovecot
from tests.support.samples import postfix_dsn
from tests.support.smtp import free_port
from tests.support.stack import ServiceProcess, subprocess_service, with_ports

PASSWORD = "bench-mailbox-secret"  # noqa: S105 (a throwaway Dovecot user's)
GAP_SECONDS = 0.2  # between one reply being visible and the next delivery
REPLY_TIMEOUT = 30.0  # a reply not visible by then counts as this late (and as missed)
BACKLOG_LEADS = 1000
BACKLOG_CAP_S = 600.0  # 10× the target: a slower reader is reported from its rate
# Production's Dovecot would not have 200 sessions on 100 processes either (default_process_limit).
MANY_SESSIONS = "default_process_limit = 1000\ndefault_client_limit = 4000\n"
EXISTS = re.compile(rb"^(\d+) EXISTS")


@contextlib.contextmanager
def dovecot(extra_config: str = "") -> Iterator[Dovecot]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-dovecot-") as base,
        running_dovecot(Path(base), extra_config=extra_config) as server,
    ):
        yield server


async def until(probe: Callable[[], Awaitable[bool]], seconds: float, what: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + seconds
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {seconds:g} s")
        await asyncio.sleep(every)


# The whole stack and a campaign it sent


@dataclass
class Sent:
    campaign_id: str
    domain: str
    mailbox: str  # the domain's sending address, its Dovecot user
    account_id: uuid.UUID
    leads: list[tuple[str, str, str]]  # (lead id, address, Message-ID of our mail to it), in audience order


@contextlib.asynccontextmanager
async def stack(settings: Settings, logs: Path) -> AsyncIterator[tuple[ApiClient, int]]:
    """api, scheduler and a sender in their own processes, sending to an aiosmtpd sink; a logged-in client."""
    sink_port = free_port()
    with smtp_sink(sink_port):
        async with contextlib.AsyncExitStack() as services:
            api = await services.enter_async_context(
                subprocess_service("api", with_ports(settings, "api"), logs)
            )
            for name in ("scheduler", "sender"):
                await services.enter_async_context(subprocess_service(name, with_ports(settings, name), logs))
            async with ApiClient(api.url) as client:
                await client.login()
                yield client, sink_port


async def send_campaign(
    api: ApiClient, settings: Settings, server: Dovecot, sink_port: int, leads: int
) -> Sent:
    """A domain at interval 0 whose mailbox is on `server`, `leads` leads (one CSV import) and a campaign with
    follow-ups in 2 days started now; returns once every first mail is sent and its follow-up planned."""
    domain = f"inbox-{uuid.uuid4().hex[:8]}.example"
    await api.domain(domain, sink_port, interval=0)
    tag = uuid.uuid4().hex[:8]
    csv = "email,first_name,tags\n" + "".join(
        f"jan{i}.{tag}@lead{i % 97}.example,Jan,{tag}\n" for i in range(leads)
    )
    imported = await api.http.post("/leads/import", files={"file": ("leads.csv", csv.encode(), "text/csv")})
    assert imported.json()["data"]["created"] == leads, imported.text
    template = await api.template()
    campaign = await api.create(
        "/campaigns",
        {
            "name": "inbox bench", "template_id": template["id"], "audience": {"mode": "tags", "tags": [tag]},
            "schedule": {"start_mode": "now", "window": ALWAYS_OPEN}, "domains": [domain],
            "followup": {"enabled": True, "days": 2},
        },
    )  # fmt: skip
    async with raw_connection(settings) as db:

        async def all_sent() -> bool:
            settled, sent, planned = await db.fetchrow(
                "SELECT count(*) FILTER (WHERE NOT is_followup AND status IN ('sent', 'failed')),"
                " count(*) FILTER (WHERE NOT is_followup AND status = 'sent'),"
                " count(*) FILTER (WHERE is_followup AND status = 'planned')"
                " FROM messages WHERE campaign_id = $1",
                uuid.UUID(campaign["id"]),
            )
            return settled == leads and planned == sent

        # Setting the scene, not measured: on a shared machine the sending alone took over 120 s, and a few
        # of 1,000 mails failed under that load: the leads whose mail was sent are the ones answered.
        await until(all_sent, 600, f"{leads} mails sent or failed, follow-ups planned", every=0.25)
        rows = await db.fetch(
            "SELECT l.id, l.email, m.smtp_message_id FROM messages m JOIN campaign_leads c"
            " ON c.campaign_id = m.campaign_id AND c.lead_id = m.lead_id JOIN leads l ON l.id = m.lead_id"
            " WHERE m.campaign_id = $1 AND NOT m.is_followup AND m.status = 'sent' ORDER BY c.position",
            uuid.UUID(campaign["id"]),
        )
        domain_id, workspace_id = await db.fetchrow(
            "SELECT id, workspace_id FROM sending_domains WHERE domain = $1", domain
        )
    mailbox = f"sales@{domain}"
    [account_id] = await add_accounts(settings, server, [(workspace_id, domain_id, mailbox)])
    return Sent(campaign["id"], domain, mailbox, account_id,
                [(str(r["id"]), r["email"], r["smtp_message_id"]) for r in rows])  # fmt: skip


async def add_accounts(
    settings: Settings, server: Dovecot, mailboxes: list[tuple[uuid.UUID, uuid.UUID, str]]
) -> list[uuid.UUID]:
    """For each (workspace, sending domain, address): a Dovecot user and the domain's mailbox account."""
    engine = create_engine(settings.database_url, pool_size=1)
    password = crypto.encrypt(settings.encryption_key, PASSWORD)
    try:
        async with session_factory(engine)() as session, session.begin():
            ids = []
            for workspace_id, domain_id, address in mailboxes:
                server.add_user(address, PASSWORD)
                account = MailboxAccount(
                    id=uuid.uuid4(), workspace_id=workspace_id, sending_domain_id=domain_id, host="127.0.0.1",
                    port=server.port, security="none", username=address, password_encrypted=password,
                )  # fmt: skip
                session.add(account)
                ids.append(account.id)
            return ids
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def reader(settings: Settings, logs: Path) -> AsyncIterator[ServiceProcess]:
    """`python -m services.tracker inbox` with production's settings, logging JSON as docker-compose does."""
    tuned = with_ports(settings.model_copy(update={"log_format": "json"}), "inbox")
    async with subprocess_service("inbox", tuned, logs) as process:
        yield process


# 1. Reply latency with IDLE


class IdleWatch:
    """The building block: a bare aioimaplib session IDLE in the folder, noting when each EXISTS arrives
    (by the message count it announces)."""

    def __init__(self, port: int, user: str) -> None:
        self._client = aioimaplib.IMAP4(host="127.0.0.1", port=port, timeout=10)
        self._user = user
        self.heard: dict[int, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> IdleWatch:
        await self._client.wait_hello_from_server()
        assert (await self._client.login(self._user, PASSWORD)).result == "OK"
        assert (await self._client.select("INBOX")).result == "OK"
        self._idle = await self._client.idle_start(timeout=3600)
        self._task = asyncio.create_task(self._listen())
        return self

    async def _listen(self) -> None:
        while True:
            for line in await self._client.wait_server_push(timeout=3600):
                if isinstance(line, bytes) and (found := EXISTS.match(line)):
                    self.heard.setdefault(int(found.group(1)), time.perf_counter())

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._client.idle_done()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._idle, 5)
            await asyncio.wait_for(self._client.logout(), 5)


async def reply_latency(settings: Settings, replies: int) -> dict[str, Any]:
    with dovecot() as server, tempfile.TemporaryDirectory() as scratch:
        logs = Path(scratch)
        async with stack(settings, logs) as (api, sink_port):
            sent = await send_campaign(api, settings, server, sink_port, replies)
            async with reader(settings, logs) as process, raw_connection(settings) as db:

                async def idling() -> bool:
                    return bool(
                        await db.fetchval(
                            "SELECT count(*) FROM mailbox_checkpoints WHERE account_id = $1", sent.account_id
                        )
                    )

                await until(idling, 60, "the reader connected and read the empty mailbox")
                await asyncio.sleep(1)  # from its checkpoint to IDLE
                assert process.logged("tracker.inbox.connect.ok")[0]["idle"] is True
                async with IdleWatch(server.port, sent.mailbox) as watch:
                    ours, raw, missed = await _replies(api, server, sent, watch)
    return {
        "replies": replies,
        "missed": missed,
        "p50_s": percentile(ours, 0.5),
        "p99_s": percentile(ours, 0.99),
        "max_s": max(ours),
        "raw_p50_s": percentile(raw, 0.5),
        "raw_p99_s": percentile(raw, 0.99),
        "raw_max_s": max(raw),
    }


async def _replies(
    api: ApiClient, server: Dovecot, sent: Sent, watch: IdleWatch
) -> tuple[list[float], list[float], int]:
    ours, delivered, missed = [], [], 0
    for lead_id, address, message_id in sent.leads:
        raw_mail = mailbox_mail.reply(sent.mailbox, address, message_id)
        started = time.perf_counter()
        delivered.append(started)
        await asyncio.to_thread(server.deliver, sent.mailbox, raw_mail, address)
        while time.perf_counter() - started < REPLY_TIMEOUT:
            if await _visible(api, sent.campaign_id, lead_id):
                ours.append(time.perf_counter() - started)
                break
            await asyncio.sleep(0.01)
        else:
            ours.append(REPLY_TIMEOUT)
            missed += 1
        await asyncio.sleep(GAP_SECONDS)
    raw = [
        watch.heard.get(count, float("inf")) - delivered[count - 1] for count in range(1, len(delivered) + 1)
    ]
    return ours, raw, missed


async def _visible(api: ApiClient, campaign_id: str, lead_id: str) -> bool:
    """What a user of the api sees: the lead replied and its follow-up cancelled."""
    if (await api.get(f"/leads/{lead_id}"))["status"] != "replied":
        return False
    page = await api.get(f"/campaigns/messages?campaign_id={campaign_id}&lead_id={lead_id}")
    return [m["status"] for m in page["items"] if m["is_followup"]] == ["cancelled"]


# 2. A backlog in one mailbox


def newsletter(number: int) -> bytes:
    paragraph = "<p>This week in our shop: offers, new arrivals and a story from the team. " * 12 + "</p>"
    return (
        f"From: Shop {number % 40} <news@shop{number % 40}.example>\r\nTo: you@example.com\r\n"
        f"Subject: Weekly news #{number}\r\nMessage-ID: <{uuid.uuid4().hex}@shop{number % 40}.example>\r\n"
        "Date: Mon, 30 Nov 2026 09:00:00 +0000\r\nList-Unsubscribe: <mailto:unsubscribe@shop.example>\r\n"
        "Precedence: bulk\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="ALT"\r\n\r\n'
        "--ALT\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + "This week in our shop: offers, new arrivals and a story from the team.\r\n" * 40
        + "--ALT\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body>"
        + paragraph * 12
        + "</body></html>\r\n--ALT--\r\n"
    ).encode()


def note(number: int) -> bytes:
    """A colleague's or a customer's mail, nothing to do with a campaign."""
    return (
        f"From: Colleague {number % 25} <person{number % 25}@company.example>\r\n"
        "To: sales@company.example\r\n"
        f"Subject: About the meeting ({number})\r\nMessage-ID: <{uuid.uuid4().hex}@company.example>\r\n"
        "Date: Mon, 30 Nov 2026 11:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        + "Hi, a few notes from the meeting and what we agreed on for next week.\r\n"
        * 15
    ).encode()


def answer(kind: str, mailbox: str, address: str, message_id: str) -> bytes:
    """What comes back to `mailbox` about our mail `message_id` to `address`."""
    if kind == "reply":
        return mailbox_mail.reply(mailbox, address, message_id)
    if kind == "out_of_office":
        return mailbox_mail.out_of_office(mailbox, address, message_id)
    if kind == "dsn":
        return postfix_dsn(mailbox, message_id, to=mailbox)
    return mailbox_mail.arf_report(mailbox, mailbox, message_id, address)


# Of a backlog, the share of each kind of answer to the campaign (each to a lead of its own); the rest
# is unrelated.
ANSWERS = {"reply": 0.05, "out_of_office": 0.015, "dsn": 0.025, "arf": 0.005}


def backlog_mails(sent: Sent, count: int) -> tuple[list[bytes], dict[str, int]]:
    """`count` mails in a fixed shuffled order: answers to the campaign (`ANSWERS`), and unrelated mail:
    newsletters, notes, one in twenty with a 60 KB attachment."""
    leads = iter(sent.leads)
    mails, mix = [], {}
    for kind, share in ANSWERS.items():
        mix[kind] = min(int(count * share), len(sent.leads) // len(ANSWERS))
        for _, address, message_id in (next(leads) for _ in range(mix[kind])):
            mails.append(answer(kind, sent.mailbox, address, message_id))
    mix["unrelated"] = count - len(mails)
    for number in range(mix["unrelated"]):
        if number % 20 == 0:
            mails.append(hostile_mail.attachment(note(number), 60_000, seed=number))
        else:
            mails.append(newsletter(number) if number % 3 else note(number))
    random.Random(16).shuffle(mails)
    return mails, mix


async def bare_fetch(port: int, user: str, batch: int) -> tuple[float, int, int]:
    """SELECT, UID SEARCH ALL, then UID FETCH BODY.PEEK[] of `batch` UIDs at a time: seconds, mails, bytes."""
    started = time.perf_counter()
    client = aioimaplib.IMAP4(host="127.0.0.1", port=port, timeout=60)
    await client.wait_hello_from_server()
    assert (await client.login(user, PASSWORD)).result == "OK"
    assert (await client.select("INBOX")).result == "OK"
    searched = await client.uid_search("ALL", charset=None)
    uids = [int(word) for line in searched.lines[:-1] for word in bytes(line).split() if word.isdigit()]
    mails = size = 0
    for start in range(0, len(uids), batch):
        wanted = ",".join(map(str, uids[start : start + batch]))
        fetched = await client.uid("fetch", wanted, "(UID BODY.PEEK[])")
        bodies = [line for line in fetched.lines if isinstance(line, bytearray)]
        mails, size = mails + len(bodies), size + sum(map(len, bodies))
    seconds = time.perf_counter() - started
    await client.logout()
    return seconds, mails, size


async def backlog(settings: Settings, count: int) -> dict[str, Any]:
    with dovecot() as server, tempfile.TemporaryDirectory() as scratch:
        logs = Path(scratch)
        async with stack(settings, logs) as (api, sink_port):
            sent = await send_campaign(api, settings, server, sink_port, BACKLOG_LEADS)
            mails, mix = backlog_mails(sent, count)
            server.write_all(sent.mailbox, mails)
            server.doveadm("index", "-u", sent.mailbox, "INBOX")  # as a delivery agent would have left it
            raw_s, raw_mails, raw_bytes = await bare_fetch(server.port, sent.mailbox, settings.inbox_batch)
            assert raw_mails == count, f"the bare session fetched {raw_mails} of {count}"
            ours = await _read_backlog(settings, logs, sent.account_id, count)
    return {
        "mails": count, "mix": mix, "megabytes": raw_bytes / 1e6, **ours,
        "raw_s": raw_s, "raw_mails_per_s": count / raw_s,
    }  # fmt: skip


async def _read_backlog(settings: Settings, logs: Path, account_id: uuid.UUID, count: int) -> dict[str, Any]:
    """From starting the reader until every mail is processed and checkpointed; a reader still busy after
    BACKLOG_CAP_S is stopped there, and its time projected from its rate so far (`finished` false)."""
    started = time.perf_counter()
    async with reader(settings, logs), raw_connection(settings) as db:
        while True:
            last = await db.fetchval(
                "SELECT last_uid FROM mailbox_checkpoints WHERE account_id = $1", account_id
            )
            done = await db.fetchval("SELECT count(*) FROM mailbox_mails WHERE account_id = $1", account_id)
            seconds = time.perf_counter() - started
            if (last == count and done == count) or seconds > BACKLOG_CAP_S:
                break
            await asyncio.sleep(0.2)
        span = await db.fetchval(
            "SELECT extract(epoch FROM max(processed_at) - min(processed_at)) FROM mailbox_mails"
            " WHERE account_id = $1",
            account_id,
        )
        outcomes = await db.fetch(
            "SELECT outcome, count(*) FROM mailbox_mails WHERE account_id = $1 GROUP BY outcome", account_id
        )
    return {
        "finished": done == count,
        "processed": done,
        "ours_s": seconds if done == count else seconds * count / max(1, done),
        "first_to_last_mail_s": float(span or 0),
        "mails_per_s": done / seconds,
        "outcomes": {row["outcome"]: row["count"] for row in outcomes},
    }


# 3. Memory with many accounts


def kilobytes(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # the parent pid is the second field after the parenthesised command name
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


async def memory(settings: Settings, accounts: int) -> dict[str, Any]:
    workspace_id, _ = await seed_campaign(settings, 0, accounts, 60, ALWAYS_OPEN)
    async with raw_connection(settings) as db:
        domains = await db.fetch(
            "SELECT id, from_email FROM sending_domains WHERE workspace_id = $1 ORDER BY domain", workspace_id
        )
    with dovecot(MANY_SESSIONS) as server, tempfile.TemporaryDirectory() as scratch:
        await add_accounts(settings, server, [(workspace_id, d["id"], d["from_email"]) for d in domains])
        for number, domain in enumerate(domains):
            server.write_all(domain["from_email"], [note(number)])
        started = time.perf_counter()
        async with reader(settings, Path(scratch)) as process, raw_connection(settings) as db:

            async def all_read() -> bool:
                connected = await db.fetchval(
                    "SELECT count(*) FROM mailbox_accounts WHERE last_success_at IS NOT NULL AND failures = 0"
                )
                read = await db.fetchval("SELECT count(*) FROM mailbox_checkpoints WHERE last_uid = 1")
                return connected == read == accounts

            await until(all_read, 300, f"{accounts} accounts connected and read", every=0.25)
            ready_s = time.perf_counter() - started
            await asyncio.sleep(5)  # idle: every session in IDLE, nothing to do
            pid = process.process.pid
            readers = children(pid)
            figures = {
                "accounts": accounts,
                "all_read_s": ready_s,
                "rss_mb": kilobytes(pid, "VmRSS") / 1024,
                "peak_rss_mb": kilobytes(pid, "VmHWM") / 1024,
                "reader_processes": len(readers),
                "reader_rss_mb": [kilobytes(child, "VmRSS") / 1024 for child in readers],
                "connect_failures": len(failures := process.logged("tracker.inbox.connect.failed")),
                "connect_errors": sorted({failure["error"] for failure in failures}),
            }
    return figures


PARTS: dict[str, tuple[Callable[[Settings, int], Awaitable[dict[str, Any]]], int]] = {
    "replies": (reply_latency, 100),
    "backlog": (backlog, 10_000),
    "memory": (memory, 200),
}


def main() -> None:
    chosen = [sys.argv[1]] if len(sys.argv) > 1 else list(PARTS)
    for name in chosen:
        measure, default = PARTS[name]
        size = int(sys.argv[2]) if len(sys.argv) > 2 else default
        with bench_database(Settings()) as settings:
            print(json.dumps({"part": name, **asyncio.run(measure(settings, size))}), flush=True)


if __name__ == "__main__":
    main()
