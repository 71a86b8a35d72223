"""Composition root of the api service: one router per resource, the shared gate, envelope and health."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from services.api.accounts import routes as accounts
from services.api.accounts.passwords import Passwords
from services.api.accounts.service import Accounts
from services.api.campaigns import routes as campaigns
from services.api.domains import routes as domains
from services.api.esp_webhooks import routes as esp_webhooks
from services.api.kit.envelope import install_error_handlers
from services.api.kit.gate import Gate
from services.api.kit.openapi import install_docs, operation_id
from services.api.leads import routes as leads
from services.api.oauth import routes as oauth
from services.api.suppressions import routes as suppressions
from services.api.templates import routes as templates
from services.api.webhooks import routes as webhooks
from services.api.workspace import routes as workspace
from shared.clock import utcnow
from shared.oauth_client import OAuthClient
from shared.oauth_tokens import TokenSource
from shared.observability import RequestIds, RequestMetrics, health_routes, route_templates
from shared.planning import zones
from shared.render_pool import RenderPool
from shared.runtime import Runtime
from shared.settings import Settings

TITLE = "Maildash Campaigns API"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    zones.check_tables()  # here, rather than silently at a lead's first country
    runtime = Runtime.build(settings, "api")
    passwords = Passwords(settings.password_hash_workers, settings.password_hash_queue)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with contextlib.closing(passwords):
            await app.state.accounts.ensure_superuser(settings.admin_email, settings.admin_password)
            async with app.state.templates, app.state.tokens, runtime.serving():
                yield

    app = FastAPI(
        title=TITLE,
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # install_docs serves them without a CDN
        redoc_url=None,
        generate_unique_id_function=operation_id,
    )
    app.state.runtime = runtime
    app.state.accounts = Accounts(runtime.sessions, passwords)
    app.state.templates = RenderPool.from_settings(settings)  # tenant templates run in its processes
    app.state.oauth = OAuthClient(settings)  # the OAuth2 providers of the sending mailboxes
    app.state.tokens = TokenSource(settings, utcnow, app.state.oauth)  # closes the client when it closes
    install_error_handlers(app)
    app.add_middleware(Gate, settings=settings)  # inside RequestIds: its answers carry the request id too
    app.add_middleware(RequestIds)
    # Outside the gate, so that its refusals count too. The documented paths are the api's templates in full.
    app.add_middleware(
        RequestMetrics, templates=lambda: [*app.openapi()["paths"], *route_templates(app.routes)]
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )
    resources = (
        accounts,
        domains,
        oauth,
        leads,
        templates,
        suppressions,
        campaigns,
        esp_webhooks,
        webhooks,
        workspace,
    )
    for resource in resources:
        app.include_router(resource.router, prefix="/api/v1")
    install_docs(app, TITLE, settings.broker_prefix)
    app.router.routes.extend(health_routes(runtime.readiness_checks(), optional=frozenset({"broker"})))
    if runtime.tracer_provider is not None:  # a request that starts a campaign starts its trace
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        # Not the OAuth2 callback: its query holds an authorization code, which no trace may carry.
        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=runtime.tracer_provider,
            excluded_urls="/healthz,/readyz,/metrics,/api/v1/oauth/callback",
        )
    return app
