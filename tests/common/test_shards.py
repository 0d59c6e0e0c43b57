"""Tenants are hashed over the delivery shards the same way by every process and release."""

from __future__ import annotations

import collections

from common.transport import topology as tp


def test_a_tenant_always_hashes_to_the_same_shard() -> None:
    # crc32, not Python's per-process salted `hash`: these values must never change, or
    # an upgrade would split a tenant's retries from its new deliveries.
    assert tp.shard_of("acme", 8) == 6
    assert tp.shard_of("globex", 8) == 2
    assert tp.shard_of("globex", 16) == 10  # crc32("globex") % 16
    assert tp.shard_headers("acme", 8) == {"hookline-shard": "6"}


def test_tenants_spread_evenly_over_the_shards() -> None:
    counts = collections.Counter(tp.shard_of(f"tenant-{n}", 8) for n in range(8000))
    assert sorted(counts) == list(range(8))
    assert all(850 <= c <= 1150 for c in counts.values()), counts


def test_the_topology_declares_one_queue_per_shard_and_consumes_them_all() -> None:
    topology = tp.build((5.0,), 4)
    assert topology.delivery_queues == (
        "hookline.deliveries.0", "hookline.deliveries.1", "hookline.deliveries.2",
        "hookline.deliveries.3", "hookline.deliveries.overflow", "hookline.deliveries",
    )  # fmt: skip
    shard = topology.queue("hookline.deliveries.3")
    assert shard.match == {"x-match": "all", tp.H_SHARD: "3"}
    assert shard.arguments == topology.queue(tp.DELIVERIES).arguments  # quorum, poison limit
