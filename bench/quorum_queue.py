"""One quorum queue's ceiling: confirmed publishes and acknowledged consumes at once.

    .venv/bin/python -m bench.quorum_queue [--messages 100000] [--publishers 2] [--batch 100]
        [--prefetch 1000] [--runs 3]

Each run: a fresh vhost on 127.0.0.1:5672, one quorum queue, `--publishers` threads each
publishing through `RabbitTransport` (every call waits for its confirms, batches of
`--batch`) while one pika consumer (prefetch `--prefetch`, an ack with `multiple` every 100
messages) takes them off. Reported: messages/s through the queue (published, confirmed,
consumed and acknowledged) from the first publish to the last consume, the publish rate
alone over the same run, and RabbitMQ's CPU per message. The delivery path's per-message
cost is higher (a router publish and a dispatcher consume per delivery, with bigger bodies),
so this is the queue's ceiling on this machine, not Hookline's.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pika

from bench import runs
from bench.stack import load_average
from common.transport import Outgoing
from common.transport.rabbitmq import RabbitTransport
from common.transport.topology import Exchange, Queue, Topology
from tests.services import temporary_vhost

NAME = "bench.quorum"
BODY = b'{"delivery_id": "dlv-000001", "event": {"type": "order.created", "data": {}}}' * 4


def _rabbitmq_cpu_s() -> float:
    from bench.stack import _cpu_s, _pids_where

    return sum(map(_cpu_s, _pids_where(lambda c: "beam.smp" in c)))


def one_run(args: argparse.Namespace, number: int, workdir: Path) -> dict[str, Any]:
    load_before = load_average()
    total = args.messages // (args.publishers * args.batch) * args.publishers * args.batch
    with temporary_vhost("hookline_qq") as url:
        queue = Queue(NAME, {"x-queue-type": "quorum"}, ((NAME, NAME),))
        with RabbitTransport(url) as transport:
            transport.declare(Topology((Exchange(NAME, "direct"),), (queue,)))
        consumed = 0
        finished = threading.Event()
        last = [0.0]

        def consume() -> None:
            nonlocal consumed
            connection = pika.BlockingConnection(pika.URLParameters(url))
            channel = connection.channel()
            channel.basic_qos(prefetch_count=args.prefetch)
            for method, _, _ in channel.consume(NAME, inactivity_timeout=30):
                if method is None:
                    break
                consumed += 1
                if consumed % 100 == 0 or consumed == total:
                    channel.basic_ack(method.delivery_tag, multiple=True)
                if consumed == total:
                    last[0] = time.perf_counter()
                    break
            channel.cancel()
            connection.close()
            finished.set()

        def publish() -> None:
            outgoing = [Outgoing(NAME, NAME, BODY, {"webhook-id": "x"}, "x")] * args.batch
            with RabbitTransport(url) as transport:
                for _ in range(total // args.publishers // args.batch):
                    transport.publish(outgoing)

        consumer = threading.Thread(target=consume, daemon=True)
        publishers = [threading.Thread(target=publish) for _ in range(args.publishers)]
        cpu_before = _rabbitmq_cpu_s()
        started = time.perf_counter()
        consumer.start()
        for thread in publishers:
            thread.start()
        for thread in publishers:
            thread.join()
        published = time.perf_counter()
        finished.wait(300)
        cpu = _rabbitmq_cpu_s() - cpu_before
    return {
        "run": number,
        "messages": total,
        "consumed": consumed,
        "through_per_s": round(total / (last[0] - started)) if last[0] else 0,
        "published_per_s": round(total / (published - started)),
        "rabbitmq_cpu_us_per_message": round(1e6 * cpu / total),
        "load": [load_before, load_average()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--prefetch", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs.repeat(one_run, args, ("through_per_s", "published_per_s", "rabbitmq_cpu_us_per_message"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
