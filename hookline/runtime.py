"""The composition root: builds what a process needs from its `Settings`, once, in main()."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from common import tracing as tracing_setup
from common.backlog import BacklogCollector
from common.db.session import make_engine, make_sessionmaker
from common.errors import ConfigurationError
from common.health import ProbeServer, Readiness, dependency_checks
from common.metrics import Metrics
from common.secretbox import DEV_SECRET_KEY, SecretBox
from common.settings import Settings
from common.transport import MemoryBroker, Transport, open_transport, topology

if TYPE_CHECKING:
    import uvicorn

    from common.tracing import Tracing

log = logging.getLogger(__name__)

# How long a process whose callers are waiting people (the API, a one-shot command) waits
# for RabbitMQ before answering "unavailable": the transport keeps reconnecting meanwhile.
WAITING_CALLER_CONNECT_S = 1.5
MEMORY_URL = "memory://"


@dataclass
class Runtime:
    settings: Settings
    transport: Transport
    engine: Engine
    sessionmaker: sessionmaker[Session]
    metrics: Metrics
    secret_box: SecretBox
    tracing: Tracing | None = None  # a service's, when the OTEL_* variables turn it on
    _closed: bool = field(default=False, repr=False)

    def topology(self) -> topology.Topology:
        """The exchanges and queues these settings name (shards included)."""
        return topology.build(self.settings.retry_tiers_s, self.settings.delivery_shards)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.transport.close()
        self.engine.dispose()
        if self.tracing is not None:
            self.tracing.shutdown()  # exports the spans still queued


def secret_box_for(settings: Settings, *, dev: bool = False) -> SecretBox:
    if settings.secret_key:
        return SecretBox(settings.secret_key)
    if not dev:
        log.warning(
            "HOOKLINE_SECRET_KEY is not set: subscription secrets are sealed with the "
            "development key. Set it in production."
        )
    return SecretBox(DEV_SECRET_KEY)


def require_real_broker(settings: Settings) -> None:
    """Refuse `memory://` outside `hookline dev` and the tests: a command's in-memory broker
    lives and dies with its process, so an event published to it is acknowledged and lost."""
    if settings.broker_url.startswith(MEMORY_URL) and not settings.allow_memory_broker:
        raise ConfigurationError(
            "HOOKLINE_BROKER_URL=memory:// is the embedded broker of `hookline dev` and the "
            "tests only; set it to your RabbitMQ (amqp://...)"
        )


def command_transport(settings: Settings) -> Transport:
    """The broker of a one-shot command (`hookline publish`): a real one, and an answer
    within seconds when it is unreachable."""
    require_real_broker(settings)
    return open_transport(
        settings.broker_url,
        connect_budget_s=WAITING_CALLER_CONNECT_S,
        quorum_group_size=settings.quorum_group_size,
    )


def build_runtime(
    settings: Settings,
    *,
    memory: MemoryBroker | None = None,
    pool_size: int = 5,
    dev: bool = False,
    caller_waits: bool = False,
    role: str | None = None,
    statement_timeout_s: float = 0,
) -> Runtime:
    """What a process needs. `memory` (a broker shared in-process) and `dev` allow
    `memory://`; `caller_waits` (the API) bounds a wait for RabbitMQ by seconds. A service
    names its `role` (api, router, dispatcher, dev): its tracing is set up from the
    `OTEL_*` variables, and is None when they leave it off. `statement_timeout_s` bounds
    each statement on PostgreSQL (the API's `HOOKLINE_API_STATEMENT_TIMEOUT_S`)."""
    if memory is None and not dev:
        require_real_broker(settings)
    tracing = tracing_setup.configure(role) if role is not None else None
    engine = make_engine(
        settings.database_url, pool_size=pool_size, statement_timeout_s=statement_timeout_s
    )
    budget_s = WAITING_CALLER_CONNECT_S if caller_waits else None
    return Runtime(
        settings=settings,
        transport=open_transport(
            settings.broker_url,
            memory=memory,
            connect_budget_s=budget_s,
            quorum_group_size=settings.quorum_group_size,
        ),
        engine=engine,
        sessionmaker=make_sessionmaker(engine),
        metrics=Metrics(
            request_timeout_s=settings.request_timeout_s, retry_delays_s=settings.retry_delays_s
        ),
        secret_box=secret_box_for(settings, dev=dev),
        tracing=tracing,
    )


def serve_probes(runtime: Runtime, port: int, *, backlog: bool = False) -> ProbeServer:
    """`/metrics`, `/healthz` and `/readyz` on `port` for a router or dispatcher.

    With `backlog`, this process also exports the queue-depth and database gauges (one
    process per deployment does: the router; see docs/operations.md).
    """
    companions = []
    if backlog:
        queues = [
            q.name
            for q in topology.build(
                runtime.settings.retry_tiers_s, runtime.settings.delivery_shards
            ).queues
        ]
        shards = runtime.settings.delivery_shards
        collector = BacklogCollector(runtime.transport, runtime.sessionmaker, queues, shards=shards)
        companions.append(collector.register(runtime.metrics.registry))
    checks = dependency_checks(runtime.sessionmaker, runtime.transport)
    readiness = Readiness(checks)
    server = ProbeServer(runtime.metrics.registry, readiness, port, companions=companions)
    return server.start()


def api_server(runtime: Runtime, host: str, port: int) -> uvicorn.Server:
    """The HTTP API on this runtime's dependencies, as a uvicorn server not yet started.

    Run it from a worker thread: uvicorn then leaves signals to Hookline's own handlers
    (it would re-raise SIGTERM after its shutdown, which looks like a crash to supervisors).
    """
    import uvicorn

    from hookline.api.app import create_app
    from hookline.api.limits import bounded_http

    app = create_app(
        runtime.settings,
        transport=runtime.transport,
        sessionmaker=runtime.sessionmaker,
        metrics=runtime.metrics,
        tracing=runtime.tracing,
    )
    # No proxy headers: a key's `allowed_cidrs` and the audit log judge the connecting
    # address, which a client on a trusted host could otherwise rewrite with X-Forwarded-For.
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        http=bounded_http(runtime.settings.max_header_bytes),
    )
    return uvicorn.Server(config)
