"""`hookline dev`: API, router and dispatcher in one process on SQLite and the in-memory
broker; with `--demo`, a receiver ("site B") and example events from "site A".
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from rich.console import Console
from sqlalchemy.engine import make_url

from common.db import migrate
from common.service import install_stop_handlers, run_until_stopped
from common.settings import Settings
from common.signing import SignatureError, verify
from common.transport import MemoryBroker
from dispatcher import Dispatcher
from hookline.receiver import Received, Receiver
from hookline.runtime import api_server, build_runtime
from router import Router

STARTUP_TIMEOUT_S = 15.0
DEMO_TIMEOUT_S = 60.0
PORTAL_LINK_S = 24 * 3600
DEMO_PAGES = ("home", "pricing", "docs/getting-started", "blog/launch", "careers")


def _thread(name: str, target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def run_dev(
    settings: Settings,
    *,
    host: str,
    port: int,
    demo: bool,
    demo_events: int,
    exit_after_demo: bool,
    console: Console,
) -> int:
    """Run until Ctrl-C (or, with `exit_after_demo`, until the demo is delivered)."""
    if settings.admin_token is None:
        settings = settings.model_copy(update={"admin_token": "hl_admin_" + secrets.token_hex(8)})
    migrate.upgrade(settings.database_url)
    runtime = build_runtime(settings, memory=MemoryBroker(), dev=True, role="dev")
    stop = threading.Event()
    install_stop_handlers(stop)
    router = Router(
        settings, runtime.transport, runtime.sessionmaker, runtime.metrics,
        tracing=runtime.tracing,
    )  # fmt: skip
    dispatcher = Dispatcher(
        settings,
        runtime.transport,
        runtime.sessionmaker,
        runtime.metrics,
        secret_box=runtime.secret_box,
        tracing=runtime.tracing,
    )
    workers = [
        _thread("router", lambda: run_until_stopped(router.run, stop)),
        _thread("dispatcher", lambda: run_until_stopped(dispatcher.run, stop)),
    ]
    server = api_server(runtime, host, port)
    workers.append(_thread("api", server.run))
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started and time.monotonic() < deadline and workers[-1].is_alive():
        time.sleep(0.05)
    if not server.started:
        console.print(f"[red]the API did not start on {host}:{port} (port in use?)[/red]")
        stop.set()
        runtime.close()
        return 1
    api_url = f"http://{host}:{port}"
    console.print(
        f"[bold green]Hookline dev server[/bold green] API {api_url}  docs {api_url}/docs"
    )
    console.print(f"database: {_where(settings.database_url)}")
    console.print(f"admin token: [bold]{settings.admin_token}[/bold]  (Ctrl-C to stop)")
    console.print("for the CLI (`hookline dlq list`, `hookline publish`, ...) in another shell:")
    # soft_wrap: the line is for copying, so Rich must not break it at the terminal's edge.
    console.print(
        f"export HOOKLINE_API_URL={api_url} HOOKLINE_API_TOKEN={settings.admin_token}",
        soft_wrap=True,
        highlight=False,
        markup=False,
    )
    status = 0
    receiver: Receiver | None = None
    try:
        if demo:
            receiver = Receiver(keep=False).start()
            status = _run_demo(api_url, settings, receiver, demo_events, console, stop)
            if exit_after_demo:
                stop.set()
        stop.wait()
    finally:
        if receiver is not None:
            receiver.stop()
        console.print("stopping: draining in-flight work")
        server.should_exit = True
        stop.set()
        for worker in workers:
            worker.join(timeout=20)
        runtime.close()
    return status


def _where(database_url: str) -> str:
    """Where the data lives, said plainly (a file path for SQLite, the URL without its
    password otherwise)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        path = url.database or ":memory:"
        return (
            "in memory (gone when this stops)" if path == ":memory:" else str(Path(path).resolve())
        )
    return url.render_as_string(hide_password=True)


def _run_demo(
    api_url: str,
    settings: Settings,
    receiver: Receiver,
    count: int,
    console: Console,
    stop: threading.Event,
) -> int:
    """Site A publishes content updates; site B receives them signed and "syncs"."""
    admin = {"Authorization": f"Bearer {settings.admin_token}"}
    http = requests.Session()
    http.trust_env = False
    tenant = _post(http, f"{api_url}/v1/tenants", {"name": "site-a"}, admin)
    key = {"Authorization": f"Bearer {tenant['api_key']}"}
    arrived = threading.Event()
    secret_holder: dict[str, str] = {}
    seen: set[str] = set()

    def on_receive(request: Received) -> None:
        secret = secret_holder.get("secret")
        if secret is None:
            return
        try:
            verify(secret, request.headers, request.body)
            verdict = "[green]signature valid[/green]"
        except SignatureError as exc:
            verdict = f"[red]signature INVALID: {exc}[/red]"
        body = json.loads(request.body)
        console.print(
            f"site B received [bold]{body['type']}[/bold] "
            f"page={body['data'].get('page')} id={request.headers.get('webhook-id')} {verdict}"
        )
        seen.add(request.headers.get("webhook-id", ""))
        if len(seen) >= count:
            arrived.set()

    receiver.on_receive = on_receive
    # The platform registers site B on its behalf ("client mode"), so no handshake is needed.
    subscription = _post(
        http,
        f"{api_url}/v1/tenants/{tenant['id']}/subscriptions",
        {
            "url": f"{receiver.url}/site-b/webhooks",
            "event_types": ["content.*"],
            "description": "site B keeps its copy of site A's pages in sync",
        },
        admin,
    )
    secret_holder["secret"] = subscription["secret"]
    console.print(
        f"tenant {tenant['id']} subscribed {subscription['url']} to content.* "
        f"({subscription['id']})"
    )
    # Let the router's subscription index pick the new subscription up.
    time.sleep(settings.subscription_refresh_s + 0.2)
    for number in range(count):
        page = DEMO_PAGES[number % len(DEMO_PAGES)]
        event = _post(
            http,
            f"{api_url}/v1/events",
            {
                "type": "content.updated",
                "operation": "sync",
                "data": {"site": "a", "page": page, "revision": number + 1},
            },
            key,
        )
        console.print(f"site A published content.updated page={page} id={event['id']}")
    if not arrived.wait(DEMO_TIMEOUT_S) and not stop.is_set():
        console.print(f"[red]only {len(seen)} of {count} demo events arrived[/red]")
        return 1
    console.print(f"[bold green]all {count} demo webhooks delivered and verified[/bold green]")
    # The receivers' portal, where site B's people see these deliveries (docs/portal.md).
    link = _post(
        http,
        f"{api_url}/v1/portal/links",
        {"tenant_id": tenant["id"], "scope": "manage", "expires_in_s": PORTAL_LINK_S},
        admin,
    )
    # Not wrapped at the terminal's width, so the link can be copied whole.
    console.print(
        f"portal for site B (opens once, for 24 h): [bold]{link['url']}[/bold]", soft_wrap=True
    )
    return 0


def _post(
    http: requests.Session, url: str, body: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any]:
    response = http.post(url, json=body, headers=headers, timeout=10)
    if response.status_code >= 300:
        raise RuntimeError(f"POST {url} answered {response.status_code}: {response.text}")
    result: dict[str, Any] = response.json()
    return result
