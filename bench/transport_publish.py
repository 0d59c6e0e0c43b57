"""Publish throughput of `RabbitTransport`: confirmed messages per second.

    .venv/bin/python -m bench.transport_publish [--url amqp://...] [--messages 20000]
        [--batch 100] [--threads 1] [--queue-type quorum]

Publishes to a bench-only exchange and queue (never the production names), purges the
queue afterwards, and prints one line per run. Every `publish` call waits for its confirms,
so the figure is what a caller that needs "confirmed" actually gets.
"""

from __future__ import annotations

import argparse
import threading
import time

from common.transport import Outgoing, Transport
from common.transport.rabbitmq import RabbitTransport
from common.transport.topology import Exchange, Queue, Topology

BENCH = "hookline.bench"
BODY = b'{"type": "order.created", "data": {"id": "o-1", "amount": 1200}}'


def run(transport: Transport, name: str, messages: int, batch: int, threads: int) -> float:
    per_thread = messages // threads
    outgoing = [Outgoing(name, name, BODY, {"webhook-id": "e-1"}, "e-1")] * batch

    def publish_all() -> None:
        for _ in range(per_thread // batch):
            transport.publish(outgoing)

    workers = [threading.Thread(target=publish_all) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    return (per_thread // batch) * batch * threads / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--queue-type", default="quorum", choices=["quorum", "classic"])
    args = parser.parse_args()

    name = f"{BENCH}.{args.queue_type}"
    queue = Queue(name, {"x-queue-type": args.queue_type}, ((name, name),))
    with RabbitTransport(args.url) as transport:
        transport.declare(Topology((Exchange(name, "direct"),), (queue,)))
        transport.purge(name)
        transport.publish([Outgoing(name, name, BODY)])  # connect outside the timing
        rate = run(transport, name, args.messages, args.batch, args.threads)
        depth = transport.queue_depth(name)
        transport.purge(name)
    print(
        f"{args.messages} msgs, batch {args.batch}, {args.threads} thread(s), "
        f"{args.queue_type} queue: {rate:,.0f} msg/s confirmed (queue held {depth})"
    )


if __name__ == "__main__":
    main()
