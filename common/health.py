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
from collections.abc import Callable, Iterable, Mapping
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from common.transport import Transport, topology

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 5.0

Check = Callable[[], None]


def dependency_checks(sessions: sessionmaker[Session], transport: Transport) -> dict[str, Check]:
    """The two dependencies every service needs: the database answers, the broker answers."""

    def database() -> None:
        with sessions() as session:
            session.execute(text("SELECT 1"))

    def broker() -> None:
        transport.queue_depth(topology.EVENTS)

    return {"database": database, "broker": broker}


class Readiness:
    """Runs `checks` every `interval_s` in a daemon thread and remembers what failed."""

    def __init__(self, checks: Mapping[str, Check], *, interval_s: float = CHECK_INTERVAL_S):
        self._checks = dict(checks)
        self._interval_s = interval_s
        # A result older than this no longer counts: the checking thread itself may be stuck.
        self._stale_after_s = 3 * interval_s + 30
        self._lock = threading.Lock()
        self._problems: list[str] = ["not checked yet"]
        self._checked_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="readiness", daemon=True)

    def start(self) -> Readiness:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def check_now(self) -> None:
        problems = []
        for name, check in self._checks.items():
            # A probe must say "not ready" whatever the failure: any exception counts.
            try:
                check()
            except Exception as exc:
                error = type(exc).__name__
                log.warning("readiness check failed", extra={"check": name, "error": error})
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

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check_now()
            self._stop.wait(self._interval_s)


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
        self, registry: CollectorRegistry, readiness: Readiness, port: int, host: str = "0.0.0.0"
    ) -> None:
        self._metrics_app = make_wsgi_app(registry)
        self._readiness = readiness
        self._server = make_server(host, port, self._app, _ThreadingServer, _QuietHandler)
        self.port = int(self._server.server_port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="probes", daemon=True
        )

    def start(self) -> ProbeServer:
        self._readiness.start()
        self._thread.start()
        return self

    def close(self) -> None:
        self._readiness.stop()
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
