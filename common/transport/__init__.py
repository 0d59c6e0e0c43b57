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


def open_transport(url: str, *, memory: MemoryBroker | None = None) -> Transport:
    """A transport for `url`: `memory://` for the embedded broker, `amqp://` for RabbitMQ."""
    if url.startswith("memory://"):
        return MemoryTransport(memory)
    # Imported here so that only code that talks to RabbitMQ loads pika.
    from common.transport.rabbitmq import RabbitTransport

    return RabbitTransport(url)
