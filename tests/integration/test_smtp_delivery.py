"""The SMTP adapter against real aiosmtpd servers: TLS both ways, refusals, stalls and session reuse."""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult

from services.sender.outcome import Fault, Kind, Outcome, health_signal
from services.sender.smtp import Account, SmtpPool
from shared.reputation import Signal
from tests.support.smtp import SmtpSink, free_port, running_sink
from tests.support.tls import TlsFiles, self_signed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def pool(tls: TlsFiles) -> AsyncIterator[SmtpPool]:
    pool = SmtpPool(timeout=2.0, ca_file=str(tls.certificate), allow_private=True)
    yield pool
    await pool.close()


def letter(number: int = 1) -> bytes:
    email = EmailMessage()
    email["From"] = "sales@acme.example"
    email["To"] = "jan@lead.example"
    email["Subject"] = f"Hello {number}"
    email.set_content("Hi Jan")
    return email.as_bytes()


async def deliver(pool: SmtpPool, account: Account, number: int = 1) -> Outcome:
    transaction = pool.transaction(account)
    refused = await transaction.begin("bounce+1@acme.example")
    return refused or await transaction.finish("jan@lead.example", letter(number))


def account(port: int, security: str = "none", host: str = "localhost") -> Account:
    return Account(host, port, None, None, security)


async def test_starttls_delivers_to_a_server_that_requires_it(pool: SmtpPool, tls: TlsFiles) -> None:
    async with running_sink(tls_context=tls.server_context(), require_starttls=True) as sink:
        outcome = await deliver(pool, account(sink.port, "starttls"))
        assert outcome.kind is Kind.SENT, outcome
        assert sink.received[0].message["Subject"] == "Hello 1"

        plain = await deliver(pool, account(sink.port, "none"))
        assert plain.kind is Kind.FAILED  # the server wants STARTTLS: our account's fault, not a bounce
        assert plain.smtp_code == 530
        assert len(sink.received) == 1


async def test_implicit_tls_delivers(pool: SmtpPool, tls: TlsFiles) -> None:
    async with running_sink(ssl_context=tls.server_context()) as sink:
        outcome = await deliver(pool, account(sink.port, "tls"))
        assert outcome.kind is Kind.SENT, outcome
        assert len(sink.received) == 1


async def test_a_certificate_we_do_not_trust_is_refused(tls: TlsFiles) -> None:
    system_store = SmtpPool(timeout=2.0, allow_private=True)
    async with running_sink(tls_context=tls.server_context(), require_starttls=True) as sink:
        outcome = await deliver(system_store, account(sink.port, "starttls"))
        await system_store.close()
        assert outcome.kind is Kind.FAILED
        assert "CERTIFICATE_VERIFY_FAILED" in outcome.reason
        assert sink.received == []


async def test_connection_refused_is_a_temporary_failure(pool: SmtpPool) -> None:
    outcome = await deliver(pool, account(free_port(), host="127.0.0.1"))
    assert outcome.kind is Kind.FAILED
    assert outcome.retryable
    assert "refused" in outcome.reason.lower() or "connect" in outcome.reason.lower()
    assert health_signal(outcome) is Signal.CONNECTION_FAILURE  # counted towards the domain's health


async def test_a_refused_login_is_an_authentication_failure_of_the_domain(pool: SmtpPool) -> None:
    def refuse(*_: Any) -> AuthResult:
        return AuthResult(success=False, handled=False)

    async with running_sink(authenticator=refuse, auth_require_tls=False) as sink:
        outcome = await deliver(pool, Account("127.0.0.1", sink.port, "sales", "wrong", "none"))
        assert (outcome.kind, outcome.fault, outcome.smtp_code) == (Kind.FAILED, Fault.AUTHENTICATION, 535)
        assert outcome.retryable
        assert health_signal(outcome) is Signal.AUTHENTICATION_FAILURE
        assert sink.received == []


async def test_a_policy_refusal_of_the_recipient_is_a_rejection_not_a_bounce(
    pool: SmtpPool, smtp_sink: SmtpSink
) -> None:
    smtp_sink.answer_from(
        2, "554 5.7.1 Service unavailable; client host blocked using zen.spamhaus.org", "rcpt"
    )
    sent, refused = [await deliver(pool, account(smtp_sink.port, host="127.0.0.1"), n) for n in (1, 2)]
    assert sent.kind is Kind.SENT
    assert (refused.kind, refused.enhanced_code) == (Kind.REJECTED, "5.7.1")
    assert health_signal(refused) is Signal.POLICY_REJECTION
    assert len(smtp_sink.received) == 1


# Before the server has answered EHLO it is not known to be one: why it failed is not told (no port scans).
@pytest.mark.parametrize(
    ("phase", "reason"), [("ehlo_delay", "could not reach an SMTP server"), ("data_delay", "Timeout")]
)
async def test_a_server_that_stalls_past_the_timeout_fails_the_attempt(
    pool: SmtpPool, smtp_sink: SmtpSink, phase: str, reason: str
) -> None:
    setattr(smtp_sink.handler, phase, 5.0)  # the pool's timeout is 2 s
    outcome = await deliver(pool, account(smtp_sink.port, host="127.0.0.1"))
    assert outcome.kind is Kind.FAILED
    assert reason in outcome.reason
    assert smtp_sink.received == []


async def test_sessions_are_reused_per_account_and_renewed_when_the_server_dropped_them(
    pool: SmtpPool,
) -> None:
    port = free_port()
    async with running_sink(port) as sink:
        for number in range(3):
            assert (await deliver(pool, account(port, host="127.0.0.1"), number)).kind is Kind.SENT
        assert sink.handler.ehlo_started == 1  # one session carried all three
    assert pool.opened == 1

    async with running_sink(port) as restarted:  # the old session died with the old server
        assert (await deliver(pool, account(port, host="127.0.0.1"), 4)).kind is Kind.SENT
        assert len(restarted.received) == 1
    assert pool.opened == 2


async def test_an_abandoned_session_is_closed_without_sending(pool: SmtpPool, smtp_sink: SmtpSink) -> None:
    transaction = pool.transaction(account(smtp_sink.port, host="127.0.0.1"))
    assert await transaction.begin("bounce+1@acme.example") is None
    await transaction.abandon()
    assert (await deliver(pool, account(smtp_sink.port, host="127.0.0.1"))).kind is Kind.SENT
    assert pool.opened == 2  # the abandoned session was not handed out again
    assert len(smtp_sink.received) == 1
