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


def test_a_burst_goes_all_to_overflow_from_its_second_second_on() -> None:
    """More than twice its share in a second: the next second none of it goes to its own
    shard, so a burst routed over many seconds leaves one second's share there in all."""
    clock = Clock()
    spill = Spill(8, 3, clock=clock)
    own = str(tp.shard_of("heavy", 8))

    assert shards_of(spill, "heavy", 7) == [own] * 3 + ["overflow"] * 4  # 7 > 2 x 3
    for _ in range(5):  # still bursting: nothing more in its own shard
        clock.now += 1.0
        assert shards_of(spill, "heavy", 7) == ["overflow"] * 7
    assert shards_of(spill, "light", 3) == [str(tp.shard_of("light", 8))] * 3


def test_a_tenant_just_over_its_share_keeps_its_share_each_second() -> None:
    clock = Clock()
    spill = Spill(8, 3, clock=clock)
    own = str(tp.shard_of("steady", 8))

    for _ in range(3):  # 6 a second is not more than twice the share
        assert shards_of(spill, "steady", 6) == [own] * 3 + ["overflow"] * 3
        clock.now += 1.0


def test_a_burst_is_back_in_its_shard_once_a_second_passed_without_one() -> None:
    clock = Clock()
    spill = Spill(8, 3, clock=clock)
    own = str(tp.shard_of("heavy", 8))
    shards_of(spill, "heavy", 10)

    clock.now += 1.0  # the second after the burst: still counted as one
    assert shards_of(spill, "heavy", 1) == ["overflow"]
    clock.now += 1.0  # that second was quiet (1 of 3): back in its own shard
    assert shards_of(spill, "heavy", 2) == [own, own]

    shards_of(spill, "heavy", 10)
    clock.now += 2.5  # a silent window between: the burst is over
    assert shards_of(spill, "heavy", 1) == [own]


def test_a_tenant_whose_share_is_zero_is_never_a_burst() -> None:
    clock = Clock()
    spill = Spill(8, 3, overrides=lambda: {"unlimited": 0}, clock=clock)
    shards_of(spill, "unlimited", 100)
    clock.now += 1.0
    assert "overflow" not in shards_of(spill, "unlimited", 100)
