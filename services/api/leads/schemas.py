"""Bodies of the lead routes: leads, their import from CSV and their reports."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field

from services.api.kit.schemas import Email, Out, Patch, Strict, Tag
from shared.message_states import LeadStatus

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


class LeadIn(Strict):
    email: Email
    first_name: str = Field("", max_length=200)
    last_name: str = Field("", max_length=200)
    company: str = Field("", max_length=200)
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    fields: CustomFields = Field(default_factory=dict, max_length=100)


class LeadPatch(Patch):
    email: Email | None = None
    first_name: str | None = Field(None, max_length=200)
    last_name: str | None = Field(None, max_length=200)
    company: str | None = Field(None, max_length=200)
    tags: list[Tag] | None = Field(None, max_length=50)
    fields: CustomFields | None = Field(None, max_length=100)


class LeadOut(Out):
    id: str
    email: str
    first_name: str
    last_name: str
    company: str
    tags: list[str]
    fields: dict[str, Any]
    status: LeadStatus
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
