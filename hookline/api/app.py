"""`create_app`: the API's composition, from dependencies its caller built and owns."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp

from common import __version__
from common.metrics import Metrics
from common.secretbox import DEV_SECRET_KEY, SecretBox
from common.service import freeze_startup_heap
from common.settings import Settings
from common.ssrf import Resolver, system_resolver
from common.transport import Transport
from hookline.api import auth, errors
from hookline.api.deps import Services
from hookline.api.fast_ingest import FastIngest
from hookline.api.handshakes import HandshakeGate
from hookline.api.idempotency import Idempotency, document
from hookline.api.in_flight import ReleasePlaces
from hookline.api.keycache import KeyCache
from hookline.api.limitbook import LimitBook
from hookline.api.limits import MAX_BATCH_BODY_BYTES, MAX_BODY_BYTES, BodyLimit, RefuseNul
from hookline.api.misses import Misses
from hookline.api.over_limit import OverLimit
from hookline.api.quota import Quota
from hookline.api.readiness import ReadyProbe
from hookline.api.routes import (
    audit,
    deadletters,
    deliveries,
    event_lists,
    event_types,
    events,
    health,
    portal,
    purge,
    replay_resume,
    replays,
    subscription_actions,
    subscriptions,
    tenant_delivery,
    tenant_limits,
    tenant_settings,
    tenants,
)
from hookline.api.routes.events import BATCH, SINGLE
from hookline.api.routes.health import readiness_checks
from hookline.api.schema_check import SchemaCheck
from hookline.api.telemetry import RequestMetrics
from hookline.api.tenant_limits import document_request_limit
from hookline.portal import create_portal
from hookline.portal.outer import PortalHeaders
from producer import Producer

if TYPE_CHECKING:
    from common.tracing import Tracing

INGEST_LIMITS = {SINGLE: MAX_BODY_BYTES, BATCH: MAX_BATCH_BODY_BYTES}
DESCRIPTION = (
    "Publish events, manage subscriptions and inspect deliveries. Authenticate with "
    "`Authorization: Bearer hl_...` (a tenant API key) or the admin token for `/v1/tenants`. "
    'Errors are `{"error": {"code": ..., "message": ...}}`.'
)


def _operation_id(route: APIRoute) -> str:
    # Handler names are unique and read well in generated clients (`create_subscription`).
    return route.name


@asynccontextmanager
async def _serving(app: FastAPI) -> AsyncIterator[None]:
    freeze_startup_heap()  # common/service.py: the collector's cost under load
    yield
    services: Services = app.state.services
    for own_threads in (services.handshakes, services.quota, services.limits, services.ready):
        own_threads.close()


class _HooklineApp(FastAPI):
    """FastAPI with `FastIngest` in front of all its own layers (the error handler and
    telemetry middleware too): plain ingest requests are answered before any of them.
    Request metrics (`telemetry.py`) go outside it, so that ingest is measured too."""

    def build_middleware_stack(self) -> ASGIApp:
        fast = FastIngest(super().build_middleware_stack(), INGEST_LIMITS)
        return RequestMetrics(fast, self.state.services.metrics, INGEST_LIMITS)


def create_app(
    settings: Settings,
    *,
    transport: Transport,
    sessionmaker: sessionmaker[Session],
    metrics: Metrics,
    producer: Producer | None = None,
    resolver: Resolver = system_resolver,
    tracing: Tracing | None = None,
) -> FastAPI:
    """The FastAPI application. Its caller owns (and closes) the transport and the database.

    Handlers find their dependencies on `app.state.services` (a `Services`); nothing is
    global, so several apps can live in one process, as the tests and the dev server do.
    """
    app = _HooklineApp(
        title="Hookline",
        version=__version__,
        description=DESCRIPTION,
        generate_unique_id_function=_operation_id,
        lifespan=_serving,
    )
    producer = producer or Producer(settings, transport=transport, metrics=metrics)
    app.state.services = Services(
        settings=settings,
        transport=transport,
        sessionmaker=sessionmaker,
        metrics=metrics,
        producer=producer,
        secret_box=SecretBox(settings.secret_key or DEV_SECRET_KEY),
        key_cache=KeyCache(settings.api_key_cache_s),
        misses=Misses(settings.api_unknown_credentials_per_s),
        schema_check=SchemaCheck(sessionmaker, metrics, settings.catalogue_refresh_s),
        limits=LimitBook(sessionmaker, settings),
        quota=Quota(sessionmaker),
        handshakes=HandshakeGate(sessionmaker, settings.api_max_handshakes),
        ready=ReadyProbe(readiness_checks(sessionmaker, transport, producer)),
        resolver=resolver,
        tracing=tracing,
    )
    errors.install(app)
    # Ingest first: FastAPI tries routes in order, and `POST /v1/events` is the hot path.
    routers = (
        events, event_lists, health, tenants, tenant_settings, tenant_delivery, subscriptions,
        subscription_actions, deliveries, audit, purge, deadletters, replays, replay_resume,
        tenant_limits,
        event_types, portal,
    )  # fmt: skip
    for module in routers:
        app.include_router(module.router)
    app.include_router(event_types.admin_router)
    # The receivers' portal: HTML pages with their own session, CSRF and CSP (docs/portal.md).
    app.mount("/portal", create_portal(app.state.services))
    # Added last, so outermost: the size limit holds before a body is stored for replay.
    app.add_middleware(Idempotency)
    document(app)
    document_request_limit(app, auth.COUNTING)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES, per_path={BATCH: MAX_BATCH_BODY_BYTES})
    app.add_middleware(RefuseNul)
    # Outside each layer above that may answer a request to /portal itself.
    app.add_middleware(PortalHeaders)
    # A tenant known to be over its limits gets its 429 before its body is read or its
    # Idempotency-Key claimed (`over_limit.py`).
    app.add_middleware(OverLimit)
    # Outermost: a tenant's place is given back once its response is sent (`in_flight.py`).
    app.add_middleware(ReleasePlaces, in_flight=app.state.services.in_flight)
    return app
