"""Bodies of the template routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from services.api.kit.schemas import Id, Out, Patch, Strict


class TemplateIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    subject: str = Field(min_length=1, max_length=998)
    body_html: str = Field(min_length=1, max_length=500_000)
    body_text: str | None = Field(None, max_length=500_000)
    followup_subject: str | None = Field(None, max_length=998)
    followup_body_html: str | None = Field(None, max_length=500_000)


class TemplatePatch(Patch):
    NULLABLE = frozenset({"body_text", "followup_subject", "followup_body_html"})
    name: str | None = Field(None, min_length=1, max_length=200)
    subject: str | None = Field(None, min_length=1, max_length=998)
    body_html: str | None = Field(None, min_length=1, max_length=500_000)
    body_text: str | None = Field(None, max_length=500_000)
    followup_subject: str | None = Field(None, max_length=998)
    followup_body_html: str | None = Field(None, max_length=500_000)


class PreviewIn(Strict):
    lead_id: Id
    followup: bool = False


class PreviewOut(BaseModel):
    subject: str
    html: str
    text: str


class TemplateOut(Out):
    id: str
    name: str
    subject: str
    body_html: str
    body_text: str | None
    followup_subject: str | None
    followup_body_html: str | None
    created_at: datetime
