"""What every long-running Hookline process shares: stop signals, reconnect-with-backoff, and
the garbage collector's settings once it serves."""

from __future__ import annotations

import gc
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential_jitter

from common.errors import ConnectionLostError, TransportError

log = logging.getLogger(__name__)

T = TypeVar("T")

RECONNECT_INITIAL_S = 0.5
HEALTHY_SESSION_S = 5.0
# How long a database write is retried in place before the session is given up.
DATABASE_OUTAGE_BOUND_S = 120.0
DATABASE_RETRY_MAX_WAIT_S = 5.0
FIRST_RETRY_WAIT_S = 0.1

GC_YOUNG_THRESHOLD = 20_000  # allocations between young collections while serving

# Failures a service survives by reconnecting: the broker or the database went away.
RECOVERABLE = (ConnectionLostError, TransportError, OperationalError, DBAPIError)


def freeze_startup_heap() -> None:
    """Once a process is set up to serve: keep the collector off what it built so far, and
    collect young objects less often.

    Under load the collector ran a young collection every 700 allocations (for a delivery
    or an ingest request: a few thousand), each walking what the work in flight holds
    (messages, futures, frames), and now and then a full one over everything the process
    imported (~150,000 objects, ~0.1-0.2 s, all threads stopped: a latency spike for every
    delivery in flight). What exists once a service starts lives as long as the process:
    frozen, full collections skip it; a larger young threshold walks the in-flight objects
    a fraction as often (cyclic garbage just waits a little longer). Once per process: an
    all-in-one process (`hookline dev`) starts more than one service."""
    if gc.get_freeze_count() == 0:
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


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


def database_away(exc: BaseException) -> bool:
    """Whether a database error means the server is unreachable rather than a bad row. A
    pool with no connection free within its timeout counts: the database is too slow to
    hand one back, and the write may go through once it does."""
    if isinstance(exc, OperationalError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def retry_database(
    call: Callable[[], T],
    *,
    abandon: threading.Event | None = None,
    bound_s: float = DATABASE_OUTAGE_BOUND_S,
) -> T:
    """Run `call`, retrying it in place while the database is away.

    Used for writes whose caller holds unacked messages: ending the consumer session
    instead would hand them back to RabbitMQ, which counts each return toward the
    queue's delivery limit, so repeated outages could poison healthy messages. Gives up
    (re-raising) after `bound_s`, or at the next try once `abandon` is set.
    """

    try:  # the usual case, without building a Retrying (hot paths call this per message)
        return call()
    except Exception as exc:
        if not database_away(exc) or (abandon is not None and abandon.is_set()):
            raise
    _pause(abandon, FIRST_RETRY_WAIT_S)  # then as many tries as the bound allows

    def give_up(state: RetryCallState) -> bool:
        elapsed_s = state.seconds_since_start or 0.0
        return (abandon is not None and abandon.is_set()) or elapsed_s >= bound_s

    retrying = Retrying(
        retry=retry_if_exception(database_away),
        wait=wait_exponential_jitter(initial=FIRST_RETRY_WAIT_S, max=DATABASE_RETRY_MAX_WAIT_S),
        stop=give_up,
        before_sleep=_log_database_retry,
        sleep=lambda seconds: _pause(abandon, seconds),
        reraise=True,
    )
    return retrying(call)


def _pause(abandon: threading.Event | None, seconds: float) -> None:
    if abandon is None:
        time.sleep(seconds)
    else:
        abandon.wait(seconds)


def _log_database_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning(
        "database unavailable, retrying in place",
        extra={"error": type(exc).__name__, "attempt": state.attempt_number},
    )


def reconnect_delay_s(failures: int, max_wait_s: float) -> float:
    """Exponential backoff with jitter for the `failures`-th failure in a row (from 1)."""
    base = min(max_wait_s, RECONNECT_INITIAL_S * 2.0 ** min(failures - 1, 30))
    return min(max_wait_s, base + random.uniform(0, RECONNECT_INITIAL_S))


def run_until_stopped(
    work: Callable[[threading.Event], None],
    stop: threading.Event,
    *,
    max_wait_s: float = 30.0,
    healthy_after_s: float = HEALTHY_SESSION_S,
) -> None:
    """Run `work(stop)` until `stop` is set, reconnecting with backoff when a dependency
    (RabbitMQ, the database) drops. `work` returns normally once it has drained after `stop`.

    A session that ran for `healthy_after_s` resets the backoff, so an outage after a day
    of service starts again from a short wait; one that drops at once (a flapping broker)
    keeps backing off.
    """
    failures = 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            work(stop)
            return
        except RECOVERABLE as exc:
            if stop.is_set():
                log.warning("dependency lost while stopping; unsettled messages will be "
                            "redelivered", extra={"error": repr(exc)})  # fmt: skip
                return
            healthy = time.monotonic() - started >= healthy_after_s
            failures = 1 if healthy else failures + 1
            delay_s = reconnect_delay_s(failures, max_wait_s)
            log.warning(
                "dependency unavailable, reconnecting",
                extra={"error": type(exc).__name__, "attempt": failures, "delay_s": delay_s},
            )
            stop.wait(delay_s)
