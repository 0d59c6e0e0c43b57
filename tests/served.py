"""A uvicorn server run on a thread for a test, as `hookline api` runs it (on 127.0.0.1)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from common.settings import Settings
from common.transport import topology
from hookline.runtime import api_server, build_runtime
from tests.processes import free_port

STARTUP_S = 20.0


@contextmanager
def running(server: uvicorn.Server, *, stop_s: float = 10.0) -> Iterator[None]:
    """Run `server` on a daemon thread until the block ends; fails if it does not start."""
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_S
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the API did not start"
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(stop_s)


@contextmanager
def served_api(settings: Settings) -> Iterator[tuple[str, int]]:
    """The API of `settings` (a migrated database, the in-memory broker) served on a free
    port of 127.0.0.1, as `hookline api` serves it: its (host, port)."""
    runtime = build_runtime(settings, dev=True)
    runtime.transport.declare(topology.build(settings.retry_tiers_s))
    port = free_port()
    try:
        with running(api_server(runtime, "127.0.0.1", port)):
            yield "127.0.0.1", port
    finally:
        runtime.close()
