"""One HTTP attempt: check the target, sign at send time, POST, read a bounded answer.

Every attempt ends in a `SendResult`, whatever happens inside (timeouts, refused
connections, a bug here): the caller always has something to record.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from urllib3 import Timeout
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.response import BaseHTTPResponse

from common import __version__
from common.errors import UnsafeTargetError
from common.settings import Settings
from common.signing import signature_header
from common.ssrf import Resolver, Target, check_url, system_resolver
from common.wire import DeliveryMessage, Event, utcnow
from dispatcher.connection import Deadline, Pools, Watchdog
from dispatcher.subscriptions import Endpoint

log = logging.getLogger(__name__)

USER_AGENT = f"Hookline/{__version__}"
READ_CHUNK_BYTES = 64 * 1024
# Headers Hookline owns; a subscription's static headers cannot replace them.
RESERVED_HEADERS = frozenset(
    {
        "webhook-id", "webhook-timestamp", "webhook-signature", "content-type",
        "content-length", "transfer-encoding", "user-agent", "host", "connection",
    }
)  # fmt: skip


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

    @property
    def complete(self) -> bool:
        return self.error is None and self.status_code is not None


class Gate(Protocol):
    """Admission per endpoint (in-flight cap, circuit breaker, rate limit) around a POST."""

    def enter(self, endpoint: Endpoint) -> bool:
        """False defers the delivery without an attempt."""

    def leave(self, endpoint: Endpoint, result: SendResult) -> None: ...


class OpenGate:
    """Lets everything through: the gate until per-endpoint isolation exists."""

    def enter(self, endpoint: Endpoint) -> bool:
        return True

    def leave(self, endpoint: Endpoint, result: SendResult) -> None:
        return None


def webhook_body(event: Event) -> bytes:
    return json.dumps(event.webhook_body(), separators=(",", ":")).encode()


def build_headers(
    static: Mapping[str, str],
    msg_id: str,
    timestamp: int,
    body: bytes,
    secrets: Sequence[str],
) -> dict[str, str]:
    """The request headers: the subscription's own first, then the ones Hookline owns."""
    headers = {k: v for k, v in static.items() if k.lower() not in RESERVED_HEADERS}
    headers.update(
        {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }
    )
    return headers


def request_target(target: Target) -> tuple[str, str]:
    """The path (with query, without fragment) to request, and the Host header value."""
    parts = urlsplit(target.url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = f"[{target.host}]" if ":" in target.host else target.host
    if target.port != (443 if target.scheme == "https" else 80):
        host = f"{host}:{target.port}"
    return path, host


class Sender:
    """Thread-safe: the sending threads share keep-alive pools, one per checked address."""

    def __init__(
        self,
        settings: Settings,
        *,
        gate: Gate | None = None,
        resolver: Resolver = system_resolver,
        verify: bool | str = True,
    ) -> None:
        self._settings = settings
        self._gate: Gate = gate or OpenGate()
        self._resolver = resolver
        self._verify = verify
        self._watchdog = Watchdog()
        # One connection per sending thread and target at most, kept alive between POSTs.
        self._pools = Pools(verify=verify, maxsize=settings.dispatcher_concurrency)
        self._timeout = Timeout(connect=settings.connect_timeout_s, read=settings.request_timeout_s)

    def send(self, endpoint: Endpoint, delivery: DeliveryMessage) -> SendResult:
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
            result = self._post(target, endpoint, delivery, started)
        except Exception as exc:
            # A bug here must still end as a recorded, retried attempt, never a lost message.
            log.exception("sender failed", extra={"delivery_id": delivery.delivery_id})
            result = SendResult(None, time.monotonic() - started, f"internal error: {exc!r}")
        finally:
            self._gate.leave(endpoint, result)
        return result

    def _post(
        self, target: Target, endpoint: Endpoint, delivery: DeliveryMessage, started: float
    ) -> SendResult:
        settings = self._settings
        body = webhook_body(delivery.event)
        timestamp = int(time.time())
        secrets = endpoint.secrets_at(utcnow())
        headers = build_headers(endpoint.headers, delivery.event_id, timestamp, body, secrets)
        path, headers["host"] = request_target(target)
        pool = self._pools.get(target.scheme, target.address, target.port, target.host)
        deadline_at = started + settings.request_timeout_s
        with self._watchdog.guard(deadline_at) as deadline:
            try:
                response = pool.urlopen(
                    "POST", path, body=body, headers=headers, retries=False, redirect=False,
                    timeout=self._timeout, preload_content=False, decode_content=False,
                    release_conn=False, assert_same_host=False,
                )  # fmt: skip
            except (Urllib3Error, OSError) as exc:
                return SendResult(None, time.monotonic() - started, self._failure(exc, deadline))
            content, truncated, complete = b"", False, False
            error: str | None = None
            try:
                content, truncated, complete = _read_capped(
                    response, deadline_at, settings.max_response_bytes
                )
                if not complete:
                    error = self._timeout_message()
            except (Urllib3Error, OSError) as exc:
                error = self._failure(exc, deadline)
            finally:
                _release(response, reusable=complete and not truncated)
        return SendResult(
            response.status,
            time.monotonic() - started,
            error,
            content,
            truncated,
            response.headers.get("retry-after"),
        )

    def _failure(self, exc: BaseException, deadline: Deadline) -> str:
        # urllib3 derives a refused connection (NewConnectionError) from its timeout class.
        timed_out = isinstance(exc, Urllib3Timeout) and not isinstance(exc, NewConnectionError)
        if deadline.expired or timed_out:
            return self._timeout_message()
        return f"connection failed: {type(exc).__name__}: {exc}"[:500]

    def _timeout_message(self) -> str:
        return f"timeout: no complete response within {self._settings.request_timeout_s:g} s"

    def close(self) -> None:
        self._pools.close()
        self._watchdog.close()


def _read_capped(
    response: BaseHTTPResponse, deadline_at: float, limit: int
) -> tuple[bytes, bool, bool]:
    """(body, truncated, complete): read until the end, `limit` bytes or the deadline."""
    chunks: list[bytes] = []
    size = 0
    while True:
        if time.monotonic() >= deadline_at:
            return b"".join(chunks), False, False
        # One byte past the limit tells a body of exactly `limit` bytes from a longer one.
        chunk = response.read1(min(READ_CHUNK_BYTES, limit + 1 - size))
        if not chunk:
            return b"".join(chunks), False, True
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks)[:limit], True, True


def _release(response: BaseHTTPResponse, *, reusable: bool) -> None:
    """Give the connection back to the pool, closed unless the answer was read to its end."""
    if not reusable:
        response.close()
    response.release_conn()
