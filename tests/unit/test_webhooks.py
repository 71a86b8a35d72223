"""Outgoing webhooks' pure rules: Standard Webhooks signing, and when a failed delivery is tried again."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import events, webhooks
from shared.webhooks import RetryRules

# The Standard Webhooks specification's published test vector.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_signature_matches_the_specifications_test_vector() -> None:
    assert webhooks.signature(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_signed_headers_carry_id_timestamp_and_signature() -> None:
    headers = webhooks.signed_headers(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY)
    assert headers["webhook-id"] == VECTOR_ID
    assert headers["webhook-timestamp"] == "1614265330"
    assert headers["webhook-signature"] == VECTOR_SIGNATURE


@given(st.binary(min_size=24, max_size=64), st.binary(max_size=200), st.integers(0, 2**40))
def test_a_receiver_verifies_any_body_with_the_secret_alone(key: bytes, body: bytes, timestamp: int) -> None:
    secret = "whsec_" + base64.b64encode(key).decode()
    signed = f"msg_1.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert webhooks.signature(secret, "msg_1", timestamp, body) == f"v1,{expected}"


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "starts with whsec_"),
        ("whsec_not base64!", "base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "24 to 64 bytes"),
        ("whsec_" + base64.b64encode(bytes(65)).decode(), "24 to 64 bytes"),
    ],
)
def test_a_secret_not_in_the_specifications_form_is_refused(secret: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        webhooks.secret_key(secret)


def test_the_body_is_the_event_as_data_with_its_type_and_time() -> None:
    event = events.CampaignPaused(workspace_id=uuid.uuid4(), campaign_id=uuid.uuid4())
    payload = event.model_dump(mode="json")
    body = json.loads(webhooks.body("campaign.paused", payload))
    assert body == {"type": "campaign.paused", "timestamp": payload["occurred_at"], "data": payload}


def test_event_types_are_the_dotted_names_of_the_specification() -> None:
    assert webhooks.EVENT_TYPES == (
        "message.sent", "message.bounced", "message.opened", "message.clicked", "lead.replied",
        "lead.unsubscribed", "lead.complained", "campaign.started", "campaign.paused", "campaign.completed",
        "domain.paused", "domain.resumed",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("failures", "seconds"),
    [(1, 5), (2, 10), (3, 20), (10, 2560), (13, 20480), (14, 28800), (40, 28800), (1000, 28800)],
)
def test_retries_back_off_exponentially_from_5_s_up_to_8_hours(failures: int, seconds: int) -> None:
    assert RetryRules().delay(failures) == timedelta(seconds=seconds)


def test_a_delivery_is_given_up_once_a_retry_would_fall_after_3_days() -> None:
    rules = RetryRules()
    now, failures = T0, 0
    while (retry_at := rules.next_attempt(T0, failures + 1, now)) is not None:
        now, failures = retry_at, failures + 1
    assert now - T0 <= timedelta(days=3) < now + rules.delay(failures + 1) - T0
    assert failures == 20  # 13 doublings (~11.4 hours in all), 7 waits of 8 hours: 21 attempts in all


@pytest.mark.parametrize(
    ("status", "taken"), [(200, True), (204, True), (299, True), (301, False), (500, False)]
)
def test_only_a_2xx_answer_delivers(status: int, taken: bool) -> None:
    assert webhooks.succeeded(status) is taken
