"""Connection policy: the parameters every connection opens with, which failures are worth
retrying, and how pika's errors become `common.errors` ones."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pika
from pika import exceptions as amqp
from pika.adapters.utils.connection_workflow import AMQPConnectorException
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from common.errors import ConnectionLostError, TopologyError, TransportError

T = TypeVar("T")

HEARTBEAT_S = 30
CONNECT_BUDGET_S = 30.0  # total time spent retrying a connection before giving up
# One attempt, TCP connect to AMQP handshake: pika's own default (15 s) let a black-holed
# broker hold a caller far beyond its budget.
CONNECT_ATTEMPT_S = 10.0
MIN_ATTEMPT_S = 0.2
NOT_FOUND, ACCESS_REFUSED, PRECONDITION_FAILED, NOT_ALLOWED = 404, 403, 406, 530
# Failures that retrying cannot fix: wrong credentials, unknown vhost, wrong protocol.
_REFUSED: tuple[type[Exception], ...] = (amqp.AuthenticationError, amqp.IncompatibleProtocolError)
_REFUSED += (amqp.ProbableAuthenticationError, amqp.ProbableAccessDeniedError)


def parameters(url: str, role: str, attempt_s: float = CONNECT_ATTEMPT_S) -> Any:
    """Connection parameters for `url`; one attempt to connect takes at most `attempt_s`."""
    params = pika.URLParameters(url)
    params.socket_timeout = params.stack_timeout = attempt_s
    if "heartbeat=" not in url:
        params.heartbeat = HEARTBEAT_S
    # Named connections let an operator tell publishers from consumers in the management UI.
    params.client_properties = {"connection_name": f"hookline {role}"}
    return params


def is_transient(exc: BaseException) -> bool:
    """Whether trying again may work: the broker was away, not refusing us."""
    if isinstance(exc, amqp.ConnectionClosedByBroker):
        return exc.reply_code not in (ACCESS_REFUSED, NOT_ALLOWED)
    if isinstance(exc, AMQPConnectorException | OSError):  # a stack timeout, DNS, a reset
        return True
    return isinstance(exc, amqp.AMQPConnectionError) and not isinstance(exc, _REFUSED)


def is_broker_error(exc: BaseException) -> bool:
    """An error of pika or of the socket under it, which must not leave this package."""
    return isinstance(exc, amqp.AMQPError | AMQPConnectorException | OSError)


def connect(attempt: Callable[[float], T], budget_s: float) -> T:
    """Run `attempt(attempt_s)` with backoff until it succeeds or `budget_s` is spent; each
    attempt may take the budget that is left (at most `CONNECT_ATTEMPT_S`).

    Raises `ConnectionLostError` when the broker stayed unreachable, `TransportError` when
    it refused us (credentials, vhost): never one of pika's or the socket's errors.
    """
    ends = time.monotonic() + budget_s

    def once() -> T:
        return attempt(max(MIN_ATTEMPT_S, min(CONNECT_ATTEMPT_S, ends - time.monotonic())))

    retrying = Retrying(
        stop=stop_after_delay(budget_s),
        wait=wait_exponential(multiplier=0.1, max=2.0),
        retry=retry_if_exception(is_transient),
        reraise=True,
    )
    try:
        return retrying(once)
    except Exception as exc:
        if not is_broker_error(exc):
            raise
        if is_transient(exc):
            raise ConnectionLostError(f"RabbitMQ unreachable for {budget_s:g} s: {exc!r}") from None
        raise TransportError(f"RabbitMQ refused the connection: {exc!r}") from None


def channel_error(exc: Any) -> TransportError:
    error = TopologyError if exc.reply_code in (NOT_FOUND, PRECONDITION_FAILED) else TransportError
    return error(f"{exc.reply_code} {exc.reply_text}")


def close_quietly(connection: Any) -> None:
    with contextlib.suppress(amqp.AMQPError, OSError):
        if connection.is_open:
            connection.close()
