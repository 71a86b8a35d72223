"""Bodies of the lead routes: leads, their import from CSV and their reports."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field

from services.api.kit.schemas import Email, Out, Patch, Strict, Tag
from shared.message_states import LeadStatus
from shared.planning.window import is_known_timezone
from shared.planning.zones import country_code

FIELD_KEY_MAX = 100
FIELD_VALUE_MAX = 5000
INT8_MIN, INT8_MAX = -(2**63), 2**63 - 1

# A custom field holds text, a 64-bit integer, a finite number (JSON has no NaN or Infinity, nor has JSONB),
# a boolean or null; an integer beyond 64 bits becomes a floating-point number.
FieldValue = (
    Annotated[str, Field(max_length=FIELD_VALUE_MAX)]
    | Annotated[int, Field(ge=INT8_MIN, le=INT8_MAX)]
    | Annotated[float, Field(allow_inf_nan=False)]
    | bool
    | None
)
CustomFields = dict[Annotated[str, Field(max_length=FIELD_KEY_MAX)], FieldValue]


def _timezone(value: str | None) -> str | None:
    if value is not None and not is_known_timezone(value):
        raise ValueError(f"unknown timezone {value!r}: an IANA zone such as 'Europe/Amsterdam'")
    return value


def _country(value: str | None) -> str | None:
    if value is None:
        return None
    code = country_code(value)
    if code is None:
        raise ValueError(
            f"unknown country {value!r}: an ISO 3166 alpha-2 code such as 'NL', or the English name the tz"
            " database's iso3166.tab gives it, such as 'Netherlands'"
        )
    return code


# Where the lead works, for campaigns in the lead's own working hours (`window_mode: recipient`).
TimeZone = Annotated[
    str | None,
    Field(max_length=64, description="IANA time zone, e.g. Europe/Amsterdam"),
    AfterValidator(_timezone),
]
Country = Annotated[
    str | None,
    Field(max_length=64, description="ISO 3166 alpha-2 code (e.g. NL) or English name (e.g. Netherlands)"),
    AfterValidator(_country),
]


class LeadIn(Strict):
    email: Email
    first_name: str = Field("", max_length=200)
    last_name: str = Field("", max_length=200)
    company: str = Field("", max_length=200)
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    fields: CustomFields = Field(default_factory=dict, max_length=100)
    timezone: TimeZone = None
    country: Country = None


class LeadPatch(Patch):
    NULLABLE = frozenset({"timezone", "country"})

    email: Email | None = None
    first_name: str | None = Field(None, max_length=200)
    last_name: str | None = Field(None, max_length=200)
    company: str | None = Field(None, max_length=200)
    tags: list[Tag] | None = Field(None, max_length=50)
    fields: CustomFields | None = Field(None, max_length=100)
    timezone: TimeZone = None  # null: no zone any more
    country: Country = None


class LeadOut(Out):
    id: str
    email: str
    first_name: str
    last_name: str
    company: str
    tags: list[str]
    fields: dict[str, Any]
    status: LeadStatus
    timezone: str | None
    country: str | None
    created_at: datetime


class RowError(BaseModel):
    row: int
    error: str


class ImportOut(BaseModel):
    created: int
    updated: int
    skipped: int
    errors: list[RowError]


class ReportOut(BaseModel):
    lead_id: str
    filename: str
    size: int
    uploaded_at: datetime
