"""Fair delivery's topology, on both transports: tenants' deliveries land in their shard,
retries come back to the shard they left, the unsharded queue catches what carries no
shard (and the upgrade moves nothing twice), and one consumer serves shards round-robin."""

from __future__ import annotations

import pytest

from common.transport import Outgoing, Transport
from common.transport import topology as tp

from . import RETRY_DELAY_S, TOPOLOGY, idle, take, wait_until

SHARD_0, SHARD_1 = tp.shard_queue(0), tp.shard_queue(1)


def to_shard(shard: int | None, n: int = 0) -> Outgoing:
    headers = {} if shard is None else {tp.H_SHARD: str(shard)}
    return Outgoing(tp.DELIVERIES, tp.DELIVERY_ROUTING_KEY, b'{"n": %d}' % n, headers, f"m{n}")


def test_a_delivery_lands_in_the_shard_its_header_names(transport: Transport) -> None:
    transport.publish([to_shard(1), to_shard(1, 2), to_shard(0, 3)])

    assert transport.queue_depth(SHARD_1) == 2
    assert transport.queue_depth(SHARD_0) == 1
    assert transport.queue_depth(tp.DELIVERIES) == 0


def test_a_delivery_without_a_shard_goes_to_the_unsharded_queue(transport: Transport) -> None:
    transport.publish([to_shard(None)])

    assert transport.queue_depth(tp.DELIVERIES) == 1
    assert sum(transport.queue_depth(tp.shard_queue(n)) for n in range(tp.DEFAULT_SHARDS)) == 0


def test_a_retry_comes_back_to_the_shard_it_left(transport: Transport) -> None:
    retry = Outgoing(tp.RETRY, tp.tier_name(RETRY_DELAY_S), b"{}", {tp.H_SHARD: "1"}, "r1")
    transport.publish([retry])

    wait_until(lambda: transport.queue_depth(SHARD_1) == 1)
    assert transport.queue_depth(tp.DELIVERIES) == 0
    assert transport.queue_depth(SHARD_0) == 0


def test_one_consumer_serves_its_queues_round_robin(transport: Transport) -> None:
    transport.publish([to_shard(0, n) for n in range(20)])
    transport.publish([to_shard(1, 100), to_shard(1, 101)])
    consumer = transport.consume_many([SHARD_0, SHARD_1], prefetch=50)
    try:
        # Both of shard 1's messages come out among the first four, though shard 0 had
        # twenty queued ahead of them.
        first = take(iter(consumer), 4)
        assert [m.queue for m in first].count(SHARD_1) == 2
    finally:
        consumer.close()


def test_each_queue_of_a_consumer_has_its_own_prefetch_window(transport: Transport) -> None:
    transport.publish([to_shard(0, n) for n in range(5)])
    transport.publish([to_shard(1, 10 + n) for n in range(5)])
    consumer = transport.consume_many([SHARD_0, SHARD_1], prefetch=2)
    try:
        stream = iter(consumer)
        taken = take(stream, 4)
        assert sorted(m.queue for m in taken) == [SHARD_0, SHARD_0, SHARD_1, SHARD_1]
        assert idle(stream) == []  # both windows are full
        consumer.ack_many([m for m in taken if m.queue == SHARD_1])
        more = take(stream, 2)
        assert {m.queue for m in more} == {SHARD_1}
        consumer.ack_many([*[m for m in taken if m.queue == SHARD_0], *more])
    finally:
        consumer.close()


@pytest.mark.parametrize("upgrade_twice", [False, True])
def test_the_upgrade_keeps_old_messages_and_routes_new_ones_once(
    transport: Transport, upgrade_twice: bool
) -> None:
    # Before sharding, the deliveries exchange was bound straight to the deliveries queue.
    old = tp.Topology(
        (tp.Exchange(tp.DELIVERIES, "direct"),),
        (tp.Queue(tp.DELIVERIES, TOPOLOGY.queue(tp.DELIVERIES).arguments,
                  ((tp.DELIVERIES, tp.DELIVERY_ROUTING_KEY),)),),
    )  # fmt: skip
    transport.declare(old)
    transport.publish([to_shard(None, 1)])

    upgrade = tp.Topology(TOPOLOGY.exchanges, TOPOLOGY.queues, tp.build(()).unbindings)
    transport.declare(upgrade)
    if upgrade_twice:
        transport.declare(upgrade)
    transport.publish([to_shard(None, 2), to_shard(0, 3)])

    assert transport.queue_depth(tp.DELIVERIES) == 2  # the old one and the new one, once
    assert transport.queue_depth(SHARD_0) == 1
