import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.sender.outcome import (
    Kind,
    Outcome,
    from_login_refusal,
    from_reply,
    from_transport_error,
    health_signal,
)
from shared.reputation import Signal


@pytest.mark.parametrize(
    ("code", "text", "kind", "enhanced"),
    [
        (250, "2.0.0 OK queued", Kind.SENT, "2.0.0"),
        (550, "5.1.1 <x@y>: Recipient address rejected", Kind.BOUNCED, "5.1.1"),
        (554, "Transaction failed", Kind.BOUNCED, None),
        (451, "4.3.0 Temporary local problem", Kind.FAILED, "4.3.0"),
        (450, "Mailbox busy", Kind.FAILED, None),
        (451, "4.7.1 Greylisted, try again", Kind.DEFERRED, "4.7.1"),
        (421, "4.7.0 Try again later, closing connection", Kind.DEFERRED, "4.7.0"),
        (421, "Service not available", Kind.DEFERRED, None),
    ],
)
def test_smtp_replies_map_to_outcomes(code: int, text: str, kind: Kind, enhanced: str | None) -> None:
    outcome = from_reply(code, text)
    assert outcome.kind is kind
    assert outcome.smtp_code == code
    assert outcome.enhanced_code == enhanced


def test_transport_errors_are_temporary() -> None:
    outcome = from_transport_error("SMTPConnectError: connection refused")
    assert outcome.kind is Kind.FAILED
    assert outcome.smtp_code is None


def test_a_5xx_before_the_recipient_is_our_accounts_failure_not_a_bounce() -> None:
    outcome = from_reply(530, "5.7.0 Must issue a STARTTLS command first", for_recipient=False)
    assert outcome.kind is Kind.FAILED
    assert outcome.enhanced_code == "5.7.0"


# Policy rejections (SPEC §8): the sending domain's problem. 5.7.x decides where an enhanced code is given;
# behind a bare 550/554 the usual spam-block texts do. Other enhanced classes stay bounces whatever the text.
@pytest.mark.parametrize(
    ("code", "text", "kind"),
    [
        (550, "5.7.1 Message rejected as spam by Content Filtering", Kind.REJECTED),
        (
            554,
            "5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
            Kind.REJECTED,
        ),
        (553, "5.7.1 [BL21] Connections will not be accepted from 192.0.2.1", Kind.REJECTED),
        (550, "5.7.606 Access denied, banned sending IP [192.0.2.1]", Kind.REJECTED),
        (
            550,
            "5.7.26 Unauthenticated email from example.com is not accepted due to domain's DMARC policy",
            Kind.REJECTED,
        ),
        (550, "Message rejected as spam", Kind.REJECTED),
        (
            554,
            "Your access to this mail system has been rejected due to the sending MTA's poor reputation",
            Kind.REJECTED,
        ),
        (550, "Sender IP 192.0.2.1 is blacklisted", Kind.REJECTED),
        (554, "Refused: listed in the RBL of our provider", Kind.REJECTED),
        (550, "Sender not authorised to send from this domain", Kind.REJECTED),
        (550, "Unauthorized sender", Kind.REJECTED),
        (554, "Message refused by local policy", Kind.REJECTED),
        (550, "5.0.0 Blocked by our anti-spam filter", Kind.REJECTED),  # 5.0.0 says nothing: the text does
        # the recipient's own troubles: bounces
        (550, "5.1.1 <x@y>: Recipient address rejected: spam trap blocked", Kind.BOUNCED),
        (550, "5.2.1 The email account that you tried to reach is disabled (policy)", Kind.BOUNCED),
        (550, "5.5.0 Requested action not taken: mailbox unavailable, blocked", Kind.BOUNCED),
        (550, "Requested action not taken: mailbox unavailable", Kind.BOUNCED),
        (550, "No such user here", Kind.BOUNCED),
        (554, "delivery error: dd This user doesn't have an account", Kind.BOUNCED),
        (553, "Sender address is blacklisted", Kind.BOUNCED),  # only a bare 550/554 is read for spam texts
    ],
)
def test_policy_rejections_of_rcpt_or_data_are_not_bounces(code: int, text: str, kind: Kind) -> None:
    assert from_reply(code, text).kind is kind


def test_a_policy_answer_before_the_recipient_stays_our_accounts_failure() -> None:
    assert from_reply(550, "5.7.1 Sender not authorized", for_recipient=False).kind is Kind.FAILED


SPAM_WORDS = st.sampled_from(["spam", "blocked", "blacklisted", "policy", "reputation", "not authorized", ""])


@given(
    klass=st.sampled_from(["1", "2", "3", "4", "5", "6"]),
    detail=st.integers(0, 999),
    word=SPAM_WORDS,
    code=st.sampled_from([550, 551, 552, 553, 554]),
)
def test_an_enhanced_code_of_another_class_is_a_bounce_whatever_the_text(
    klass: str, detail: int, word: str, code: int
) -> None:
    assert from_reply(code, f"5.{klass}.{detail} mail {word} refused").kind is Kind.BOUNCED


@given(detail=st.integers(0, 999), word=SPAM_WORDS, code=st.integers(500, 599))
def test_any_5_7_answer_to_rcpt_or_data_is_a_policy_rejection(detail: int, word: str, code: int) -> None:
    assert from_reply(code, f"5.7.{detail} {word}").kind is Kind.REJECTED


@pytest.mark.parametrize(
    ("outcome", "signal"),
    [
        (from_reply(250, "2.0.0 OK"), Signal.SENT),
        (from_reply(550, "5.1.1 no such user"), Signal.HARD_BOUNCE),
        (from_reply(550, "5.7.1 spam"), Signal.POLICY_REJECTION),
        (from_reply(451, "4.3.0 try later"), Signal.ANSWERED),
        (from_reply(421, "4.7.0 Try again later, closing connection"), Signal.DEFERRAL),
        (from_reply(450, "4.7.1 rate limited"), Signal.DEFERRAL),
        (from_reply(553, "5.1.8 sender domain unknown", for_recipient=False), Signal.ANSWERED),
        (from_transport_error("could not reach an SMTP server"), Signal.CONNECTION_FAILURE),
        (from_login_refusal(535, "5.7.8 Authentication credentials invalid"), Signal.AUTHENTICATION_FAILURE),
        (Outcome(Kind.FAILED, "the template cannot render", retryable=False), None),
    ],
)
def test_what_an_attempt_says_about_its_sending_domain(outcome: Outcome, signal: Signal | None) -> None:
    assert health_signal(outcome) == signal


def test_a_refused_login_is_our_accounts_failure_retried() -> None:
    outcome = from_login_refusal(535, "5.7.8 Authentication credentials invalid")
    assert (outcome.kind, outcome.retryable, outcome.smtp_code) == (Kind.FAILED, True, 535)


def test_a_421_before_the_recipient_is_a_deferral_too() -> None:
    outcome = from_reply(421, "4.7.0 Too many connections, slow down", for_recipient=False)
    assert outcome.kind is Kind.DEFERRED
    assert outcome.reason == "421 4.7.0 Too many connections, slow down"
