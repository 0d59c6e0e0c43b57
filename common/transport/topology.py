"""Every exchange and queue name Hookline uses, and the topology built from them.

Names come only from here. Each service declares the whole topology at start (idempotent),
so any one of them can come up first.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

EVENTS = "hookline.events"
DELIVERIES = "hookline.deliveries"
# Fair delivery (architecture §3): the deliveries exchange forwards to this headers
# exchange, which routes each message to the shard queue its `H_SHARD` header names;
# a message without one (published before the upgrade, or a replay) goes through the
# alternate exchange to the unsharded `DELIVERIES` queue, which dispatchers drain too.
SHARDS = "hookline.shards"
UNSHARDED = "hookline.unsharded"
DEFAULT_SHARDS = 8
# Deliveries per second a tenant puts in its own shard, per publishing process, before the
# rest spill to the overflow shard (`spill.py`; `HOOKLINE_DELIVERY_SHARE_PER_S`).
DEFAULT_SHARE_PER_S = 100
# The shard a tenant over its fair share spills into (spill.py): served as one more
# shard, so a burst there takes one turn, and the tenants hashed beside it keep theirs.
OVERFLOW_SHARD = "overflow"
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
# Not `x-` like the others: a headers exchange ignores binding arguments that start so.
H_SHARD = "hookline-shard"

# How many nodes of a RabbitMQ cluster hold a replica of each quorum queue. Applied at
# creation only: RabbitMQ keeps an existing queue's members (`rabbitmq-queues grow`).
QUORUM_GROUP_SIZE = "x-quorum-initial-group-size"
MAX_QUORUM_GROUP_SIZE = 5  # a majority of 5 rides out two lost nodes; more only slows writes

ExchangeKind = Literal["topic", "direct", "fanout", "headers"]


@dataclass(frozen=True)
class Exchange:
    name: str
    kind: ExchangeKind
    arguments: Mapping[str, Any] = field(default_factory=dict)
    bindings: tuple[tuple[str, str], ...] = ()  # (source exchange, routing key)


@dataclass(frozen=True)
class Queue:
    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    bindings: tuple[tuple[str, str], ...] = ()  # (exchange, routing key)
    # The header match of every binding (for a headers exchange), e.g. {"x-match": "all"}.
    match: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ttl_ms(self) -> int | None:
        ttl = self.arguments.get("x-message-ttl")
        return int(ttl) if ttl is not None else None


@dataclass(frozen=True)
class Topology:
    exchanges: tuple[Exchange, ...]
    queues: tuple[Queue, ...]
    # Bindings of earlier releases to remove: (queue, exchange, routing key).
    unbindings: tuple[tuple[str, str, str], ...] = ()

    @property
    def delivery_queues(self) -> tuple[str, ...]:
        """What a dispatcher consumes: every shard, then the unsharded queue."""
        shards = [q.name for q in self.queues if q.name.startswith(f"{DELIVERIES}.")]
        return (*shards, DELIVERIES)

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


def shard_queue(shard: int | str) -> str:
    return f"{DELIVERIES}.{shard}"


def is_delivery_queue(name: str) -> bool:
    """A queue dispatchers take deliveries from: a shard, the overflow shard, or the
    unsharded queue (`Topology.delivery_queues` for one shard count)."""
    return name == DELIVERIES or name.startswith(f"{DELIVERIES}.")


def shard_of(tenant: str, shards: int) -> int:
    """The shard a tenant's deliveries go to: a hash that every process and release agrees
    on (Python's own `hash` is salted per process)."""
    return zlib.crc32(tenant.encode()) % shards


def shard_headers(tenant: str, shards: int, *, spill: bool = False) -> dict[str, str]:
    """The headers that route a delivery message to its tenant's shard, or to the overflow
    shard when the tenant is over its fair share."""
    return {H_SHARD: OVERFLOW_SHARD if spill else str(shard_of(tenant, shards))}


def build(retry_delays_s: tuple[float, ...], shards: int = DEFAULT_SHARDS) -> Topology:
    """The topology for a retry schedule and a shard count: one TTL queue per distinct delay,
    one delivery queue per shard.

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
        # Before sharding this queue was bound to DELIVERIES directly (see `unbindings`).
        Queue(DELIVERIES, poisoned, ((UNSHARDED, ""),)),
        *(
            Queue(shard_queue(n), poisoned, ((SHARDS, ""),), {"x-match": "all", H_SHARD: str(n)})
            for n in (*range(shards), OVERFLOW_SHARD)
        ),
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
        Exchange(UNSHARDED, "fanout"),
        # Retry tiers dead-letter to DELIVERIES with its one routing key, so the shard is
        # chosen by a header that retry copies keep, not by the key.
        Exchange(
            SHARDS,
            "headers",
            {"alternate-exchange": UNSHARDED},
            ((DELIVERIES, DELIVERY_ROUTING_KEY),),
        ),
        Exchange(RETRY, "direct"),
        Exchange(DEAD, "fanout"),
        Exchange(POISON, "fanout"),
    )
    unbindings = ((DELIVERIES, DELIVERIES, DELIVERY_ROUTING_KEY),)
    return Topology(exchanges, tuple(queues), unbindings)


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
