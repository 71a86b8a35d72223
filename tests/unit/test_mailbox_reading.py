"""The mailbox reader's pure parts: what a returning mail is and which message it names, what the IMAP
server's answers say, the reader's backoff and sharing, and how it stops its tasks."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, date, datetime

import pytest

from services.tracker.inbound import first_named, kind_of, named_in_order, read_mail
from services.tracker.inbox import mailbox, policy
from services.tracker.inbox.processing import Budget
from services.tracker.readers import limits_of
from shared.imap import responses
from shared.settings import Settings
from tests.support import mailbox_mail
from tests.support.samples import postfix_dsn

LIMITS = limits_of(Settings())
OURS = "<3f2b6c1e8a4d4b7e9c1a0d5e6f7a8b9c.0@out.example>"
MESSAGE = uuid.UUID("3f2b6c1e-8a4d-4b7e-9c1a-0d5e6f7a8b9c")
VERP = f"bounce+{MESSAGE.hex}@out.example"


def read(raw: bytes):  # type: ignore[no-untyped-def]
    return read_mail(raw, None, LIMITS)


def test_an_arf_report_is_a_complaint_naming_our_message_by_verp_and_quoted_message_id() -> None:
    reading = read(mailbox_mail.arf_report("sales@out.example", VERP, OURS, "jan@lead.example"))
    assert kind_of(reading) == "complaint"
    assert reading.feedback_type == "abuse"
    assert named_in_order(reading) == [MESSAGE, OURS]


def test_a_dsn_is_a_bounce_and_a_report_that_is_none_is_unrelated() -> None:
    assert kind_of(read(postfix_dsn(VERP, OURS))) == "hard_bounce"
    assert kind_of(read(postfix_dsn(VERP, OURS, status="4.2.2", action="delayed"))) == "soft_bounce"
    success = postfix_dsn(VERP, OURS, status="2.0.0", action="delivered")
    assert kind_of(read(success)) == "unrelated"


@pytest.mark.parametrize(
    "subject", ["Automatic reply: Hello", "Out of Office: Hello", "Abwesenheitsnotiz: Hallo", "Afwezig"]
)
def test_vacation_subjects_are_automatic_replies_without_any_header(subject: str) -> None:
    raw = mailbox_mail.reply("sales@out.example", "jan@lead.example", OURS, subject=subject)
    assert kind_of(read(raw)) == "auto_reply"


def test_a_person_answering_is_a_reply_and_the_answered_message_id_comes_first() -> None:
    raw = mailbox_mail.reply("sales@out.example", "Jan@Lead.example", OURS)
    reading = read(raw)
    assert kind_of(reading) == "reply"
    assert reading.sender_address == "jan@lead.example"
    assert reading.mail_id is not None
    assert named_in_order(reading)[0] == OURS


def test_the_first_name_found_wins_whatever_the_order_the_rows_came_in() -> None:
    names: list[uuid.UUID | str] = ["<thread@x>", MESSAGE, OURS]
    assert first_named(names, {OURS: "quoted", MESSAGE: "verp"}) == "verp"
    assert first_named(names, {OURS: "quoted", "<thread@x>": "answered"}) == "answered"
    assert first_named(names, {}) is None


def test_imap_answers() -> None:
    selected = [b"FLAGS (\\Seen)", b"OK [UIDVALIDITY 1796050209] UIDs valid", b"OK [UIDNEXT 7] Predicted"]
    assert responses.folder_state(selected) == responses.FolderState(1796050209, 7)
    with pytest.raises(responses.Unexpected):
        responses.folder_state([b"OK done"])
    assert responses.searched_uids([b"9 3 5", b"Search completed"], after=3) == [5, 9]
    assert responses.searched_uids([b"4", b"Search completed"], after=4) == []  # n:* names the highest
    assert responses.fetched_sizes([b"1 FETCH (UID 11 RFC822.SIZE 319)", b"Fetch completed"]) == {11: 319}
    bodies = [
        b"1 FETCH (UID 11 BODY[] {5}", bytearray(b"hello"), b")",
        b"2 FETCH (FLAGS (\\Seen))",  # another session's change, told in passing
        b"3 FETCH (UID 13 BODY[] {2}", bytearray(b"hi"), b")",
        b"Fetch completed",
    ]  # fmt: skip
    assert responses.fetched_bodies(bodies) == {11: b"hello", 13: b"hi"}
    assert responses.fetched_bodies([b"Fetch completed"]) == {}
    listed = [
        b'(\\HasNoChildren) "." INBOX',
        b'(\\Noselect) "." Root',
        b'(\\HasNoChildren) "." "Junk E-mail"',
    ]
    assert responses.folder_names([*listed, b"List completed"]) == ["INBOX", "Junk E-mail"]


def test_backoff_grows_then_repeats_its_last_step() -> None:
    schedule = [2, 10, 30]
    assert [policy.backoff(n, schedule) for n in range(5)] == [0.0, 2.0, 10.0, 30.0, 30.0]


def test_readers_share_the_accounts_out() -> None:
    assert policy.fair_share(10, 3, 500) == 4
    assert policy.fair_share(10, 0, 500) == 10
    assert policy.fair_share(1000, 1, 200) == 200
    assert policy.fair_share(0, 2, 200) == 0


def test_a_new_folder_is_read_from_the_days_before_the_account() -> None:
    assert policy.first_day(datetime(2026, 11, 30, 1, tzinfo=UTC), 14) == date(2026, 11, 16)


async def test_a_task_that_loses_its_first_cancel_is_still_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mailbox, "RECANCEL_SECONDS", 0.01)

    async def reading_on() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # as wait_for drops a cancel on Python 3.11
            await asyncio.sleep(60)
        await asyncio.sleep(60)  # an IDLE that would never end

    task = asyncio.create_task(reading_on())
    await asyncio.sleep(0)
    stopping = asyncio.create_task(mailbox.stop(task))
    await asyncio.wait({stopping}, timeout=2)  # (not wait_for: its own cancel would stop the task)
    assert stopping.done()
    assert task.cancelled()


async def test_stopping_tasks_that_fail_as_they_stop_raises_nothing_and_stops_them_all() -> None:
    async def failing_on_cancel() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            raise RuntimeError("the handler is closed")  # as aioimaplib writing DONE to a closed transport

    failing, quiet = asyncio.create_task(failing_on_cancel()), asyncio.create_task(asyncio.sleep(60))
    await asyncio.sleep(0)
    await mailbox.stop(failing, quiet)
    assert isinstance(failing.exception(), RuntimeError)
    assert quiet.cancelled()


def test_a_backlog_is_cut_into_runs_of_so_many_mails_or_bytes() -> None:
    uids = [1, 2, 3, 4, 5, 6, 7]
    sizes = {1: 10, 2: 10, 3: 10, 5: 50, 6: 10, 7: 10}  # 4: too large or gone, not fetched
    assert policy.runs(uids, sizes, most_mails=3, most_bytes=1000) == [[1, 2, 3], [4, 5, 6], [7]]
    assert policy.runs(uids, sizes, most_mails=100, most_bytes=30) == [[1, 2, 3, 4], [5], [6, 7]]
    assert policy.runs([], {}, most_mails=3, most_bytes=30) == []


async def test_mail_held_beyond_the_budget_waits_until_some_is_given_back() -> None:
    budget = Budget(100)
    order: list[str] = []

    async def hold(name: str, size: int, seconds: float) -> None:
        async with budget.hold(size):
            order.append(f"{name} in")
            await asyncio.sleep(seconds)
        order.append(f"{name} out")

    first = asyncio.create_task(hold("60", 60, 0.05))
    await asyncio.sleep(0)
    # 50 more do not fit beside 60; a mail larger than the whole budget waits for all of it.
    await asyncio.gather(first, hold("50", 50, 0), hold("500", 500, 0))
    assert order[:3] == ["60 in", "60 out", "50 in"]
    assert order.index("500 in") > order.index("50 out")
