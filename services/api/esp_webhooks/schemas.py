"""Bodies of the ESP webhook routes. What a webhook needs depends on its provider (`service.TAKES`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field

from services.api.kit.schemas import Patch, Strict
from shared import esp
from shared.esp import Provider
from shared.headers import UNSAFE_IN_HEADER


def topic_arn(value: str) -> str:
    if not esp.TOPIC_ARN.match(value):
        raise ValueError("not an SNS topic ARN (arn:aws:sns:<region>:<account id>:<topic name>)")
    return value


def basic_auth_user(value: str) -> str:
    if ":" in value or UNSAFE_IN_HEADER.search(value):
        raise ValueError("a basic-auth user name has no colon and no control characters")
    return value


def sendgrid_key(value: str) -> str:
    esp.sendgrid_key(value)  # raises ValueError, saying why
    return value


def secret_text(value: str) -> str:
    if UNSAFE_IN_HEADER.search(value):
        raise ValueError("may not contain line breaks or control characters")
    return value


TopicArn = Annotated[str, Field(max_length=400), AfterValidator(topic_arn)]
TopicArns = Annotated[list[TopicArn], Field(min_length=1, max_length=20)]
Username = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(basic_auth_user)]
# Postmark's password sits in a URL the provider keeps: long and random, like the signing keys.
Password = Annotated[str, Field(min_length=16, max_length=1024), AfterValidator(secret_text)]
PublicKey = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(sendgrid_key)]
SigningKey = Annotated[str, Field(min_length=16, max_length=1024), AfterValidator(secret_text)]


class EspWebhookIn(Strict):
    """`ses`: `topic_arns`; `postmark`: `username` and `password`; `sendgrid`: `public_key`; `mailgun`:
    `signing_key`. Passwords and signing keys are stored encrypted and never shown."""

    provider: Provider
    topic_arns: TopicArns | None = None
    username: Username | None = None
    password: Password | None = None
    public_key: PublicKey | None = None
    signing_key: SigningKey | None = None
    active: bool = True


class EspWebhookPatch(Patch):
    """Only the fields sent change; the provider's own fields only."""

    topic_arns: TopicArns | None = None
    username: Username | None = None
    password: Password | None = None
    public_key: PublicKey | None = None
    signing_key: SigningKey | None = None
    active: bool | None = None


class EspWebhookOut(BaseModel):
    id: str
    provider: Provider
    url: str  # where the ESP posts its events (Postmark: with user:password@ before the host)
    active: bool
    topic_arns: list[str]
    username: str | None
    has_password: bool
    public_key: str | None
    has_signing_key: bool
    created_at: datetime
    updated_at: datetime
