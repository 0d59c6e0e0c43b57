"""The delivery messages the router publishes, built from their parts without a model."""

from __future__ import annotations

import json
from dataclasses import dataclass

from common.wire import Event


@dataclass(frozen=True)
class Routed:
    """One delivery message to publish: `body` is its `DeliveryMessage` (attempt 1)."""

    delivery_id: str
    event: Event
    body: bytes
    recheck: bool  # published before: the dispatcher must look at the row first


class EventMessages:
    """The delivery messages of one event, its JSON encoded once for all of them.

    Byte for byte what `encode(DeliveryMessage(..., attempt=1, event=event))` gives (a
    test in tests/router holds the two together): the model is built and serialised per
    delivery otherwise, which is a large share of the router's CPU with many targets.
    """

    def __init__(self, event: Event) -> None:
        self._event = event
        self._event_id = _string(event.id)
        self._tenant = _string(event.tenant)
        self._json = event.model_dump_json().encode()

    def to(self, delivery_id: str, subscription_id: str, *, recheck: bool) -> Routed:
        body = b"".join((
            b'{"delivery_id":', _string(delivery_id), b',"event_id":', self._event_id,
            b',"tenant":', self._tenant, b',"subscription_id":', _string(subscription_id),
            b',"attempt":1,"event":', self._json, b',"first_attempt_at":null,"replay":false}',
        ))  # fmt: skip
        return Routed(delivery_id, self._event, body, recheck)


def _string(value: str) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()
