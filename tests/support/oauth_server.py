"""A small OAuth2 / OpenID authorization server written for the tests, served over real HTTP on a free port:
discovery, authorize (PKCE S256, approved at once for the `login_hint`, or for `email_for` when a test names
another address), token (authorization_code and refresh_token grants, with a lifetime the test sets),
revoke (RFC 7009), introspect (RFC 7662: what aiosmtpd and Dovecot check bearer tokens with) and userinfo.
It counts the refreshes it answered, so a test can say how many happened."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlencode

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.support.smtp import free_port

CLIENT_ID = "maildash-test-client"
CLIENT_SECRET = "test-client-secret-" + secrets.token_hex(8)


@dataclass
class Grant:
    email: str
    revoked: bool = False


@dataclass
class Code:
    email: str
    challenge: str
    redirect_uri: str


@dataclass
class AccessToken:
    grant: Grant
    expires: float  # time.time()


@dataclass
class OAuthServer:
    url: str = ""
    access_lifetime: int = 3600  # seconds, as `expires_in` says and introspection holds to
    refresh_delay: float = 0.0  # a slow provider: concurrent refreshes overlap
    email_for: str | None = None  # approve as this address instead of the login hint
    refreshes: int = 0
    codes: dict[str, Code] = field(default_factory=dict)
    grants: dict[str, Grant] = field(default_factory=dict)  # by refresh token
    access: dict[str, AccessToken] = field(default_factory=dict)
    issued: list[str] = field(default_factory=list)  # every token handed out: none may ever be logged

    # What tests do to it
    def expire_access_tokens(self) -> None:
        """Every access token issued so far stops working now (the holder still believes in it)."""
        for token in self.access.values():
            token.expires = time.time() - 1

    def revoke_all(self) -> None:
        """The user withdrew every grant (or an admin did): refreshes answer `invalid_grant`."""
        for grant in self.grants.values():
            grant.revoked = True

    def active(self, token: str) -> AccessToken | None:
        found = self.access.get(token)
        if found is None or found.grant.revoked or found.expires <= time.time():
            return None
        return found

    # Endpoints
    async def discovery(self, _: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.url,
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
                "revocation_endpoint": f"{self.url}/revoke",
                "introspection_endpoint": f"{self.url}/introspect",
                "userinfo_endpoint": f"{self.url}/userinfo",
                "code_challenge_methods_supported": ["S256"],
            }
        )

    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        if q.get("client_id") != CLIENT_ID or q.get("code_challenge_method") != "S256":
            return JSONResponse({"error": "invalid_request"}, 400)
        code = secrets.token_urlsafe(24)
        email = self.email_for or q.get("login_hint", "")
        self.codes[code] = Code(email, q.get("code_challenge", ""), q.get("redirect_uri", ""))
        target = f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q.get('state', '')})}"
        return RedirectResponse(target, 302)

    async def token(self, request: Request) -> Response:
        if not _client_authenticated(request):
            return JSONResponse({"error": "invalid_client"}, 401)
        form = await request.form()
        if form.get("grant_type") == "authorization_code":
            code = self.codes.pop(str(form.get("code", "")), None)
            verifier = str(form.get("code_verifier", ""))
            if (
                code is None
                or _s256(verifier) != code.challenge
                or form.get("redirect_uri") != code.redirect_uri
            ):
                return JSONResponse({"error": "invalid_grant"}, 400)
            refresh = self._issue(secrets.token_urlsafe(32))
            grant = self.grants[refresh] = Grant(code.email)
            return JSONResponse(
                {**self._access_for(grant), "refresh_token": refresh, "id_token": _id_token(grant)}
            )
        if form.get("grant_type") == "refresh_token":
            grant = self.grants.get(str(form.get("refresh_token", "")))
            if grant is None or grant.revoked:
                return JSONResponse({"error": "invalid_grant", "error_description": "grant revoked"}, 400)
            self.refreshes += 1
            await asyncio.sleep(self.refresh_delay)
            return JSONResponse(self._access_for(grant))
        return JSONResponse({"error": "unsupported_grant_type"}, 400)

    async def revoke(self, request: Request) -> Response:
        if not _client_authenticated(request):
            return JSONResponse({"error": "invalid_client"}, 401)
        token = str((await request.form()).get("token", ""))
        if token in self.grants:
            self.grants[token].revoked = True
        return Response(status_code=200)

    async def introspect(self, request: Request) -> Response:
        token = str((await request.form()).get("token", ""))
        found = self.active(token)
        if found is None:
            return JSONResponse({"active": False})
        email = found.grant.email
        return JSONResponse(
            {
                "active": True,
                "username": email,
                "email": email,
                "exp": int(found.expires),
                "client_id": CLIENT_ID,
            }
        )

    async def userinfo(self, request: Request) -> Response:
        found = self.active(request.headers.get("authorization", "").removeprefix("Bearer "))
        if found is None:
            return JSONResponse({"error": "invalid_token"}, 401)
        return JSONResponse({"sub": found.grant.email, "email": found.grant.email})

    def _issue(self, token: str) -> str:
        self.issued.append(token)
        return token

    def _access_for(self, grant: Grant) -> dict[str, object]:
        token = self._issue(secrets.token_urlsafe(32))
        self.access[token] = AccessToken(grant, time.time() + self.access_lifetime)
        return {"access_token": token, "token_type": "Bearer", "expires_in": self.access_lifetime}

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self.discovery),
                Route("/authorize", self.authorize),
                Route("/token", self.token, methods=["POST"]),
                Route("/revoke", self.revoke, methods=["POST"]),
                Route("/introspect", self.introspect, methods=["POST"]),
                Route("/userinfo", self.userinfo),
            ]
        )


def _client_authenticated(request: Request) -> bool:
    expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    return request.headers.get("authorization") == f"Basic {expected}"


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _id_token(grant: Grant) -> str:
    """An id token as the token endpoint hands it over (the client takes it from there over TLS, unsigned
    here: `alg` none)."""

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part({'email': grant.email, 'sub': grant.email})}."


@contextlib.asynccontextmanager
async def running_oauth_server() -> AsyncIterator[OAuthServer]:
    port = free_port()
    server = OAuthServer(url=f"http://127.0.0.1:{port}")
    config = uvicorn.Config(server.app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    web = uvicorn.Server(config)
    task = asyncio.create_task(web.serve())
    while not web.started:  # noqa: ASYNC110 (uvicorn says so only by this flag)
        await asyncio.sleep(0.02)
    try:
        yield server
    finally:
        web.should_exit = True
        await task
