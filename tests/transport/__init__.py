"""The transport contract suite: shared test topology and bounded-wait helpers.

Kept here (not in conftest) so test modules can import them relatively in either package
layout, with or without a `tests/__init__.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from common.transport import Message
from common.transport.topology import EVENTS, Queue, Topology, build

# The production topology with a 200 ms retry tier, plus one queue to observe topic routing.
ORDERS = "test.orders"
RETRY_DELAY_S = 0.2
_base = build((RETRY_DELAY_S,))
TOPOLOGY = Topology(
    _base.exchanges,
    (*_base.queues, Queue(ORDERS, {"x-queue-type": "quorum"}, ((EVENTS, "order.*"),))),
)

Stream = Iterator[Message | None]


def take(stream: Stream, count: int, timeout_s: float = 5.0) -> list[Message]:
    """The next `count` messages from `stream`; fails if they do not all arrive in time."""
    deadline = time.monotonic() + timeout_s
    taken: list[Message] = []
    while len(taken) < count:
        assert time.monotonic() < deadline, f"got {len(taken)} of {count} messages in {timeout_s} s"
        message = next(stream)
        if message is not None:
            taken.append(message)
    return taken


def idle(stream: Stream, duration_s: float = 0.3) -> list[Message]:
    """Keep pumping `stream` for `duration_s`; returns whatever arrived meanwhile."""
    deadline = time.monotonic() + duration_s
    arrived: list[Message] = []
    while time.monotonic() < deadline:
        message = next(stream)
        if message is not None:
            arrived.append(message)
    return arrived


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"condition not met in {timeout_s} s"
        time.sleep(0.02)
