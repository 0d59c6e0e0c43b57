"""Every branch of the outcome classification and the retry timing, without a network."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from common import tiers
from dispatcher.policy import retry
from dispatcher.policy.retry import (
    SUCCESS,
    DeadReason,
    Decision,
    Verdict,
    decide,
    deferral_delay,
    honour_retry_after,
    parse_retry_after,
)

SCHEDULE = (5.0, 300.0, 1800.0, 7200.0)  # 5 attempts in all
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
@pytest.mark.parametrize("attempt", [1, 3, 5])
def test_any_2xx_is_a_success_on_any_attempt(status: int, attempt: int) -> None:
    assert decide(status, attempt, SCHEDULE) == SUCCESS


@pytest.mark.parametrize("attempt", [1, 5])
def test_410_kills_the_delivery_and_disables_the_subscription(attempt: int) -> None:
    assert decide(410, attempt, SCHEDULE) == Decision(
        Verdict.DEAD, reason=DeadReason.ENDPOINT_DISABLED, disable_subscription=True
    )


@pytest.mark.parametrize(
    "status", [None, 100, 199, 300, 301, 302, 304, 307, 308, 400, 401, 403, 404, 408, 409,
               413, 422, 429, 500, 502, 503, 504, 599]
)  # fmt: skip
def test_every_other_answer_retries_after_the_scheduled_delay(status: int | None) -> None:
    for attempt, delay_s in enumerate(SCHEDULE, start=1):
        assert decide(status, attempt, SCHEDULE) == Decision(Verdict.RETRY, delay_s=delay_s)


@pytest.mark.parametrize("status", [None, 302, 404, 429, 500, 503])
def test_the_last_attempt_ends_dead_with_max_attempts(status: int | None) -> None:
    last = len(SCHEDULE) + 1
    assert decide(status, last, SCHEDULE, retry_after="1") == Decision(
        Verdict.DEAD, reason=DeadReason.MAX_ATTEMPTS
    )


def test_a_single_attempt_schedule_has_two_attempts() -> None:
    assert decide(500, 1, (2.0,)) == Decision(Verdict.RETRY, delay_s=2.0)
    assert decide(500, 2, (2.0,)).reason == "max_attempts"


@pytest.mark.parametrize(
    ("retry_after", "attempt", "expected_s"),
    [
        ("0", 1, 5.0),  # nothing wanted: the smallest tier
        ("5", 1, 5.0),  # exactly a tier
        ("6", 1, 300.0),  # rounded up to the next tier, which is also the cap
        ("4000", 1, 300.0),  # capped at the next-but-one delay (attempt 2's)
        ("4000", 2, 1800.0),
        ("4000", 3, 7200.0),
        ("99999", 4, 7200.0),  # beyond every tier: the largest, within the cap
        ("1", 3, 5.0),  # a short wish shortens the wait to the smallest tier that fits
        ("  60 ", 2, 300.0),
    ],
)
def test_retry_after_picks_the_smallest_sufficient_tier_within_the_cap(
    retry_after: str, attempt: int, expected_s: float
) -> None:
    for status in (429, 503):
        decision = decide(status, attempt, SCHEDULE, retry_after=retry_after, now=NOW)
        assert decision == Decision(Verdict.RETRY, delay_s=expected_s)


def test_retry_after_as_an_http_date() -> None:
    in_ten_minutes = format_datetime(NOW + timedelta(minutes=10), usegmt=True)
    decision = decide(503, 2, SCHEDULE, retry_after=in_ten_minutes, now=NOW)
    assert decision == Decision(Verdict.RETRY, delay_s=1800.0)


def test_retry_after_in_the_past_means_the_smallest_tier() -> None:
    yesterday = format_datetime(NOW - timedelta(days=1), usegmt=True)
    assert decide(429, 3, SCHEDULE, retry_after=yesterday, now=NOW).delay_s == 5.0


@pytest.mark.parametrize(
    "garbage",
    ["", "soon", "-5", "1.5", "Mon, 99 Foo 2026",
     # A year or an offset past what a date can hold: an OverflowError, not a ValueError.
     "Mon, 01 Jan 99999999999999999999 00:00:00 GMT", "01 Jan 2026 00:00:00 +99999999999999999999"],
)  # fmt: skip
def test_an_unreadable_retry_after_keeps_the_schedule(garbage: str) -> None:
    assert decide(429, 2, SCHEDULE, retry_after=garbage, now=NOW).delay_s == 300.0


@pytest.mark.parametrize("status", [500, 502, 404])
def test_retry_after_counts_only_on_429_and_503(status: int) -> None:
    assert decide(status, 1, SCHEDULE, retry_after="4000").delay_s == 5.0


def test_parse_retry_after() -> None:
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after("Fri, 02 Jan 2026 03:05:05 GMT", NOW) == 60.0
    assert parse_retry_after("nonsense", NOW) is None
    # Digits to str.isdigit but not to float (a header is read as Latin-1): ignored, not
    # an exception that turned a 429 into an "internal error" attempt.
    assert parse_retry_after("\xb2", NOW) is None
    assert parse_retry_after("\xb9\xb2", NOW) is None


def test_honour_retry_after_with_repeated_delays() -> None:
    schedule = (1.0, 2.0, 4.0, 4.0, 4.0)
    assert honour_retry_after(3.0, 1, schedule) == 2.0  # capped at attempt 2's delay
    assert honour_retry_after(3.0, 2, schedule) == 4.0
    assert honour_retry_after(10.0, 5, schedule) == 4.0


def test_deferral_waits_for_the_smallest_tier_of_a_minute_or_more() -> None:
    assert deferral_delay(SCHEDULE) == 300.0
    assert deferral_delay((60.0, 5.0)) == 60.0
    assert deferral_delay((0.1, 0.2)) == 0.2


DEFAULT = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


def test_each_delay_has_tiers_at_minus_and_plus_twenty_percent() -> None:
    assert tiers.variants(300.0, 0.2) == (240.0, 300.0, 360.0)
    assert tiers.tiers((5.0, 5.0), 0.2) == (4.0, 5.0, 6.0)
    assert len(tiers.tiers(DEFAULT, 0.2)) == 3 * len(set(DEFAULT))
    assert tiers.tiers(DEFAULT, 0.0) == tuple(sorted(set(DEFAULT)))


def test_jittered_retries_spread_over_the_tiers_of_their_delay() -> None:
    jitter = retry.jitterer(0.2, random.Random(7))
    chosen = [retry.decide(500, 2, DEFAULT, jitter=jitter).delay_s for _ in range(300)]
    assert set(chosen) == {240.0, 300.0, 360.0}
    assert all(chosen.count(tier) > 60 for tier in set(chosen)), "not uniform enough"


def test_retry_after_is_not_jittered() -> None:
    def jitter(delay_s: float) -> float:
        raise AssertionError("jitter applied to a Retry-After delay")

    decision = retry.decide(429, 1, DEFAULT, retry_after="120", jitter=jitter)
    assert decision.delay_s == 300.0


def test_a_deferral_goes_to_the_smallest_tier_that_waits_long_enough() -> None:
    assert retry.tier_after(0.0, DEFAULT) == 5.0
    assert retry.tier_after(30.0, DEFAULT) == 300.0
    assert retry.tier_after(10**6, DEFAULT) == 36000.0


def test_held_back_deliveries_spread_over_the_tiers_between_the_wait_and_twice_it() -> None:
    spread = tiers.tiers([1, 2, 5, 10, 20, 30, 60], 0.2)
    chosen = {retry.spread_tier(25.0, spread, n / 100) for n in range(100)}
    assert min(chosen) >= 25.0 and max(chosen) <= retry.tier_after(50.0, spread)
    assert len(chosen) >= 3, "deferred alike, they would come back as one burst"
    assert retry.spread_tier(0.0, spread, 0.9) == 0.8
