"""Bodies of the suppression routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, field_validator, model_validator

from services.api.kit.schemas import Email, Strict, domain_name


class SuppressionIn(Strict):
    email: Email | None = None
    domain: str | None = Field(None, max_length=253)
    reason: str = Field("manual", max_length=500)

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        return None if value is None else domain_name(value)

    @model_validator(mode="after")
    def _exactly_one(self) -> SuppressionIn:
        if (self.email is None) == (self.domain is None):
            raise ValueError("give exactly one of email or domain")
        return self


class SuppressionOut(BaseModel):
    id: str
    email: str | None
    domain: str | None
    reason: str
    created_at: datetime
