"""Connection policy: the nodes a connection may go to, the parameters every connection
opens with, which failures are worth retrying, and how pika's errors become
`common.errors` ones."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pika
from pika import exceptions as amqp
from pika.adapters.utils.connection_workflow import AMQPConnectorException
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from common.errors import ConfigurationError, ConnectionLostError, TopologyError, TransportError
from common.transport.topology import MAX_QUORUM_GROUP_SIZE

log = logging.getLogger(__name__)

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


class Nodes:
    """The nodes of the broker: one amqp URL, or the URLs of a cluster's nodes separated by
    commas. Every connection goes to the node that answered last; an attempt that fails
    moves on to the next node in the list, so the retries of `connect` (and the outage's
    probes) go round the cluster until a node answers.

    Rotating here rather than handing pika a list of parameters: the publisher's
    `SelectConnection` takes one, and one attempt per node keeps each bounded by the
    caller's budget.
    """

    def __init__(self, url: str) -> None:
        self.urls = tuple(part.strip() for part in url.split(",") if part.strip())
        if not self.urls or not all(u.startswith(("amqp://", "amqps://")) for u in self.urls):
            raise ConfigurationError(
                "HOOKLINE_BROKER_URL must be an amqp:// URL, or several separated by commas"
            )
        self._current = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.urls)

    def quorum_group_size(self, configured: int = 0) -> int | None:
        """Replicas per quorum queue: `configured` when set; else one per listed node, at most
        `MAX_QUORUM_GROUP_SIZE`; None for a single URL (maybe a load balancer in front of a
        cluster of unknown size), which leaves it to the broker's default."""
        if configured:
            return configured
        return min(len(self.urls), MAX_QUORUM_GROUP_SIZE) if len(self.urls) > 1 else None

    def attempt(self, open_: Callable[[str], T]) -> T:
        """`open_(url)` on the current node; when it fails, the next attempt tries the next."""
        with self._lock:
            index = self._current
        try:
            return open_(self.urls[index])
        except Exception:
            if len(self.urls) > 1:
                with self._lock:
                    if self._current == index:
                        self._current = (index + 1) % len(self.urls)
                log.info("RabbitMQ node did not answer; the next attempt tries the next node",
                         extra={"node": index, "next": self._current})  # fmt: skip
            raise


def parameters(url: str, role: str, attempt_s: float = CONNECT_ATTEMPT_S) -> Any:
    """Connection parameters for `url`; one attempt to connect takes at most `attempt_s`."""
    params = pika.URLParameters(url)
    params.socket_timeout = params.stack_timeout = attempt_s
    if "heartbeat=" not in url:
        params.heartbeat = HEARTBEAT_S
    # Named connections let an operator tell publishers from consumers in the management UI.
    params.client_properties = {"connection_name": f"hookline {role}"}
    return params


def _socket_lost(exc: BaseException) -> bool:
    """pika's stream connector checks the fresh socket with `getpeername()` and turns its
    `OSError` into a `ValueError`: a peer that closes between the TCP connect and that check
    (a broker going down, a proxy refusing) reaches us as a `ValueError` raised while
    handling the socket's error."""
    return isinstance(exc, ValueError) and isinstance(exc.__context__, OSError)


def is_transient(exc: BaseException) -> bool:
    """Whether trying again may work: the broker was away, not refusing us."""
    if _socket_lost(exc):
        return True
    if isinstance(exc, amqp.ConnectionClosedByBroker):
        return exc.reply_code not in (ACCESS_REFUSED, NOT_ALLOWED)
    if isinstance(exc, AMQPConnectorException | OSError):  # a stack timeout, DNS, a reset
        return True
    return isinstance(exc, amqp.AMQPConnectionError) and not isinstance(exc, _REFUSED)


def is_broker_error(exc: BaseException) -> bool:
    """An error of pika or of the socket under it, which must not leave this package."""
    return isinstance(exc, amqp.AMQPError | AMQPConnectorException | OSError) or _socket_lost(exc)


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
