"""The RabbitMQ transport, on pika: the only package in Hookline that imports pika.

pika objects are not thread-safe, so every connection has exactly one owning thread:

- `publisher`: one I/O thread owns a `SelectConnection` in confirm mode; callers on any
  thread hand it batches and wait (`publish`) or get a future (`submit`, for event loops).
- `consumer`: each `RabbitConsumer` owns a `BlockingConnection`, pumped by the thread that
  iterates it; other threads settle messages through `add_callback_threadsafe`.
- `transport`: `RabbitTransport`, the facade; `declare`, `queue_depth` and `purge` open a
  short-lived `BlockingConnection` each.
- `connect`: connection parameters, the retry policy, and the translation of pika's errors;
  `frames`: the bytes of a publish, marshalled without pika's per-message objects.

pika's exceptions stop here: callers only ever see `common.errors` types.
"""

from __future__ import annotations

from common.transport.rabbitmq.consumer import RabbitConsumer
from common.transport.rabbitmq.transport import RabbitTransport

__all__ = ["RabbitConsumer", "RabbitTransport"]
