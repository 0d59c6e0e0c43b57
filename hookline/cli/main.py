"""The `hookline` command: run the services, migrate, set up the broker, publish."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from common import logs
from common.db import migrate as db_migrate
from common.errors import ConfigurationError
from common.secretbox import check_admin_token
from common.service import freeze_startup_heap, install_stop_handlers, run_until_stopped
from common.settings import Settings
from common.transport import topology
from hookline.cli import backend
from hookline.cli.dlq import dlq_app
from hookline.cli.gc import gc
from hookline.cli.replay import replay_app, replay_resumer
from hookline.cli.secrets import require_usable_key, secrets_app
from hookline.cli.subscriptions import subscription_app
from hookline.cli.tenants import tenant_app
from hookline.failures import OneLineErrors
from hookline.runtime import (
    api_server,
    build_runtime,
    require_real_broker,
    serve_probes,
)
from hookline.supervisor import available_cores, child_argvs, exec_supervisor, watch_parent

app = OneLineErrors(help="Hookline: webhook delivery you can trust.", no_args_is_help=True)
broker_app = typer.Typer(help="Manage the RabbitMQ topology.", no_args_is_help=True)
app.add_typer(broker_app, name="broker")
app.add_typer(tenant_app, name="tenant")
app.add_typer(subscription_app, name="subscription")
app.add_typer(dlq_app, name="dlq")
app.add_typer(replay_app, name="replay")
app.command("gc")(gc)
app.add_typer(secrets_app, name="secrets")
console = Console()
log = logging.getLogger("hookline")


@app.callback()
def remote_target(
    api_url: Annotated[
        str | None,
        typer.Option(
            "--api-url",
            envvar="HOOKLINE_API_URL",
            help="Run the operator commands through this deployment's HTTP API; unset: "
            "against the database and broker directly (in-cluster jobs).",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="HOOKLINE_API_TOKEN",
            show_default=False,
            help="With --api-url: the admin token or a tenant's API key.",
        ),
    ] = None,
) -> None:
    """Hookline: webhook delivery you can trust."""
    backend.aim(api_url, token)


MetricsPort = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        help="Serve /metrics, /healthz and /readyz on this port (with --processes N: "
        "one port per process, from this one up).",
    ),
]
Processes = Annotated[
    int | None,
    typer.Option(
        "--processes",
        min=0,
        help="Worker processes under one supervisor (default HOOKLINE_PROCESSES; 0: one "
        "per core). --concurrency is per process.",
    ),
]
# Set by the supervisor on the command lines of its children (hookline/supervisor.py).
ChildIndex = Annotated[int | None, typer.Option("--child-index", hidden=True)]


def _settings(**overrides: object) -> Settings:
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
    logs.configure(settings.log_format, settings.log_level)
    return settings


def _require_real_secrets(settings: Settings, *, admin: bool = False, broker: bool = True) -> None:
    """Outside `hookline dev`, refuse to run on a missing, weak or wrong secret key (and,
    first, on the in-memory broker: a setting refused before the database is touched)."""
    try:
        if broker:
            require_real_broker(settings)
        require_usable_key(settings)
        if admin and settings.admin_token is not None:
            check_admin_token(settings.admin_token)
    except ConfigurationError as exc:
        typer.echo(f"hookline: refusing to start: {exc}", err=True)  # one line, as elsewhere
        raise typer.Exit(2) from None


@app.command()
def dev(
    demo: Annotated[
        bool, typer.Option(help="Start a receiver and publish example events.")
    ] = False,
    host: str = "127.0.0.1",
    port: int = 8000,
    demo_events: Annotated[int, typer.Option(help="How many demo events to publish.")] = 5,
    exit_after_demo: Annotated[
        bool, typer.Option(help="Stop once every demo event was delivered (for scripts).")
    ] = False,
    db: Annotated[
        Path | None,
        typer.Option(
            "--db",
            help="The SQLite file to keep its data in (default: HOOKLINE_DATABASE_URL).",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Everything in one process on SQLite and the in-memory broker."""
    from hookline.dev import run_dev

    database_url = f"sqlite:///{db.resolve()}" if db is not None else None
    settings = _settings(
        broker_url="memory://", allow_private_targets=True, database_url=database_url
    )
    raise typer.Exit(
        run_dev(
            settings,
            host=host,
            port=port,
            demo=demo,
            demo_events=demo_events,
            exit_after_demo=exit_after_demo,
            console=console,
        )
    )


@app.command()
def api(host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the HTTP API (control plane and event ingest)."""
    settings = _settings()
    _require_real_secrets(settings, admin=True)
    runtime = build_runtime(
        settings, pool_size=20, caller_waits=True, role="api",
        statement_timeout_s=settings.api_statement_timeout_s,
    )  # fmt: skip
    server = api_server(runtime, host, port)
    stop = threading.Event()
    install_stop_handlers(stop)
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    log.info("api listening", extra={"host": host, "port": port})
    try:
        while thread.is_alive() and not stop.wait(0.5):
            pass
        server.should_exit = True
        thread.join(30)
    finally:
        runtime.close()
    if not server.started:
        raise typer.Exit(1)


def _supervise(command: str, settings: Settings, child: int | None, *args: str) -> None:
    """With more than one process, become the supervisor instead of the service."""
    count = settings.processes or available_cores()
    if child is not None or count == 1:
        return
    require_real_broker(settings)  # refused here once, not by every child in a loop
    argvs = child_argvs(command, count, metrics_port=settings.metrics_port, args=args)
    exec_supervisor(command, argvs, log_format=settings.log_format, log_level=settings.log_level)


@app.command()
def router(
    metrics_port: MetricsPort = None, processes: Processes = None, child: ChildIndex = None
) -> None:
    """Consume events, match subscriptions, emit deliveries."""
    settings = _settings(metrics_port=metrics_port, processes=processes)
    if settings.secret_key:  # it opens no secret, but must not run beside a mis-keyed API
        _require_real_secrets(settings)
    _supervise("router", settings, child)
    from router import Router  # not in a supervisor, which only starts processes

    runtime = build_runtime(settings, role="router")
    if settings.metrics_port:
        # The backlog gauges describe shared state: one process of a supervisor exports them.
        serve_probes(runtime, settings.metrics_port, backlog=not child)
    stop = threading.Event()
    install_stop_handlers(stop)
    if child is not None:
        watch_parent(stop)
    worker = Router(
        settings, runtime.transport, runtime.sessionmaker, runtime.metrics,
        tracing=runtime.tracing,
    )  # fmt: skip
    log.info("router started")
    freeze_startup_heap()
    try:
        run_until_stopped(worker.run, stop)
    finally:
        runtime.close()
    log.info("router stopped")


@app.command()
def dispatcher(
    concurrency: Annotated[
        int | None, typer.Option(help="Concurrent HTTP deliveries, per process.")
    ] = None,
    metrics_port: MetricsPort = None,
    processes: Processes = None,
    child: ChildIndex = None,
) -> None:
    """Deliver webhooks: POST, classify, retry, dead-letter."""
    settings = _settings(
        dispatcher_concurrency=concurrency, metrics_port=metrics_port, processes=processes
    )
    _require_real_secrets(settings)
    _supervise("dispatcher", settings, child, "--concurrency", str(settings.dispatcher_concurrency))
    from dispatcher import Dispatcher  # not in a supervisor, which only starts processes

    runtime = build_runtime(settings, pool_size=4, role="dispatcher")
    runtime.metrics.concurrency.set(settings.dispatcher_concurrency)
    if settings.metrics_port:
        serve_probes(runtime, settings.metrics_port)
    # Replay jobs whose runner died are picked up here (docs/architecture.md section 7).
    # One flag: a signal stops the deliveries and the resumer (and its runner) at once.
    resumer = replay_resumer(settings, runtime)
    stop = resumer.stopping
    install_stop_handlers(stop)
    if child is not None:
        watch_parent(stop)
    worker = Dispatcher(
        settings,
        runtime.transport,
        runtime.sessionmaker,
        runtime.metrics,
        secret_box=runtime.secret_box,
        tracing=runtime.tracing,
    )
    log.info("dispatcher started", extra={"concurrency": settings.dispatcher_concurrency})
    resumer.start()
    freeze_startup_heap()
    try:
        run_until_stopped(worker.run, stop)
    finally:
        runtime.close()
    log.info("dispatcher stopped")


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema."""
    settings = _settings()
    db_migrate.upgrade(settings.database_url, secret_key=settings.secret_key)
    if settings.secret_key:  # write (or check) the key canary now, not at the first start
        _require_real_secrets(settings, broker=False)
    console.print("[green]database is up to date[/green]")


@broker_app.command("setup")
def broker_setup() -> None:
    """Declare every exchange and queue (idempotent)."""
    settings = _settings()
    runtime = build_runtime(settings)
    try:
        plan = topology.build(settings.retry_tiers_s, settings.delivery_shards)
        runtime.transport.declare(plan)
    finally:
        runtime.close()
    for queue in plan.queues:
        console.print(f"declared queue [bold]{queue.name}[/bold]")


@app.command()
def publish(
    event_type: Annotated[str, typer.Argument(help="Dotted event type, e.g. order.created.")],
    tenant: Annotated[
        str | None, typer.Option(help="Tenant id (direct mode; an API key names its own).")
    ] = None,
    data: Annotated[str, typer.Option(help="JSON object.")] = "{}",
    event_id: Annotated[str | None, typer.Option("--id", help="Event id (idempotency).")] = None,
    operation: Annotated[str | None, typer.Option(help="Operation name, e.g. sync.")] = None,
) -> None:
    """Publish one event; returns once the broker confirmed it. With HOOKLINE_API_URL it
    goes through `POST /v1/events` (the deployment's own broker; a tenant's key); without,
    straight to HOOKLINE_BROKER_URL, which must be a real RabbitMQ."""
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--data is not JSON: {exc}") from None
    except RecursionError:
        raise typer.BadParameter("--data is nested too deep to read") from None
    if not isinstance(payload, dict):
        raise typer.BadParameter("--data must be a JSON object")
    event = {"type": event_type, "data": payload, "id": event_id, "operation": operation}
    with backend.session() as ops:
        published = ops.publish({k: v for k, v in event.items() if v is not None}, tenant)
    console.print(published["id"])
