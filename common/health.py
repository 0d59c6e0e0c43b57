"""Liveness, readiness and `/metrics` for the router and dispatcher, on their metrics port.

Kubernetes probes every few seconds; a probe must answer quickly even while RabbitMQ or
PostgreSQL hangs (a broker connection attempt can take its whole connect budget). So the
dependency checks run in one background thread, and `/readyz` answers from the last
result: ready only when every check passed recently.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from socketserver import ThreadingMixIn
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from common.background import BackgroundThread
from common.transport import Transport, topology

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 5.0
CHECK_TIMEOUT_S = 3.0

Check = Callable[[], None]


class Background(Protocol):
    def start(self) -> object: ...
    def stop(self) -> None: ...


def dependency_checks(sessions: sessionmaker[Session], transport: Transport) -> dict[str, Check]:
    """The two dependencies every service needs: the database answers, the broker answers."""

    def database() -> None:
        with sessions() as session:
            session.execute(text("SELECT 1"))

    def broker() -> None:
        transport.queue_depth(topology.EVENTS)

    return {"database": database, "broker": broker}


class Readiness(BackgroundThread):
    """Runs `checks` every `interval_s` in a daemon thread and remembers what failed.

    A check that has not answered within `timeout_s` counts as failed (a broker connection
    attempt may retry for its whole connect budget); it is not started again until it
    returns, so a hung dependency costs one thread, not one per round.
    """

    def __init__(
        self,
        checks: Mapping[str, Check],
        *,
        interval_s: float = CHECK_INTERVAL_S,
        timeout_s: float = CHECK_TIMEOUT_S,
    ) -> None:
        super().__init__("readiness")
        self._checks = dict(checks)
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        # A result older than this no longer counts: the checking thread itself may be stuck.
        self._stale_after_s = 3 * (interval_s + timeout_s)
        self._pool = ThreadPoolExecutor(max(1, len(checks)), thread_name_prefix="readiness")
        self._running: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        self._problems: list[str] = ["not checked yet"]
        self._checked_at = 0.0

    def stop(self, timeout_s: float | None = None) -> None:
        # Not waited for by default: a hung check holds the thread for up to `timeout_s`.
        super().stop(timeout_s)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def check_now(self) -> None:
        for name, check in self._checks.items():
            if name not in self._running:
                self._running[name] = self._pool.submit(check)
        wait(self._running.values(), timeout=self._timeout_s)
        problems = []
        for name, future in list(self._running.items()):
            if not future.done():
                problems.append(f"{name} did not answer within {self._timeout_s:g}s")
                continue
            del self._running[name]
            # A probe must say "not ready" whatever the failure: any exception counts.
            error = future.exception()
            if error is not None:
                log.warning("readiness check failed",
                            extra={"check": name, "error": type(error).__name__})  # fmt: skip
                problems.append(f"{name} unreachable")
        with self._lock:
            self._problems = problems
            self._checked_at = time.monotonic()

    def state(self) -> tuple[bool, list[str]]:
        with self._lock:
            problems, checked_at = list(self._problems), self._checked_at
        if checked_at and time.monotonic() - checked_at > self._stale_after_s:
            problems.append("readiness checks are stuck")
        return not problems, problems

    def run(self) -> None:
        while not self.stopping.is_set():
            self.check_now()
            self.stopping.wait(self._interval_s)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes would flood the log
        pass


Environ = dict[str, Any]
StartResponse = Callable[..., Any]


class ProbeServer:
    """`/metrics`, `/healthz` and `/readyz` on one port, served from a daemon thread."""

    def __init__(
        self,
        registry: CollectorRegistry,
        readiness: Readiness,
        port: int,
        host: str = "0.0.0.0",
        *,
        companions: Sequence[Background] = (),
    ) -> None:
        self._metrics_app = make_wsgi_app(registry)
        self._readiness = readiness
        # Background work whose numbers this server exposes; started and stopped with it.
        self._companions = (readiness, *companions)
        self._server = make_server(host, port, self._app, _ThreadingServer, _QuietHandler)
        self.port = int(self._server.server_port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="probes", daemon=True
        )

    def start(self) -> ProbeServer:
        for companion in self._companions:
            companion.start()
        self._thread.start()
        return self

    def close(self) -> None:
        for companion in self._companions:
            companion.stop()
        self._server.shutdown()
        self._server.server_close()

    def _app(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics_app(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            return _text(start_response, "200 OK", "ok")
        if path == "/readyz":
            ready, problems = self._readiness.state()
            if ready:
                return _text(start_response, "200 OK", "ready")
            return _text(start_response, "503 Service Unavailable", "; ".join(problems))
        return _text(start_response, "404 Not Found", "not found: try /metrics, /healthz, /readyz")


def _text(start_response: StartResponse, status: str, body: str) -> list[bytes]:
    data = (body + "\n").encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(data)))])  # fmt: skip
    return [data]
