"""What the request and response bodies of every resource share: bounded strings, checked e-mail addresses,
aware times, text PostgreSQL can store, strict input models and partial updates. Never reused as broker
messages."""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

# Every input is bounded: strings and lists by length, numbers by the range of the column they go to.
EMAIL_MAX = 254  # RFC 5321: a forward path of 256 octets, less its angle brackets
ID_MAX = 100  # ids are opaque strings (UUIDs today)
TAG_MAX = 100
INT4_MAX = 2**31 - 1  # PostgreSQL `integer`

# \Z, not $: `$` also matches before a final newline, which would let "a.example\n" through.
DOMAIN = re.compile(r"^(?=.{1,253}\Z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\Z")

# An ASCII dot-atom local part, which email-validator accepts as it is; anything else takes the full check.
LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")


@functools.lru_cache(maxsize=65_536)
def _checked_domain(domain: str) -> str:
    return str(validate_email(f"x@{domain}", check_deliverability=False).domain)


def email_address(value: str) -> str:
    """email-validator's verdict and normal form (what pydantic's EmailStr gives), with each domain checked
    once: its IDNA work is most of the cost, and an imported list repeats few domains many times."""
    try:
        local, at, domain = value.rpartition("@")
        if at and len(local) <= 64 and LOCAL_PART.match(local):
            if local.lower() in CASE_INSENSITIVE_MAILBOX_NAMES:  # RFC 2142 role names: email-validator lowers
                local = local.lower()
            address = f"{local}@{_checked_domain(domain)}"
            if len(address) <= 254:
                return address
        return str(validate_email(value, check_deliverability=False).normalized)
    except EmailNotValidError as error:
        raise ValueError(f"not a valid e-mail address: {error}") from error


Email = Annotated[
    str,
    Field(max_length=EMAIL_MAX),  # checked before the address is parsed
    AfterValidator(email_address),
    WithJsonSchema({"type": "string", "format": "email", "maxLength": EMAIL_MAX}),
]
Id = Annotated[str, Field(max_length=ID_MAX)]
Tag = Annotated[str, Field(max_length=TAG_MAX)]
DomainName = Annotated[str, Field(max_length=253)]


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError as error:  # 9999-12-31T23:59-01:00 is in year 10000 in UTC
        raise ValueError("the time is out of range") from error


# An aware time that PostgreSQL can hold: normalised to UTC, refused when that leaves the calendar.
Moment = Annotated[AwareDatetime, AfterValidator(_utc)]


def domain_name(value: str) -> str:
    """A domain name in its stored form: lower case, without a final dot."""
    value = value.lower().rstrip(".")
    if not DOMAIN.match(value):
        raise ValueError("not a domain name")
    return value


def storable(value: Any) -> Any:
    """PostgreSQL text holds neither NUL nor lone UTF-16 surrogates: refuse them (422), never fail (500)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text may not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError("text is not valid Unicode") from error
    elif isinstance(value, list):
        for item in value:
            storable(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            storable(key)
            storable(item)
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        return storable(value)


class Answer(BaseModel):
    """A response body: the OpenAPI document lists a field with a default as required, for it is always
    there (`null` where empty)."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


class Out(Answer):
    model_config = ConfigDict(from_attributes=True)  # merged with Answer's


class Patch(Strict):
    """A partial update: only the fields sent change; `null` only where the field may be empty."""

    NULLABLE: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _no_null_for_required(self) -> Patch:
        for name in self.model_fields_set - self.NULLABLE:
            if getattr(self, name) is None:
                raise ValueError(f"{name} may not be null")
        return self

    def changes(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)


class DeletedOut(Answer):
    id: str
    deleted: bool = True
