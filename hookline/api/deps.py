"""What route handlers need, built once by `create_app` and kept on `app.state.services`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request
from sqlalchemy.orm import Session, sessionmaker

from common.metrics import Metrics
from common.secretbox import SecretBox
from common.settings import Settings
from common.ssrf import Resolver, system_resolver
from common.transport import Transport
from hookline.api.handshakes import HandshakeGate
from hookline.api.in_flight import InFlight
from hookline.api.keycache import KeyCache
from hookline.api.limitbook import LimitBook
from hookline.api.misses import Misses
from hookline.api.quota import Quota
from hookline.api.readiness import ReadyProbe
from producer import Producer

if TYPE_CHECKING:  # it reads the catalogue through the services, which need this module
    from common.tracing import Tracing
    from hookline.api.schema_check import SchemaCheck


# The setting's default, for services built without `create_app` (tests).
_UNKNOWN_CREDENTIALS_PER_S = Settings.model_fields["api_unknown_credentials_per_s"].default


@dataclass(frozen=True)
class Services:
    settings: Settings
    transport: Transport
    sessionmaker: sessionmaker[Session]
    metrics: Metrics
    producer: Producer
    secret_box: SecretBox
    key_cache: KeyCache
    # Per-tenant API limits (issue 15): the limits in force, the shared rate counters, the
    # gate that every call to a tenant's endpoint goes through; readiness on its own threads.
    limits: LimitBook
    quota: Quota
    handshakes: HandshakeGate
    ready: ReadyProbe
    schema_check: SchemaCheck
    # Tests inject one to point names at chosen addresses; production asks the system.
    resolver: Resolver = system_resolver
    tracing: Tracing | None = None  # None: the API does not trace (the default)
    # Each tenant's requests in progress in this process (`max_concurrent_requests`).
    in_flight: InFlight = field(default_factory=InFlight)
    # Look-ups of credentials that found nothing, per client address (`misses.py`).
    misses: Misses = field(default_factory=lambda: Misses(_UNKNOWN_CREDENTIALS_PER_S))


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services
