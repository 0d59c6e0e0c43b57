"""Where a light tenant's latency went in `bench/fairness.py`: each light event's legs from
the rows' own times, and when the slowest ones happened relative to the dispatchers' start.

Legs: scheduled publish -> the router's write of the delivery row (`to_router_write`) ->
the first attempt's start (`to_attempt`: the broker, the dispatcher's prefetch window,
its endpoint lane and sending threads, or a deferral to a retry tier) -> the receipt
(`to_receipt`: the POST).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from bench.stack import Stack, percentile

SLOWEST = 5


def light_legs(
    running: Stack,
    sent: dict[str, tuple[str, float]],
    received: dict[str, float],
    started_at: float,
) -> dict[str, Any]:
    """p50/p99 of each leg, and the `SLOWEST` events with their legs (ms) and the second,
    counted from the dispatchers' start, at which each was scheduled."""
    query = text(
        "SELECT d.event_id, extract(epoch FROM d.created_at), extract(epoch FROM a.created_at)"
        " FROM deliveries d JOIN attempts a ON a.delivery_id = d.id AND a.attempt = 1"
        " WHERE d.tenant_id <> :heavy"
    )
    with running.sessions() as session:
        rows = session.execute(query, {"heavy": running.tenant_id}).tuples().all()
    legs: dict[str, list[float]] = {"to_router_write": [], "to_attempt": [], "to_receipt": []}
    each: list[tuple[float, float, list[float]]] = []
    for event_id, routed, attempted in rows:
        if event_id not in sent or event_id not in received:
            continue
        scheduled = sent[event_id][1]
        parts = [
            float(routed) - scheduled,
            float(attempted) - float(routed),
            received[event_id] - float(attempted),
        ]
        for name, value in zip(legs, parts, strict=True):
            legs[name].append(value)
        each.append((received[event_id] - scheduled, scheduled - started_at, parts))
    each.sort(key=lambda e: e[0], reverse=True)
    return {
        "legs_ms": {
            name: [round(1000 * percentile(v, q), 1) for q in (0.5, 0.99)]
            for name, v in legs.items()
            if v
        },
        "slowest": [
            {
                "ms": round(1000 * total),
                "at_s": round(at, 1),
                "legs_ms": [round(1000 * p) for p in parts],
            }
            for total, at, parts in each[:SLOWEST]
        ],
    }
