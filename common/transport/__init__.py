"""Message transport: the interface, its two implementations, and the topology names."""

from __future__ import annotations

from common.transport.base import Consumer, Message, Outgoing, Transport, poison_copy
from common.transport.memory import MemoryBroker, MemoryTransport

__all__ = [
    "Consumer",
    "MemoryBroker",
    "MemoryTransport",
    "Message",
    "Outgoing",
    "Transport",
    "open_transport",
    "poison_copy",
]


def open_transport(
    url: str,
    *,
    memory: MemoryBroker | None = None,
    connect_budget_s: float | None = None,
    quorum_group_size: int = 0,
) -> Transport:
    """A transport for `url`: `memory://` for the embedded broker, `amqp://` for RabbitMQ
    (several comma-separated `amqp://` URLs: the nodes of a cluster). `connect_budget_s`:
    how long a caller may wait for RabbitMQ (the transport's default when None) before it
    gets `BrokerUnavailableError`; `quorum_group_size`: replicas per quorum queue (0: one
    per listed node, or the broker's default for a single URL)."""
    if url.startswith("memory://"):
        return MemoryTransport(memory)
    # Imported here so that only code that talks to RabbitMQ loads pika.
    from common.transport.rabbitmq import RabbitTransport

    if connect_budget_s is None:
        return RabbitTransport(url, quorum_group_size=quorum_group_size)
    return RabbitTransport(
        url, connect_budget_s=connect_budget_s, quorum_group_size=quorum_group_size
    )
