"""`Producer`: builds wire events and publishes them to `hookline.events`, confirmed.

An id is returned only after the broker confirmed the message, so a caller that got one
can rely on the event being delivered (at least once) or dead-lettered, never lost.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from common import payload
from common.errors import PublishError, TransportError
from common.metrics import Metrics
from common.settings import Settings
from common.transport import Outgoing, Transport, open_transport, topology
from common.wire import Event, WireEvent, encode, encode_fields, timestamp_problem
from producer.errors import InvalidEvent
from producer.window import LoopWindow

EventLike = Event | Mapping[str, Any]


def _aware_utc(timestamp: datetime) -> datetime:
    # The database stores UTC-aware datetimes only; guessing a naive value's zone would
    # silently shift it, so the caller has to say.
    if timestamp.tzinfo is None or timestamp.utcoffset() is None:
        raise InvalidEvent("invalid event: timestamp: must carry a timezone (e.g. UTC)")
    try:
        in_utc = timestamp.astimezone(UTC)
    except OverflowError:
        raise InvalidEvent("invalid event: timestamp: out of range once in UTC") from None
    problem = timestamp_problem(in_utc)
    if problem is not None:
        raise InvalidEvent(f"invalid event: timestamp: {problem}")
    return in_utc


def build_event(fields: Mapping[str, Any], *, where: str = "") -> Event:
    """A validated `Event` from its fields; omitted `id` and `timestamp` are generated."""
    present = {key: value for key, value in fields.items() if value is not None}
    try:
        event = Event.model_validate(present)
    except ValidationError as exc:
        raise InvalidEvent.from_validation(exc, where=where) from None
    return in_utc(event, where=where)


def in_utc(event: Event, *, where: str = "") -> Event:
    """The event with its timestamp in UTC (a copy only when it is not already), once its
    data is known to be what the router can store (the API's check, `common.payload`)."""
    try:
        payload.check(event.data, "data")
    except payload.UnstorableValue as exc:
        raise InvalidEvent(f"invalid event{where}: {exc}") from None
    aware = _aware_utc(event.timestamp)
    return (
        event
        if aware.utcoffset() == event.timestamp.utcoffset()
        else event.model_copy(update={"timestamp": aware})
    )


def _outgoing(event: Event) -> Outgoing:
    try:
        body = encode(event)
    except PydanticSerializationError as exc:
        raise InvalidEvent(f"invalid event: data is not JSON-serialisable: {exc}") from None
    return Outgoing(
        exchange=topology.EVENTS, routing_key=event.type, body=body, message_id=event.id
    )


class Producer:
    """Publishes events with publisher confirms. Thread-safe; use as a context manager.

    The topology is declared on first use rather than in the constructor, so a process can
    start while the broker is still coming up and report that through its readiness check.
    """

    def __init__(
        self,
        settings: Settings,
        transport: Transport | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._owns_transport = transport is None
        if transport is None:
            transport = open_transport(
                settings.broker_url, quorum_group_size=settings.quorum_group_size
            )
        self._transport = transport
        self._topology = topology.build(settings.retry_tiers_s)
        self._metrics = metrics
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
        return self._send([self._prepare(fields)])[0]

    async def publish_async(
        self,
        type: str,
        data: Mapping[str, Any] | None = None,
        *,
        tenant: str,
        id: str | None = None,
        operation: str | None = None,
        timestamp: datetime | None = None,
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
        return (await self._send_async([self._prepare(fields)]))[0]

    async def publish_batch_async(self, events: Sequence[EventLike]) -> list[str]:
        """`publish_batch` for an event loop."""
        prepared = [self._prepare(item, where=f" #{n}") for n, item in enumerate(events)]
        return await self._send_async(prepared)

    async def publish_fields_async(self, events: Sequence[WireEvent]) -> list[str]:
        """`publish_batch_async` for events whose fields the caller has validated as an
        `Event`'s, timestamps in UTC (the API, against its schema): no model is built."""
        messages = [
            Outgoing(
                topology.EVENTS, fields["type"], encode_fields(fields), message_id=fields["id"]
            )
            for fields in events
        ]
        return await self._send_async(messages)

    def publish_batch(self, events: Sequence[EventLike]) -> list[str]:
        """Publish several events in one confirmed window; all are validated first.

        Items are `Event`s (already validated: used as they are) or mappings of their
        fields (including `tenant`). When any is invalid, `InvalidEvent` names it and
        nothing is published.
        """
        return self._send([self._prepare(item, where=f" #{n}") for n, item in enumerate(events)])

    def _prepare(self, item: EventLike, *, where: str = "") -> Outgoing:
        try:
            if isinstance(item, Event):
                event = in_utc(item, where=where)
            else:
                event = build_event(item, where=where)
            return _outgoing(event)
        except InvalidEvent:
            self._count("rejected")
            raise

    def _send(self, messages: list[Outgoing]) -> list[str]:
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

    async def _send_async(self, messages: list[Outgoing]) -> list[str]:
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
