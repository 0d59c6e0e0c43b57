import pytest
from pydantic import ValidationError

from common.settings import Settings, parse_duration, parse_schedule
from common.transport import topology as tp


def test_default_schedule_is_eight_attempts() -> None:
    settings = Settings()
    assert settings.retry_delays_s == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert settings.max_attempts == 8


def test_short_schedule_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKLINE_RETRY_SCHEDULE", "1s,2s,4s")
    settings = Settings()
    assert settings.retry_delays_s == (1, 2, 4)
    assert settings.max_attempts == 4


@pytest.mark.parametrize(
    ("text", "seconds"), [("5s", 5), ("5m", 300), ("2h", 7200), ("250ms", 0.25), ("3", 3)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["5x", "-1s", "s", "0s"])
def test_bad_schedules_are_refused_with_a_clear_error(bad: str) -> None:
    with pytest.raises(ValidationError, match=r"duration|positive"):
        Settings(retry_schedule=bad)


def test_every_distinct_delay_gets_its_own_ttl_queue() -> None:
    topology = tp.build(parse_schedule("5s,5m,30m,2h,5h,10h,10h"))
    retry = {q.name: q.ttl_ms for q in topology.queues if q.name.startswith(tp.RETRY + ".")}
    assert retry == {
        "hookline.retry.5s": 5_000,
        "hookline.retry.5m": 300_000,
        "hookline.retry.30m": 1_800_000,
        "hookline.retry.2h": 7_200_000,
        "hookline.retry.5h": 18_000_000,
        "hookline.retry.10h": 36_000_000,
    }
    for queue in topology.queues:
        if queue.name in retry:
            assert queue.arguments["x-dead-letter-exchange"] == tp.DELIVERIES
            assert queue.ttl_ms is not None
            assert queue.bindings == ((tp.RETRY, tp.tier_name(queue.ttl_ms / 1000)),)
