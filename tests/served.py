"""A uvicorn server run on a thread for a test, as `hookline api` runs it (on 127.0.0.1)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

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
