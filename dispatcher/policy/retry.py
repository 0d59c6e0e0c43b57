"""Retry timing, in one place: what an HTTP attempt means for its delivery (success, a
retry after some delay, or dead), which tier a retry or a deferral goes to, and the jitter
that spreads retries over the tiers of their delay (`common/tiers.py` says which exist).

Pure functions of the response and the retry schedule, so every branch is unit-tested
without a network; `Schedule` binds them to one dispatcher's settings.
"""

from __future__ import annotations

import bisect
import email.utils
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from common.settings import Settings
from common.tiers import variants


class Verdict(StrEnum):
    """What one attempt means for its delivery (the `outcome` column and metric label)."""

    SUCCESS = "success"
    RETRY = "retry"
    DEAD = "dead"


class DeadReason(StrEnum):
    """Why a delivery ended dead (the `reason` label of hookline_dead_letters_total and the
    `dead_reason` column). A closed set, so the metric label stays bounded."""

    MAX_ATTEMPTS = "max_attempts"
    ENDPOINT_DISABLED = "endpoint_disabled"
    SUBSCRIPTION_DISABLED = "subscription_disabled"
    SUBSCRIPTION_MISSING = "subscription_missing"
    UNSAFE_TARGET = "unsafe_target"


# Statuses whose Retry-After header the schedule honours.
RETRY_AFTER_STATUSES = (429, 503)
DEFERRAL_FLOOR_S = 60.0


@dataclass(frozen=True)
class Decision:
    outcome: Verdict
    delay_s: float | None = None  # for a retry: an existing tier (see `jitterer`)
    reason: DeadReason | None = None  # for dead
    disable_subscription: bool = False


SUCCESS = Decision(Verdict.SUCCESS)


def dead(reason: DeadReason, *, disable_subscription: bool = False) -> Decision:
    return Decision(Verdict.DEAD, reason=reason, disable_subscription=disable_subscription)


def decide(
    status_code: int | None,
    attempt: int,
    delays: Sequence[float],
    *,
    retry_after: str | None = None,
    now: datetime | None = None,
    jitter: Callable[[float], float] = lambda delay_s: delay_s,
) -> Decision:
    """The decision for attempt number `attempt` (1-based) under the schedule `delays`.

    `status_code` is None when no complete response arrived (timeout, connection error,
    a failure inside the sender); that is retried like any other failure. `jitter` maps a
    scheduled delay to one of its tiers (`jitterer`); a delay the endpoint asked
    for with Retry-After is kept as it is.
    """
    if status_code is not None and 200 <= status_code <= 299:
        return SUCCESS
    if status_code == 410:
        return dead(DeadReason.ENDPOINT_DISABLED, disable_subscription=True)
    if attempt > len(delays):
        return dead(DeadReason.MAX_ATTEMPTS)
    if status_code in RETRY_AFTER_STATUSES and retry_after is not None:
        wanted_s = parse_retry_after(retry_after, now or datetime.now(UTC))
        if wanted_s is not None:
            return Decision(Verdict.RETRY, delay_s=honour_retry_after(wanted_s, attempt, delays))
    return Decision(Verdict.RETRY, delay_s=jitter(delays[attempt - 1]))


def honour_retry_after(wanted_s: float, attempt: int, delays: Sequence[float]) -> float:
    """The smallest tier that waits at least `wanted_s`, capped at the next-but-one delay.

    Only existing tiers are possible (each is a queue with a fixed TTL), and the cap keeps
    an endpoint from parking a delivery for a day with one header.
    """
    tiers = sorted(set(delays))
    cap_s = delays[min(attempt, len(delays) - 1)]
    index = bisect.bisect_left(tiers, wanted_s)
    chosen = tiers[index] if index < len(tiers) else tiers[-1]
    return min(chosen, cap_s)


def parse_retry_after(value: str, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or an HTTP date), or None for
    one it cannot use: that answer keeps the schedule, as if the header were absent."""
    text = value.strip()
    if text.isascii() and text.isdigit():  # not "²", a digit to isdigit but not to float
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):  # a year or offset of 20 digits
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # RFC 9110 dates are GMT; a naive parse means GMT
    return max(0.0, (when - now).total_seconds())


def deferral_delay(delays: Sequence[float]) -> float:
    """How long a delivery to a paused endpoint waits before it is looked at again.

    The smallest tier of at least a minute: short enough that resuming takes effect soon,
    long enough that a paused endpoint's backlog does not cycle through the queues.
    """
    tiers = sorted(set(delays))
    return next((tier for tier in tiers if tier >= DEFERRAL_FLOOR_S), tiers[-1])


def spread_tier(wait_s: float, tiers: Sequence[float], draw: float) -> float:
    """Where to defer a delivery held back for `wait_s` (an open circuit, a rate window):
    a tier between `wait_s` and twice that, by `draw` in [0, 1). Deliveries held back one
    after another would otherwise all come back together just after the same window and
    arrive as one burst in front of every other endpoint's deliveries."""
    if wait_s <= 0:
        return tier_after(0.0, tiers)
    return tier_after(wait_s * (1.0 + draw), tiers)


def tier_after(wait_s: float, delays: Sequence[float]) -> float:
    """The smallest tier that waits at least `wait_s` (the longest if none does): where a
    delivery the gate held back goes (an open circuit, a full endpoint, a rate limit)."""
    tiers = sorted(set(delays))
    return next((tier for tier in tiers if tier >= wait_s), tiers[-1])


def jitterer(jitter: float, rng: random.Random | None = None) -> Callable[[float], float]:
    """A function that maps a scheduled delay to one of its tiers, uniformly at random."""
    choose = (rng or random.Random()).choice

    def jittered(delay_s: float) -> float:
        return choose(variants(delay_s, jitter))

    return jittered


class Schedule:
    """One dispatcher's retry timing: the functions above over its configured schedule."""

    def __init__(self, settings: Settings) -> None:
        self._delays = settings.retry_delays_s
        self._jitter = jitterer(settings.retry_jitter)
        self._tiers = settings.retry_tiers_s
        self._draw = random.Random().random

    def decide(
        self, status_code: int | None, attempt: int, *, retry_after: str | None = None
    ) -> Decision:
        """The decision for an attempt (None: no complete response)."""
        return decide(status_code, attempt, self._delays, retry_after=retry_after,
                      jitter=self._jitter)  # fmt: skip

    def paused(self) -> float:
        """The delay of a delivery to a paused or unverified endpoint."""
        return deferral_delay(self._delays)

    def held_back(self, wait_s: float) -> float:
        """The tier of a delivery that admission held back for `wait_s`, spread (see
        `spread_tier`); 0 means the soonest tier."""
        return spread_tier(wait_s, self._tiers, self._draw())

    def soonest(self) -> float:
        """The tier of a delivery its endpoint's lane cannot take now."""
        return tier_after(0.0, self._delays)
