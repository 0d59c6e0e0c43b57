"""Connection policy: the parameters every connection opens with, which failures are worth
retrying, and how pika's errors become `common.errors` ones."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import pika
from pika import exceptions as amqp
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from common.errors import ConnectionLostError, TopologyError, TransportError

T = TypeVar("T")

HEARTBEAT_S = 30
CONNECT_BUDGET_S = 30.0  # total time spent retrying a connection before giving up
CONNECT_ATTEMPT_S = 10.0
NOT_FOUND, ACCESS_REFUSED, PRECONDITION_FAILED, NOT_ALLOWED = 404, 403, 406, 530
# Failures that retrying cannot fix: wrong credentials, unknown vhost, wrong protocol.
_REFUSED: tuple[type[Exception], ...] = (amqp.AuthenticationError, amqp.IncompatibleProtocolError)
_REFUSED += (amqp.ProbableAuthenticationError, amqp.ProbableAccessDeniedError)


def parameters(url: str, role: str) -> Any:
    params = pika.URLParameters(url)
    if "heartbeat=" not in url:
        params.heartbeat = HEARTBEAT_S
    # Named connections let an operator tell publishers from consumers in the management UI.
    params.client_properties = {"connection_name": f"hookline {role}"}
    return params


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, amqp.ConnectionClosedByBroker):
        return exc.reply_code not in (ACCESS_REFUSED, NOT_ALLOWED)
    return isinstance(exc, amqp.AMQPConnectionError) and not isinstance(exc, _REFUSED)


def connect(attempt: Callable[[], T], budget_s: float) -> T:
    """Run a connection attempt with backoff until it succeeds or `budget_s` is spent."""
    retrying = Retrying(
        stop=stop_after_delay(budget_s),
        wait=wait_exponential(multiplier=0.1, max=2.0),
        retry=retry_if_exception(is_transient),
        reraise=True,
    )
    try:
        return retrying(attempt)
    except amqp.AMQPError as exc:
        if is_transient(exc):
            raise ConnectionLostError(f"RabbitMQ unreachable for {budget_s:g} s: {exc!r}") from None
        raise TransportError(f"RabbitMQ refused the connection: {exc!r}") from None


def channel_error(exc: Any) -> TransportError:
    error = TopologyError if exc.reply_code in (NOT_FOUND, PRECONDITION_FAILED) else TransportError
    return error(f"{exc.reply_code} {exc.reply_text}")


def close_quietly(connection: Any) -> None:
    with contextlib.suppress(amqp.AMQPError):
        if connection.is_open:
            connection.close()
