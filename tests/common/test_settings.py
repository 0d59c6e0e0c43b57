import os
import re
from pathlib import Path

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


CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
# (setting, the contract's words for its default, the default in code)
DOCUMENTED_DEFAULTS = [
    (
        "DATABASE_URL",
        "`HOOKLINE_DATABASE_URL` (default `sqlite:///hookline.db`)",
        "sqlite:///hookline.db",
    ),
    (
        "BROKER_URL",
        "(default `amqp://guest:guest@localhost:5672/%2F`;",
        "amqp://guest:guest@localhost:5672/%2F",
    ),
    ("RETRY_SCHEDULE", "(default `5s,5m,30m,2h,5h,10h,10h`;", "5s,5m,30m,2h,5h,10h,10h"),
    ("DISPATCHER_CONCURRENCY", "`HOOKLINE_DISPATCHER_CONCURRENCY` (default 32 ", 32),
    ("ALLOW_PRIVATE_TARGETS", "`HOOKLINE_ALLOW_PRIVATE_TARGETS` (off by default;", False),
    ("LOG_FORMAT", "`HOOKLINE_LOG_FORMAT` (`json` | `console`, default `console`)", "console"),
    ("ALLOW_HTTP", "`HOOKLINE_ALLOW_HTTP` (plain-http receivers; off by default)", False),
    ("RETRY_JITTER", "`HOOKLINE_RETRY_JITTER`, default `0.2`", 0.2),
    ("ENDPOINT_MAX_IN_FLIGHT", "`HOOKLINE_ENDPOINT_MAX_IN_FLIGHT`, 16)", 16),
    ("CIRCUIT_FAILURE_THRESHOLD", "`HOOKLINE_CIRCUIT_FAILURE_THRESHOLD`\n  (5)", 5),
    ("CIRCUIT_OPEN_S", "`HOOKLINE_CIRCUIT_OPEN_S`\n  (30 s)", 30.0),
    ("AUTO_DISABLE_AFTER", "`HOOKLINE_AUTO_DISABLE_AFTER` (default `5d`)", "5d"),
    ("AUTO_DISABLE_DEAD_DELIVERIES", "`HOOKLINE_AUTO_DISABLE_DEAD_DELIVERIES` (default 100;", 100),
    ("API_KEY_CACHE_S", "`HOOKLINE_API_KEY_CACHE_S` (default 1)", 1.0),
    ("LOG_LEVEL", "`HOOKLINE_LOG_LEVEL` (`INFO`)", "INFO"),
    ("CONNECT_TIMEOUT_S", "`HOOKLINE_CONNECT_TIMEOUT_S`\n(5;", 5.0),
    ("REQUEST_TIMEOUT_S", "`HOOKLINE_REQUEST_TIMEOUT_S` (15;", 15.0),
    ("MAX_RESPONSE_BYTES", "`HOOKLINE_MAX_RESPONSE_BYTES` (65536;", 65536),
    ("SUBSCRIPTION_REFRESH_S", "`HOOKLINE_SUBSCRIPTION_REFRESH_S` (1;", 1.0),
    ("PUBLISH_TIMEOUT_S", "`HOOKLINE_PUBLISH_TIMEOUT_S` (30;", 30.0),
    ("DISPATCHER_PREFETCH", "`HOOKLINE_DISPATCHER_PREFETCH` (0 =", 0),
]


def _contract() -> str:
    return CONTRACT.read_text(encoding="utf-8")


def test_the_contract_names_every_setting_and_only_settings_that_exist() -> None:
    text = _contract()
    section = text[text.index("## 9. Configuration") : text.index("## 10.")]
    named = set(re.findall(r"`HOOKLINE_([A-Z_]+)`", section))
    assert named == {field.upper() for field in Settings.model_fields}


@pytest.mark.parametrize(("name", "words", "default"), DOCUMENTED_DEFAULTS)
def test_each_default_the_contract_states_is_the_one_in_code(
    name: str, words: str, default: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in [v for v in os.environ if v.startswith("HOOKLINE_")]:
        monkeypatch.delenv(variable)
    assert words in _contract(), f"the contract no longer says {words!r}"
    assert getattr(Settings(), name.lower()) == default


def test_the_public_url_is_an_origin_with_an_optional_path() -> None:
    assert Settings(public_url="https://hooks.example.com/").public_url == (
        "https://hooks.example.com"
    )
    assert Settings(public_url="http://127.0.0.1:8000/hooks/").public_url == (
        "http://127.0.0.1:8000/hooks"
    )
    assert Settings(public_url=" ").public_url is None
    for bad in ("ftp://x", "https://", "hooks.example.com", "https://x:99999",
                "https://user:pw@x", "https://x/?a=1", "https://x/#top"):  # fmt: skip
        with pytest.raises(ValidationError) as refused:
            Settings(public_url=bad)
        assert "HOOKLINE_PUBLIC_URL" in str(refused.value)
        assert "pw" not in str(refused.value)  # a credential is never echoed


def test_the_replay_rate_cap_is_no_slower_than_a_replays_own_floor() -> None:
    """A key's `null` rate means this cap: at 1e-300 every such replay waited past what the
    clock can hold and failed, as a request's own rate below 0.01 did (refused at 422)."""
    assert Settings(replay_max_rate_per_s=0.01).replay_max_rate_per_s == 0.01
    with pytest.raises(ValidationError):
        Settings(replay_max_rate_per_s=1e-300)
