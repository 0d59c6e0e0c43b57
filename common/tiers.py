"""Which retry tiers exist: each delay of the schedule, spread ±`jitter` around it.

A delay is realised by a TTL queue, so only delays that have a queue are possible. Each delay
`d` of the schedule therefore gets three tiers, `d·(1-j)`, `d` and `d·(1+j)`, and a retry
picks one of them at random (`dispatcher/policy/retry.py`): a burst of failures at one instant
comes back spread over `2·j·d` instead of as one thundering herd. With `j = 0` there is one
tier per delay. Every process that declares the topology, and the backlog gauge that counts
the tiers, uses this same list.
"""

from __future__ import annotations

from collections.abc import Sequence

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
