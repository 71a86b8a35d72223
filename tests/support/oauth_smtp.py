"""An aiosmtpd sink that takes only SASL XOAUTH2, as Google's and Microsoft's submission servers do: it asks
the test authorization server (its introspection endpoint, over HTTP) whether each bearer token is active and
names the address, and answers `535 5.7.3` otherwise (Exchange Online's words)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult

from shared.oauth import parse_xoauth2
from tests.support.smtp import SmtpSink, free_port
from tools.smtp_sink import SinkHandler

REFUSED = "535 5.7.3 Authentication unsuccessful"


@dataclass
class XOAuth2Handler(SinkHandler):
    introspection: str = ""
    logins: list[str] = field(default_factory=list)  # the addresses that logged in
    refusals: int = 0

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        found = parse_xoauth2(args[1]) if len(args) == 2 else None
        if found is None:
            return AuthResult(success=False, handled=False, message="501 5.5.2 not an XOAUTH2 response")
        user, token = found
        async with httpx.AsyncClient() as client:
            answer = (await client.post(self.introspection, data={"token": token})).json()
        if answer.get("active") and answer.get("email", "").lower() == user.lower():
            self.logins.append(user)
            return AuthResult(success=True, auth_data=user)
        self.refusals += 1
        return AuthResult(success=False, handled=False, message=REFUSED)


@dataclass
class OAuthSmtp(SmtpSink):
    @property
    def oauth(self) -> XOAuth2Handler:
        assert isinstance(self.handler, XOAuth2Handler)
        return self.handler


@contextlib.asynccontextmanager
async def running_oauth_smtp(introspection: str) -> AsyncIterator[OAuthSmtp]:
    port = free_port()
    handler = XOAuth2Handler(introspection=introspection)
    options: dict[str, Any] = {
        "auth_required": True,
        "auth_require_tls": False,
        "auth_exclude_mechanism": ["LOGIN", "PLAIN"],
    }
    controller = Controller(handler, hostname="127.0.0.1", port=port, **options)
    await asyncio.to_thread(controller.start)
    try:
        yield OAuthSmtp("127.0.0.1", port, handler)
    finally:
        await asyncio.to_thread(controller.stop)
