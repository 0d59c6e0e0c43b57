"""What `hookline dev` runs, for a test: the API on uvicorn (127.0.0.1), a router and a
dispatcher on threads, SQLite and the in-memory broker; traced when given a `Tracing`."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from common.db import migrate
from common.service import run_until_stopped
from common.settings import Settings
from common.transport import MemoryBroker
from dispatcher import Dispatcher
from hookline.runtime import Runtime, api_server, build_runtime
from router import Router
from tests.processes import free_port
from tests.served import running

if TYPE_CHECKING:
    from common.tracing import Tracing


@contextmanager
def dev_stack(
    settings: Settings, *, tracing: Tracing | None = None
) -> Iterator[tuple[str, Runtime]]:
    """The API's URL and the runtime the three share, until the block ends."""
    migrate.upgrade(settings.database_url)
    runtime = build_runtime(settings, memory=MemoryBroker(), dev=True)
    runtime.tracing = tracing  # closed (its spans exported) with the runtime
    stop = threading.Event()
    router = Router(
        settings, runtime.transport, runtime.sessionmaker, runtime.metrics, tracing=tracing
    )
    dispatcher = Dispatcher(
        settings, runtime.transport, runtime.sessionmaker, runtime.metrics,
        secret_box=runtime.secret_box, tracing=tracing,
    )  # fmt: skip
    workers = [
        threading.Thread(target=run_until_stopped, args=(router.run, stop), daemon=True),
        threading.Thread(target=run_until_stopped, args=(dispatcher.run, stop), daemon=True),
    ]
    for worker in workers:
        worker.start()
    port = free_port()
    try:
        with running(api_server(runtime, "127.0.0.1", port), stop_s=20):
            yield f"http://127.0.0.1:{port}", runtime
    finally:
        stop.set()
        for worker in workers:
            worker.join(20)
        runtime.close()
