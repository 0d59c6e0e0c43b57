"""A tenant past its share of a second spills to the overflow shard; others keep theirs."""

from __future__ import annotations

from common.transport import topology as tp
from common.transport.spill import Spill


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def shards_of(spill: Spill, tenant: str, count: int) -> list[str]:
    return [str(spill.headers(tenant)[tp.H_SHARD]) for _ in range(count)]


def test_a_tenant_over_its_share_spills_for_the_rest_of_the_second() -> None:
    clock = Clock()
    spill = Spill(8, 3, clock=clock)
    own = str(tp.shard_of("heavy", 8))

    assert shards_of(spill, "heavy", 5) == [own, own, own, "overflow", "overflow"]
    assert shards_of(spill, "light", 2) == [str(tp.shard_of("light", 8))] * 2
    clock.now += 1.0  # a new window: the heavy tenant starts again in its own shard
    assert shards_of(spill, "heavy", 2) == [own, own]


def test_a_share_of_zero_never_spills_and_a_tenant_override_wins() -> None:
    never = Spill(8, 0, clock=Clock())
    assert "overflow" not in shards_of(never, "heavy", 500)

    spill = Spill(8, 1, overrides=lambda: {"big": 4}, clock=Clock())
    assert shards_of(spill, "big", 5).count("overflow") == 1
    assert shards_of(spill, "small", 3).count("overflow") == 2


def test_a_republished_delivery_keeps_the_recheck_mark_beside_its_shard() -> None:
    spill = Spill(8, 100, clock=Clock())

    assert spill.headers("acme", recheck=True) == {tp.H_SHARD: "6", tp.H_RECHECK: 1}
    assert spill.headers("acme") == {tp.H_SHARD: "6"}
