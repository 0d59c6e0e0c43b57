"""`Producer`: builds wire events and publishes them to `hookline.events`, confirmed.

An id is returned only after the broker confirmed the message, so a caller that got one
can rely on the event being delivered (at least once) or dead-lettered, never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

from common.errors import PublishError, TransportError
from common.metrics import Metrics
from common.settings import Settings
from common.tracing import TraceContext
from common.transport import Outgoing, Transport, open_transport, topology
from common.wire import Event, WireEvent, encode_fields
from producer.errors import InvalidEvent
from producer.messages import EventLike, build_event, carrying, checked, outgoing, trace_context
from producer.window import LoopWindow

if TYPE_CHECKING:
    from common.tracing import Tracing


class Producer:
    """Publishes events with publisher confirms. Thread-safe; use as a context manager.

    The topology is declared on first use rather than in the constructor, so a process can
    start while the broker is still coming up and report that through its readiness check.

    Tracing: a `traceparent` (and `tracestate`) given to a publish makes the events its
    children; with `tracing` (`common.tracing.configure`), each publish is a span of its
    own, a child of that context or else of the caller's current span, and the events
    carry it. Without either, nothing is added to the messages.
    """

    def __init__(
        self,
        settings: Settings,
        transport: Transport | None = None,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._owns_transport = transport is None
        if transport is None:
            transport = open_transport(
                settings.broker_url, quorum_group_size=settings.quorum_group_size
            )
        self._transport = transport
        self._topology = topology.build(settings.retry_tiers_s)
        self._metrics = metrics
        self._tracing = tracing
        self._timeout_s = settings.publish_timeout_s
        self._declared = False
        self._declare_lock = threading.Lock()
        self._window: LoopWindow | None = None  # of the loop that last published

    @property
    def transport(self) -> Transport:
        return self._transport

    def declare_topology(self) -> None:
        """Declare every exchange and queue once; later calls cost nothing."""
        if self._declared:
            return
        with self._declare_lock:
            if not self._declared:
                self._transport.declare(self._topology)
                self._declared = True

    def publish(
        self,
        type: str,
        data: Mapping[str, Any] | None = None,
        *,
        tenant: str,
        id: str | None = None,
        operation: str | None = None,
        timestamp: datetime | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> str:
        """Publish one event and return its id once the broker confirmed it.

        Raises `InvalidEvent` (nothing published) or a `TransportError` (not accepted:
        publish again with the same `id`; the router drops duplicates).
        """
        fields = {
            "type": type,
            "data": dict(data) if data is not None else {},
            "tenant": tenant,
            "id": id,
            "operation": operation,
            "timestamp": timestamp,
        }
        context = trace_context(traceparent, tracestate)
        return self._send([self._prepare(fields)], context)[0]

    async def publish_async(
        self,
        type: str,
        data: Mapping[str, Any] | None = None,
        *,
        tenant: str,
        id: str | None = None,
        operation: str | None = None,
        timestamp: datetime | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> str:
        """`publish` for an event loop: it waits for the confirm without holding a thread,
        so concurrent requests' events ride in the same confirm window."""
        fields = {
            "type": type,
            "data": dict(data) if data is not None else {},
            "tenant": tenant,
            "id": id,
            "operation": operation,
            "timestamp": timestamp,
        }
        context = trace_context(traceparent, tracestate)
        return (await self._send_async([self._prepare(fields)], context))[0]

    async def publish_batch_async(
        self,
        events: Sequence[EventLike],
        *,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> list[str]:
        """`publish_batch` for an event loop."""
        context = trace_context(traceparent, tracestate)
        prepared = [self._prepare(item, where=f" #{n}") for n, item in enumerate(events)]
        return await self._send_async(prepared, context)

    async def publish_fields_async(
        self, events: Sequence[WireEvent], trace: TraceContext | None = None
    ) -> list[str]:
        """`publish_batch_async` for events whose fields the caller has validated as an
        `Event`'s, timestamps in UTC (the API, against its schema): no model is built.
        `trace` is a context the caller checked (the API's ingest span)."""
        messages = [
            Outgoing(
                topology.EVENTS, fields["type"], encode_fields(fields), message_id=fields["id"]
            )
            for fields in events
        ]
        return await self._send_async(messages, trace)

    def publish_batch(
        self,
        events: Sequence[EventLike],
        *,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> list[str]:
        """Publish several events in one confirmed window; all are validated first.

        Items are `Event`s (already validated: used as they are) or mappings of their
        fields (including `tenant`). When any is invalid, `InvalidEvent` names it and
        nothing is published.
        """
        context = trace_context(traceparent, tracestate)
        prepared = [self._prepare(item, where=f" #{n}") for n, item in enumerate(events)]
        return self._send(prepared, context)

    def _prepare(self, item: EventLike, *, where: str = "") -> Outgoing:
        try:
            if isinstance(item, Event):
                event = checked(item, where=where)
            else:
                event = build_event(item, where=where)
            return outgoing(event)
        except InvalidEvent:
            self._count("rejected")
            raise

    def _send(self, messages: list[Outgoing], context: TraceContext | None) -> list[str]:
        if self._tracing is None:
            return self._confirm(carrying(messages, context))
        with self._span(context, len(messages)) as carried:
            return self._confirm(carrying(messages, carried))

    async def _send_async(
        self, messages: list[Outgoing], context: TraceContext | None
    ) -> list[str]:
        if self._tracing is None:
            return await self._confirm_async(carrying(messages, context))
        with self._span(context, len(messages)) as carried:
            return await self._confirm_async(carrying(messages, carried))

    @contextlib.contextmanager
    def _span(self, context: TraceContext | None, events: int) -> Iterator[TraceContext]:
        """The publish span (tracing on), whose context the events carry."""
        assert self._tracing is not None
        span = self._tracing.publish(context, events=events)
        try:
            yield span.context
        except BaseException as exc:
            span.fail(type(exc).__name__)
            raise
        finally:
            span.end()

    def _confirm(self, messages: list[Outgoing]) -> list[str]:
        if not messages:
            return []
        try:
            self.declare_topology()
            self._transport.publish(messages, timeout_s=self._timeout_s)
        except TransportError:
            self._count("failed", len(messages))
            raise
        self._count("accepted", len(messages))
        return [str(message.message_id) for message in messages]

    async def _confirm_async(self, messages: list[Outgoing]) -> list[str]:
        if not messages:
            return []
        try:
            if not self._declared:  # declaring opens a connection of its own: not on the loop
                await asyncio.to_thread(self.declare_topology)
            confirmed = self._loop_window().publish(messages, self._timeout_s)
            try:
                async with asyncio.timeout(self._timeout_s):
                    await confirmed
            except TimeoutError:
                raise PublishError(f"no confirm for {len(messages)} message(s) in time") from None
        except TransportError:
            self._count("failed", len(messages))
            raise
        self._count("accepted", len(messages))
        return [str(message.message_id) for message in messages]

    def _loop_window(self) -> LoopWindow:
        loop = asyncio.get_running_loop()
        window = self._window
        if window is None or not window.serves(loop):
            # A server has one loop; a test client may start one per request.
            window = self._window = LoopWindow(self._transport, loop)
        return window

    def _count(self, result: str, amount: int = 1) -> None:
        if self._metrics is not None:
            self._metrics.events_ingested.labels(result=result).inc(amount)

    def close(self) -> None:
        """Close the transport if this producer opened it; a given one stays open."""
        if self._owns_transport:
            self._transport.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
