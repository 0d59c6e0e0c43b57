"""The disk's durable-write latency: what every quorum-queue publish and commit waits for.

    .venv/bin/python -m bench.fsync [--seconds 20] [--dir /var/lib/rabbitmq] [--every-ms 3]

Appends 4 KiB and calls `fdatasync` every `--every-ms` (RabbitMQ and PostgreSQL each do
about that much per batch at 300 events/s), in a scratch file under `--dir` (RabbitMQ's
data directory by default, so it measures that disk), and prints the latency percentiles
and the stalls over 30 ms. Run it alone, then beside a benchmark, to tell the disk's share
of a latency figure from Hookline's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from bench.stack import percentile

STALL_S = 0.030


def probe(directory: str, seconds: float, every_s: float) -> dict[str, object]:
    took: list[float] = []
    block = os.urandom(4096)
    with tempfile.NamedTemporaryFile(dir=directory, prefix="hookline-fsync-") as scratch:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.perf_counter()
            os.write(scratch.fileno(), block)
            os.fdatasync(scratch.fileno())
            took.append(time.perf_counter() - started)
            time.sleep(every_s)
    stalls = sorted(round(1000 * t, 1) for t in took if t > STALL_S)
    return {
        "dir": directory,
        "syncs": len(took),
        "p50_ms": round(1000 * percentile(took, 0.50), 2),
        "p99_ms": round(1000 * percentile(took, 0.99), 2),
        "max_ms": round(1000 * max(took), 1),
        "stalls_over_30ms": stalls,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--dir", default="/var/lib/rabbitmq")
    parser.add_argument("--every-ms", type=float, default=3.0)
    args = parser.parse_args()
    directory = args.dir if os.access(args.dir, os.W_OK) else tempfile.gettempdir()
    print(json.dumps(probe(directory, args.seconds, args.every_ms / 1000)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
