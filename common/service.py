"""What every long-running Hookline process shares: stop signals and reconnect-with-backoff."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

from sqlalchemy.exc import DBAPIError, OperationalError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_never,
    wait_exponential_jitter,
)

from common.errors import ConnectionLostError, TransportError

log = logging.getLogger(__name__)

# Failures a service survives by reconnecting: the broker or the database went away.
RECOVERABLE = (ConnectionLostError, TransportError, OperationalError, DBAPIError)


def install_stop_handlers(stop: threading.Event) -> None:
    """First SIGTERM/SIGINT asks for a graceful drain; a second one exits at once."""

    def handle(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("second signal: exiting now; unsettled messages will be redelivered")
            os._exit(128 + signum)
        log.info("signal received: draining (send it again to exit at once)")
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning(
        "dependency unavailable, retrying",
        extra={"error": type(exc).__name__, "attempt": state.attempt_number},
    )


def _wait(stop: threading.Event, seconds: float) -> None:
    stop.wait(seconds)


def run_until_stopped(
    work: Callable[[threading.Event], None], stop: threading.Event, *, max_wait_s: float = 30.0
) -> None:
    """Run `work(stop)` until `stop` is set, reconnecting with backoff when a dependency
    (RabbitMQ, the database) drops. `work` returns normally once it has drained after `stop`.
    """
    retrying = Retrying(
        retry=retry_if_exception_type(RECOVERABLE),
        wait=wait_exponential_jitter(initial=0.5, max=max_wait_s),
        stop=stop_never,
        before_sleep=_log_retry,
        sleep=lambda seconds: _wait(stop, seconds),
        reraise=True,
    )
    for attempt in retrying:
        with attempt:
            if stop.is_set():
                return
            work(stop)
