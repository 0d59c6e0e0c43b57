"""One HTTP attempt: check the target, sign at send time, POST, read a bounded answer.

Every attempt ends in a `SendResult`, whatever happens inside (timeouts, refused
connections, a bug here): the caller always has something to record.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from common.errors import UnsafeTargetError
from common.settings import Settings
from common.ssrf import CachingResolver, Resolver, Target, check_url, system_resolver
from common.tracing import TraceContext
from common.wire import DeliveryMessage, utcnow, webhook_id_for
from dispatcher.http.exchange import DeadlineExceeded, ProtocolError
from dispatcher.http.pool import Pools
from dispatcher.http.request import build_headers, request_bytes, request_target, webhook_body
from dispatcher.http.shape import HeaderShape, header_shape
from dispatcher.subscriptions import Endpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendResult:
    status_code: int | None  # None: no response (refused, timed out before the status line)
    duration_s: float
    error: str | None = None  # set when the attempt failed short of a complete response
    body: bytes = b""  # at most max_response_bytes
    truncated: bool = False
    retry_after: str | None = None
    unsafe: bool = False  # the SSRF guard refused the URL
    deferred: bool = False  # the gate held the attempt back; nothing was sent
    # Set once the request was signed (sent, or tried): when (its `webhook-timestamp` in
    # whole seconds), and the shape of its headers.
    signed_at: datetime | None = None
    shape: HeaderShape | None = None

    @property
    def complete(self) -> bool:
        return self.error is None and self.status_code is not None


class Gate(Protocol):
    """Admission per endpoint around a POST; the dispatcher's is `EndpointGate`
    (`dispatcher/policy/admission/`), which decides; the sender only asks."""

    def enter(self, endpoint: Endpoint) -> bool:
        """False defers the delivery without an attempt."""

    def leave(self, endpoint: Endpoint, result: SendResult) -> None: ...


class OpenGate:
    """Lets everything through: the gate of a sender without admission control (a sender
    built on its own, as tests and benchmarks do); the dispatcher passes its `EndpointGate`."""

    def enter(self, endpoint: Endpoint) -> bool:
        return True

    def leave(self, endpoint: Endpoint, result: SendResult) -> None:
        return None


class Sender:
    """Thread-safe: the sending threads share keep-alive pools, one per checked address."""

    def __init__(
        self,
        settings: Settings,
        *,
        gate: Gate | None = None,
        resolver: Resolver | None = None,
        verify: bool | str = True,
    ) -> None:
        self._settings = settings
        self._gate: Gate = gate or OpenGate()
        # The system's answers, remembered briefly (see CachingResolver); an injected
        # resolver (tests) is asked every time.
        self._resolver = resolver or CachingResolver(system_resolver)
        self._verify = verify
        # One connection per sending thread and target at most, kept alive between POSTs.
        # Through the egress proxy, if one is set: pools still hold one target's tunnels.
        self._pools = Pools(
            verify=verify, maxsize=settings.dispatcher_concurrency, proxy=settings.proxy
        )

    def send(
        self, endpoint: Endpoint, delivery: DeliveryMessage, trace: TraceContext | None = None
    ) -> SendResult:
        """One POST; `trace`, when given, goes out as the request's `traceparent`."""
        started = time.monotonic()
        settings = self._settings
        try:
            target = check_url(
                endpoint.url,
                allow_private=settings.allow_private_targets,
                allow_http=settings.allow_http,
                resolver=self._resolver,
            )
        except UnsafeTargetError as exc:
            return SendResult(
                None, time.monotonic() - started, f"unsafe target: {exc}", unsafe=True
            )
        if not self._gate.enter(endpoint):
            return SendResult(None, 0.0, deferred=True)
        result = SendResult(None, 0.0, "not sent")
        try:
            result = self._post(target, endpoint, delivery, started, trace)
        except Exception as exc:
            # A bug here must still end as a recorded, retried attempt, never a lost message.
            log.exception("sender failed", extra={"delivery_id": delivery.delivery_id})
            result = SendResult(None, time.monotonic() - started, f"internal error: {exc!r}")
        finally:
            self._gate.leave(endpoint, result)
        return result

    def _post(
        self,
        target: Target,
        endpoint: Endpoint,
        delivery: DeliveryMessage,
        started: float,
        trace: TraceContext | None,
    ) -> SendResult:
        settings = self._settings
        body = webhook_body(delivery.event)
        # One clock reading for the signature's timestamp and the attempt's recorded time,
        # so the portal shows the `webhook-timestamp` that was sent without storing it.
        signed_at = utcnow()
        secrets = endpoint.secrets_at(signed_at)
        msg_id = webhook_id_for(delivery.tenant, delivery.event_id)
        headers = build_headers(
            endpoint.headers, msg_id, int(signed_at.timestamp()), body, secrets, trace
        )
        path, host = request_target(target)
        try:
            request = request_bytes(path, host, headers, body)
        except ValueError as exc:
            return SendResult(None, time.monotonic() - started, f"invalid request: {exc}"[:500])
        shape = header_shape(headers)
        pool = self._pools.get(target.scheme, target.address, target.port, target.host)
        try:
            response = pool.request(
                request,
                connect_timeout_s=settings.connect_timeout_s,
                deadline_at=started + settings.request_timeout_s,
                limit=settings.max_response_bytes,
            )
        except (DeadlineExceeded, TimeoutError):
            timeout = self._timeout_message()
            return SendResult(
                None, time.monotonic() - started, timeout, signed_at=signed_at, shape=shape
            )
        except (ProtocolError, OSError) as exc:
            failure = f"connection failed: {type(exc).__name__}: {exc}"[:500]
            return SendResult(
                None, time.monotonic() - started, failure, signed_at=signed_at, shape=shape
            )
        return SendResult(
            response.status,
            time.monotonic() - started,
            self._timeout_message() if response.timed_out else response.error,
            response.body,
            response.truncated,
            response.headers.get("retry-after"),
            signed_at=signed_at,
            shape=shape,
        )

    def _timeout_message(self) -> str:
        return f"timeout: no complete response within {self._settings.request_timeout_s:g} s"

    def close(self) -> None:
        self._pools.close()
