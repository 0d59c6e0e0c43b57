"""The route spans of one batch, when the router traces: one per event, child of the context
its message carried (a trace of its own when it carried none).

Each span's context goes onto the event's delivery messages, so every attempt is a child of
the route that produced it, and into the event's row (`traceparent`), so a replay of its
deliveries joins the same trace. The router builds this only when it has a `Tracing`:
without one, a batch costs nothing here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from common.tracing import TRACEPARENT, from_headers
from common.tracing import names as trace
from common.transport import Message, Outgoing
from common.wire import Event

if TYPE_CHECKING:
    from common.tracing import Span, Tracing

Key = tuple[str, str]  # (tenant, event id)


class RouteSpans:
    def __init__(self, tracing: Tracing, decoded: Sequence[tuple[Message, Event]]) -> None:
        start_ns = time.time_ns()
        self._spans: dict[Key, Span] = {}
        for message, event in decoded:
            key = (event.tenant, event.id)
            if key in self._spans:  # a repeat within the batch is routed once
                continue
            self._spans[key] = tracing.route(
                from_headers(message.headers),
                event_id=event.id,
                tenant=event.tenant,
                event_type=event.type,
                batch=len(decoded),
                start_ns=start_ns,
            )
        self._headers = {key: span.context.headers() for key, span in self._spans.items()}

    def traceparents(self) -> dict[Key, str]:
        """Each event's route context, as its row stores it."""
        return {key: headers[TRACEPARENT] for key, headers in self._headers.items()}

    def carried(self, outgoing: Sequence[Outgoing], events: Sequence[Event]) -> list[Outgoing]:
        """The delivery messages (one per event in `events`) with their event's context."""
        counts = dict.fromkeys(self._spans, 0)
        carried = []
        for message, event in zip(outgoing, events, strict=True):
            key = (event.tenant, event.id)
            counts[key] += 1
            headers = {**message.headers, **self._headers[key]}
            carried.append(
                Outgoing(
                    message.exchange,
                    message.routing_key,
                    message.body,
                    headers,
                    message.message_id,
                )
            )
        for key, count in counts.items():
            self._spans[key].set({trace.DELIVERIES: count})
        return carried

    def end(self, error: BaseException | None = None) -> None:
        """End every span: the batch's deliveries are confirmed, or it failed."""
        for span in self._spans.values():
            if error is not None:
                span.fail(type(error).__name__)
            span.end()
