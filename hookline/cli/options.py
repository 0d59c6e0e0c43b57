"""What the operations commands share: the filter options, time parsing, output switches."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from common.instants import InstantError, format_instant, parse_instant
from dispatcher.deadletters import DeadFilter, FilterError

Output = Literal["table", "json"]

Tenant = Annotated[str | None, typer.Option("--tenant", help="Tenant id.")]
SubscriptionOpt = Annotated[str | None, typer.Option("--subscription", help="Subscription id.")]
EventType = Annotated[str | None, typer.Option("--event-type", help="Exact event type.")]
Reason = Annotated[
    str | None,
    typer.Option(
        "--reason", help="Why it died: max_attempts, endpoint_disabled, poison, ... (exact)."
    ),
]
StatusClassOpt = Annotated[
    str | None, typer.Option("--status-class", help="Last HTTP status: 4xx, 5xx, none, ...")
]
Since = Annotated[
    str | None,
    typer.Option(
        "--since", help="Died at or after: an age (30m, 6h, 7d) or a date-time with offset."
    ),
]
Until = Annotated[
    str | None, typer.Option("--until", help="Died before: an age or a date-time with offset.")
]
OutputOpt = Annotated[
    Output, typer.Option("--output", "-o", help="table (for people) or json (for scripts).")
]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
All = Annotated[bool, typer.Option("--all", help="Allow an action without any filter.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Count and show; change nothing.")]


def parse_time(text: str | None, option: str) -> datetime | None:
    """An age before now (`6h`) or a date-time with its offset: the API's words too."""
    if text is None:
        return None
    try:
        return parse_instant(text)
    except InstantError as exc:
        raise typer.BadParameter(f"{option}: {exc}") from None


def read_ids(path: Path | None) -> tuple[str, ...]:
    """Delivery ids from a file: one a line, or the JSON of `dlq list -o json`."""
    if path is None:
        return ()
    text = path.read_text()
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):  # not JSON (or nested past the parser): lines
        return tuple(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))
    rows = parsed.get("data", []) if isinstance(parsed, dict) else parsed
    return tuple(dict.fromkeys(r["id"] if isinstance(r, dict) else str(r) for r in rows))


def dead_filter(
    *,
    tenant: str | None,
    subscription: str | None,
    event_type: str | None,
    reason: str | None,
    status_class: str | None,
    since: str | None,
    until: str | None,
    ids: tuple[str, ...] = (),
) -> DeadFilter:
    try:
        return DeadFilter(
            tenant=tenant,
            subscription=subscription,
            event_type=event_type,
            reason=reason,
            status_class=status_class,
            since=parse_time(since, "--since"),
            until=parse_time(until, "--until"),
            ids=ids,
        )
    except FilterError as exc:
        raise typer.BadParameter(str(exc)) from None


def parse_rate(text: str) -> float | None:
    """`50`, `50/s` or `unlimited` (None)."""
    value = text.strip().lower().removesuffix("/s")
    if value in ("unlimited", "0", "none"):
        return None
    try:
        rate = float(value)
    except ValueError:
        raise typer.BadParameter("--rate: a number of copies per second, or unlimited") from None
    if rate <= 0:
        raise typer.BadParameter("--rate must be positive (or unlimited)")
    return rate


def shown(value: Any) -> Any:
    """A value as the API's JSON has it: date-times in UTC with `Z`."""
    return format_instant(value) if isinstance(value, datetime) else str(value)


def dump(value: Any) -> str:
    return json.dumps(value, default=shown, indent=2)
