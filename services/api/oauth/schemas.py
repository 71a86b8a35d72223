"""Request and response bodies of connecting a sending domain's mailbox with OAuth2."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from services.api.kit.schemas import Strict

ProviderField = Literal["google", "microsoft", "oidc"]


class OAuthStartIn(Strict):
    provider: ProviderField  # one this deployment configured (MAILDASH_OAUTH_*)


class OAuthStartOut(BaseModel):
    """Send the person to `authorize_url`; the provider brings them back to the api's callback."""

    provider: ProviderField
    authorize_url: str
    expires_at: datetime  # the connection must be completed by then


class OAuthConnectedOut(BaseModel):
    domain_id: str
    provider: ProviderField
    email: str
    state: Literal["active", "needs_reauth"]
