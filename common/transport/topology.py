"""Every exchange and queue name Hookline uses, and the topology built from them.

Names come only from here. Each service declares the whole topology at start (idempotent),
so any one of them can come up first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

EVENTS = "hookline.events"
DELIVERIES = "hookline.deliveries"
RETRY = "hookline.retry"
DEAD = "hookline.dead"
POISON = "hookline.poison"

DELIVERY_ROUTING_KEY = "delivery"
# A message handed out this many times goes to the poison queue. RabbitMQ counts every
# return, including those of a closed or cancelled consumer (each restart, each outage), so
# the limit is generous: handlers catch their own crashes, this is only the last resort.
DELIVERY_LIMIT = 20

# Headers Hookline puts on messages it moves between queues.
H_REASON = "x-hookline-reason"
H_ERROR = "x-hookline-error"
H_SOURCE_QUEUE = "x-hookline-source-queue"
H_RECHECK = "x-hookline-recheck"

# How many nodes of a RabbitMQ cluster hold a replica of each quorum queue. Applied at
# creation only: RabbitMQ keeps an existing queue's members (`rabbitmq-queues grow`).
QUORUM_GROUP_SIZE = "x-quorum-initial-group-size"
MAX_QUORUM_GROUP_SIZE = 5  # a majority of 5 rides out two lost nodes; more only slows writes

ExchangeKind = Literal["topic", "direct", "fanout"]


@dataclass(frozen=True)
class Exchange:
    name: str
    kind: ExchangeKind


@dataclass(frozen=True)
class Queue:
    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    bindings: tuple[tuple[str, str], ...] = ()  # (exchange, routing key)

    @property
    def ttl_ms(self) -> int | None:
        ttl = self.arguments.get("x-message-ttl")
        return int(ttl) if ttl is not None else None


@dataclass(frozen=True)
class Topology:
    exchanges: tuple[Exchange, ...]
    queues: tuple[Queue, ...]

    def queue(self, name: str) -> Queue:
        for queue in self.queues:
            if queue.name == name:
                return queue
        raise KeyError(name)


def tier_name(delay_s: float) -> str:
    """A short, stable name for a delay tier: 5s, 5m, 2h, 1500ms."""
    ms = round(delay_s * 1000)
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def retry_queue(delay_s: float) -> str:
    return f"{RETRY}.{tier_name(delay_s)}"


def build(retry_delays_s: tuple[float, ...]) -> Topology:
    """The topology for a retry schedule: one TTL queue per distinct delay.

    Each delay gets its own queue with a fixed `x-message-ttl`, because RabbitMQ expires
    messages head-first: per-message TTLs in one shared queue would hold short delays behind
    long ones.
    """
    quorum = {"x-queue-type": "quorum"}
    poisoned = {
        **quorum,
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": POISON,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    queues = [
        Queue(EVENTS, poisoned, ((EVENTS, "#"),)),
        Queue(DELIVERIES, poisoned, ((DELIVERIES, DELIVERY_ROUTING_KEY),)),
        Queue(DEAD, quorum, ((DEAD, ""),)),
        Queue(POISON, quorum, ((POISON, ""),)),
    ]
    for delay_s in sorted(set(retry_delays_s)):
        tier = tier_name(delay_s)
        arguments = {
            **quorum,
            "x-message-ttl": round(delay_s * 1000),
            "x-dead-letter-exchange": DELIVERIES,
            "x-dead-letter-routing-key": DELIVERY_ROUTING_KEY,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
        queues.append(Queue(retry_queue(delay_s), arguments, ((RETRY, tier),)))
    exchanges = (
        Exchange(EVENTS, "topic"),
        Exchange(DELIVERIES, "direct"),
        Exchange(RETRY, "direct"),
        Exchange(DEAD, "fanout"),
        Exchange(POISON, "fanout"),
    )
    return Topology(exchanges, tuple(queues))


def with_quorum_group_size(plan: Topology, size: int | None) -> Topology:
    """`plan` with every quorum queue created on `size` nodes (None: the broker's default)."""
    if size is None:
        return plan
    queues = tuple(
        replace(q, arguments={**q.arguments, QUORUM_GROUP_SIZE: size})
        if q.arguments.get("x-queue-type") == "quorum"
        else q
        for q in plan.queues
    )
    return replace(plan, queues=queues)
