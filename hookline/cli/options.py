"""What the operations commands share: the filter options, time parsing, output switches."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from common.errors import ConfigurationError
from common.settings import parse_duration
from common.wire import utcnow
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
    str | None, typer.Option("--since", help="Died at or after: ISO 8601, or an age like 6h.")
]
Until = Annotated[str | None, typer.Option("--until", help="Died before: ISO 8601 or an age.")]
OutputOpt = Annotated[
    Output, typer.Option("--output", "-o", help="table (for people) or json (for scripts).")
]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
All = Annotated[bool, typer.Option("--all", help="Allow an action without any filter.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Count and show; change nothing.")]


def parse_time(text: str | None, option: str) -> datetime | None:
    """ISO 8601 with a zone (a naive one is taken as UTC), or an age (`6h`) before now."""
    if text is None:
        return None
    try:
        return utcnow() - timedelta(seconds=parse_duration(text))
    except ConfigurationError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{option}: use ISO 8601 or an age like 30m, 6h, 2d") from None
    return when if when.tzinfo else when.replace(tzinfo=utcnow().tzinfo)


def read_ids(path: Path | None) -> tuple[str, ...]:
    """Delivery ids from a file: one a line, or the JSON of `dlq list -o json`."""
    if path is None:
        return ()
    text = path.read_text()
    try:
        parsed = json.loads(text)
    except ValueError:
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


def dump(value: Any) -> str:
    return json.dumps(value, default=str, indent=2)
