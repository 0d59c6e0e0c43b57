"""One vocabulary for points in time, shared by the API's `since`/`until` and the CLI's
`--since`/`--until`: an age before now (`30m`, `6h`, `7d`) or an RFC 3339 date-time with
its offset (`2026-05-01T12:00:00Z`); and one way of showing them (UTC, `Z`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from common.wire import utcnow

# An age needs its unit: a bare number would read as seconds here and as a Unix time to
# anyone used to other APIs, so it is refused rather than guessed.
_AGE = re.compile(r"^(\d{1,9}(?:\.\d{1,6})?)(s|m|h|d)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
FORMS = "an age such as 30m, 6h or 7d, or a date-time with its offset such as 2026-05-01T12:00:00Z"


class InstantError(ValueError):
    """The text is neither an age nor a date-time with an offset (the message says which)."""


def age(text: str) -> timedelta | None:
    """The age `text` names (`30m`, `6h`, `7d`, `90s`), or None if it is not an age."""
    match = _AGE.match(text.strip())
    if match is None:
        return None
    value, unit = match.groups()
    return timedelta(seconds=float(value) * _UNIT_S[unit])


def parse_instant(text: str, *, now: datetime | None = None) -> datetime:
    """An age before `now` or an absolute date-time, in UTC; `InstantError` otherwise."""
    before = age(text)
    if before is not None:
        try:
            return (now or utcnow()) - before
        except OverflowError:
            raise InstantError("an age reaching back past year 1") from None
    if not _DATE.match(text):
        raise InstantError(f"not a time: use {FORMS}")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InstantError(f"not a valid date-time: use {FORMS}") from None
    if when.tzinfo is None:
        raise InstantError("a date-time needs its offset (Z, or e.g. +02:00)")
    return as_utc(when)


def as_utc(when: datetime) -> datetime:
    """`when` in UTC, a naive value taken as UTC (a browser's `datetime-local` field has no
    offset); `InstantError` if its offset takes it outside years 1 to 9999 in UTC
    (`0001-01-01T00:00:00+14:00`), where converting it overflows."""
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    try:
        return when.astimezone(UTC)
    except OverflowError:
        raise InstantError("out of range once converted to UTC (years 1 to 9999)") from None


def format_instant(when: datetime) -> str:
    """`2026-05-01T12:00:00Z`: UTC with `Z`, as the API's JSON shows it (a naive value is
    taken as UTC, which is how the database stores it)."""
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    text = when.replace(tzinfo=None).isoformat()
    return f"{text}Z"
