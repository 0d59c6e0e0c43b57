"""Retry jitter: the delay before a retry, one of its tiers (`common/tiers.py`) at random."""

from __future__ import annotations

import random
from collections.abc import Callable

from common.tiers import variants


def jitterer(jitter: float, rng: random.Random | None = None) -> Callable[[float], float]:
    """A function that maps a scheduled delay to one of its tiers, uniformly at random."""
    choose = (rng or random.Random()).choice

    def jittered(delay_s: float) -> float:
        return choose(variants(delay_s, jitter))

    return jittered
