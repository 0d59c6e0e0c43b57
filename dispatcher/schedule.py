"""Retry jitter: the delay before a retry, spread ±`jitter` around the schedule's delay.

A delay is realised by a TTL queue, so only delays that have a queue are possible. Each delay
`d` of the schedule therefore gets three tiers, `d·(1-j)`, `d` and `d·(1+j)`, and a retry
picks one of them at random: a burst of failures at one instant comes back spread over
`2·j·d` instead of as one thundering herd. With `j = 0` there is one tier per delay.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

JITTER_STEPS = (-1.0, 0.0, 1.0)  # in units of the configured spread


def _round_ms(delay_s: float) -> float:
    return max(round(delay_s * 1000), 1) / 1000


def variants(delay_s: float, jitter: float) -> tuple[float, ...]:
    """The tiers a retry scheduled after `delay_s` may use."""
    if jitter <= 0:
        return (delay_s,)
    return tuple(sorted({_round_ms(delay_s * (1 + step * jitter)) for step in JITTER_STEPS}))


def tiers(delays: Sequence[float], jitter: float) -> tuple[float, ...]:
    """Every tier the dispatcher publishes to: each delay of the schedule and its variants."""
    return tuple(sorted({tier for delay_s in delays for tier in variants(delay_s, jitter)}))


def jitterer(jitter: float, rng: random.Random | None = None) -> Callable[[float], float]:
    """A function that maps a scheduled delay to one of its tiers, uniformly at random."""
    choose = (rng or random.Random()).choice

    def jittered(delay_s: float) -> float:
        return choose(variants(delay_s, jitter))

    return jittered
