"""`common.instants`: the time words the API's filters and the CLI's options share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from common.instants import InstantError, as_utc, format_instant, parse_instant

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "before"),
    [("90s", timedelta(seconds=90)), ("30m", timedelta(minutes=30)),
     ("1h", timedelta(hours=1)), ("7d", timedelta(days=7)), ("1.5h", timedelta(minutes=90))],
)  # fmt: skip
def test_an_age_is_now_minus_it(text: str, before: timedelta) -> None:
    assert parse_instant(text, now=NOW) == NOW - before


def test_a_date_time_with_an_offset_is_read_in_utc() -> None:
    assert parse_instant("2026-05-01T14:00:00+02:00") == NOW
    assert parse_instant("2026-05-01T12:00:00Z") == NOW


@pytest.mark.parametrize(
    ("text", "says"),
    [("3600", "not a time"), ("1y", "not a time"), ("soon", "not a time"),
     ("2026-05-01T12:00:00", "needs its offset"), ("2026-13-01T00:00:00Z", "not a valid"),
     ("0001-01-01T00:00:00+14:00", "out of range"), ("999999d", "past year 1")],
)  # fmt: skip
def test_anything_else_is_refused_in_words(text: str, says: str) -> None:
    with pytest.raises(InstantError, match=says):
        parse_instant(text)


def test_times_are_shown_in_utc_with_z() -> None:
    assert format_instant(NOW) == "2026-05-01T12:00:00Z"
    assert format_instant(NOW.astimezone(timezone(timedelta(hours=-5)))) == "2026-05-01T12:00:00Z"
    assert format_instant(datetime(2026, 5, 1, 12, 0, 0, 5000)) == "2026-05-01T12:00:00.005000Z"


def test_as_utc_takes_a_naive_time_as_utc_and_refuses_one_outside_the_calendar() -> None:
    assert as_utc(datetime(2026, 5, 1, 14, tzinfo=timezone(timedelta(hours=2)))) == NOW
    assert as_utc(datetime(2026, 5, 1, 12)) == NOW
    for text in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        with pytest.raises(InstantError, match="out of range"):
            as_utc(datetime.fromisoformat(text))
