"""An aiosmtpd sink that takes only OAuth2 bearer tokens, as Google's and Microsoft's submission servers do
(XOAUTH2, and OAUTHBEARER where a test offers it, as Google does): it asks the test authorization server (its
introspection endpoint, over HTTP) whether each token is active and names the address. A refused token gets
the providers' answer: the error as a challenge first, then `535 5.7.3` once the client acknowledges it."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult

from shared.oauth import Mechanism
from tests.support.smtp import SmtpSink, free_port
from tools.smtp_sink import SinkHandler

REFUSED = "535 5.7.3 Authentication unsuccessful"


def parse_xoauth2(encoded: str) -> tuple[str, str] | None:
    """(user, token) of an XOAUTH2 initial response; None when it is not one."""
    try:
        raw = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    fields = dict(part.split("=", 1) for part in raw.split("\x01") if "=" in part)
    auth = fields.get("auth", "")
    if "user" not in fields or not auth.startswith("Bearer "):
        return None
    return fields["user"], auth.removeprefix("Bearer ")


def parse_oauthbearer(encoded: str) -> tuple[str, str] | None:
    """(user, token) of an OAUTHBEARER initial response; None when it is not one."""
    try:
        raw = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    header, _, rest = raw.partition("\x01")
    user = next((part[2:] for part in header.split(",") if part.startswith("a=")), None)
    fields = dict(part.split("=", 1) for part in rest.split("\x01") if "=" in part)
    auth = fields.get("auth", "")
    if user is None or not header.startswith("n,") or not auth.startswith("Bearer "):
        return None
    return user.replace("=2C", ",").replace("=3D", "="), auth.removeprefix("Bearer ")


PARSERS: dict[Mechanism, Callable[[str], tuple[str, str] | None]] = {
    Mechanism.XOAUTH2: parse_xoauth2,
    Mechanism.OAUTHBEARER: parse_oauthbearer,
}


@dataclass
class BearerHandler(SinkHandler):
    introspection: str = ""
    logins: list[tuple[Mechanism, str]] = field(default_factory=list)  # how, and which address logged in
    refusals: int = 0

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._bearer(server, args, Mechanism.XOAUTH2)

    async def auth_OAUTHBEARER(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._bearer(server, args, Mechanism.OAUTHBEARER)

    async def _bearer(self, server: SMTP, args: list[str], mechanism: Mechanism) -> AuthResult:
        found = PARSERS[mechanism](args[1]) if len(args) == 2 else None
        if found is None:
            return AuthResult(success=False, handled=False, message="501 5.5.2 not a bearer token response")
        user, token = found
        async with httpx.AsyncClient() as client:
            answer = (await client.post(self.introspection, data={"token": token})).json()
        if answer.get("active") and answer.get("email", "").lower() == user.lower():
            self.logins.append((mechanism, user))
            return AuthResult(success=True, auth_data=user)
        self.refusals += 1
        await server.challenge_auth(json.dumps({"status": "invalid_token", "schemes": "bearer"}))
        return AuthResult(success=False, handled=False, message=REFUSED)


@dataclass
class OAuthSmtp(SmtpSink):
    @property
    def oauth(self) -> BearerHandler:
        assert isinstance(self.handler, BearerHandler)
        return self.handler

    @property
    def addresses(self) -> set[str]:
        return {address for _, address in self.oauth.logins}


@contextlib.asynccontextmanager
async def running_oauth_smtp(
    introspection: str, offered: tuple[Mechanism, ...] = (Mechanism.XOAUTH2,)
) -> AsyncIterator[OAuthSmtp]:
    """`offered`: the mechanisms it lists (XOAUTH2 alone, as Microsoft 365; both, as Google)."""
    port = free_port()
    handler = BearerHandler(introspection=introspection)
    excluded = ["LOGIN", "PLAIN", *(m.value for m in Mechanism if m not in offered)]
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        auth_required=True,
        auth_require_tls=False,
        auth_exclude_mechanism=excluded,
    )
    await asyncio.to_thread(controller.start)
    try:
        yield OAuthSmtp("127.0.0.1", port, handler)
    finally:
        await asyncio.to_thread(controller.stop)
