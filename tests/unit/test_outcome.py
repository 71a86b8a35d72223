import pytest

from services.sender.outcome import Kind, from_reply, from_transport_error


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


def test_a_421_before_the_recipient_is_a_deferral_too() -> None:
    outcome = from_reply(421, "4.7.0 Too many connections, slow down", for_recipient=False)
    assert outcome.kind is Kind.DEFERRED
    assert outcome.reason == "421 4.7.0 Too many connections, slow down"
