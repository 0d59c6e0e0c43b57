"""`hookline dlq list|show|purge|resubmit`: wiring only. The backend (the HTTP API, or the
database directly) is chosen in `backend.py`; the rendering is in `render.py`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from common.settings import Settings
from hookline.cli import backend, render
from hookline.cli import options as o
from hookline.cli.direct import actor
from hookline.runtime import Runtime, build_runtime

dlq_app = typer.Typer(help="Find, inspect and purge dead letters.", no_args_is_help=True)
console = Console()
POISON = "poison"
DEAD_COLUMNS = [
    "id",
    "subscription_id",
    "event_type",
    "reason",
    "last_status_code",
    "attempt_count",
    "replay_count",
    "died_at",
]
POISON_COLUMNS = ["id", "source_queue", "error", "body", "received_at"]

__all__ = ["actor", "dlq_app", "runtime"]


def runtime() -> Runtime:
    """The direct mode's dependencies (`hookline gc`, which has no API twin)."""
    return build_runtime(Settings())


def query(**filters: str | None) -> dict[str, Any]:
    """The filters under the API's names (`--subscription` is `subscription_id`, ...)."""
    return {k: v for k, v in filters.items() if v is not None}


@dlq_app.command("list")
def dlq_list(
    tenant: o.Tenant = None,
    subscription: o.SubscriptionOpt = None,
    event_type: o.EventType = None,
    reason: o.Reason = None,
    status_class: o.StatusClassOpt = None,
    since: o.Since = None,
    until: o.Until = None,
    summary: Annotated[
        bool, typer.Option("--summary", help="Counts by reason, subscription.")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    cursor: Annotated[str | None, typer.Option(help="From a previous page's next_cursor.")] = None,
    output: o.OutputOpt = "table",
) -> None:
    """Dead letters, newest death first (`--reason poison`: undecodable messages)."""
    with backend.session() as ops:
        if reason == POISON:
            page = ops.poison(query(tenant=tenant, since=since, until=until), limit, cursor)
        else:
            wanted = query(
                tenant=tenant, subscription_id=subscription, event_type=event_type,
                reason=reason, status_class=status_class, since=since, until=until,
            )  # fmt: skip
            if summary:
                render.print_summary(ops.dead_summary(wanted), output)
                return
            page = ops.dead_letters(wanted, limit, cursor)
    if output == "json":
        typer.echo(o.dump(page))
        return
    title, columns = (
        ("poison messages", POISON_COLUMNS) if reason == POISON else ("dead letters", DEAD_COLUMNS)
    )
    console.print(render.table(title, page["data"], columns))
    if page.get("next_cursor"):
        console.print(f"more: --cursor {page['next_cursor']}")


@dlq_app.command("show")
def dlq_show(
    delivery_id: Annotated[str, typer.Argument(help="Delivery id.")],
    output: o.OutputOpt = "table",
) -> None:
    """One dead letter: its event, and every attempt with the request headers it sent
    (signatures and the subscription's own header values masked)."""
    with backend.session() as ops:
        shown = ops.dead_letter(delivery_id)
    if output == "json":
        typer.echo(o.dump(shown))
        return
    console.print(
        f"[bold]{delivery_id}[/bold]  dead, reason {shown['reason']}, "
        f"replayed {shown['replay_count']}x"
    )
    console.print("event:", render.plain(o.dump(shown["event"])))
    attempts = [
        {**a, "response_body": (a.get("response_body") or "")[:200]} for a in shown["attempts"]
    ]
    columns = [c for c in attempts[0] if c != "request_headers"] if attempts else ["attempt"]
    console.print(render.table("attempts", attempts, columns))
    for attempt in attempts:
        headers = attempt.get("request_headers")
        title = f"headers sent by attempt {attempt['attempt']}"
        if headers:
            console.print(render.table(title, headers, ["name", "value"]))
        else:
            console.print(f"{title}: none recorded (nothing was sent, or before 0014)")


@dlq_app.command("purge")
def dlq_purge(
    tenant: o.Tenant = None,
    subscription: o.SubscriptionOpt = None,
    event_type: o.EventType = None,
    reason: o.Reason = None,
    status_class: o.StatusClassOpt = None,
    since: o.Since = None,
    until: o.Until = None,
    everything: o.All = False,
    yes: o.Yes = False,
    dry_run: o.DryRun = False,
) -> None:
    """Drop dead letters (they become `cancelled`, and `gc` removes them later), or poison
    messages with `--reason poison` (deleted)."""
    if reason == POISON:
        wanted = query(tenant=tenant, since=since, until=until)
        what = "poison messages"
    else:
        wanted = query(
            tenant=tenant, subscription_id=subscription, event_type=event_type,
            reason=reason, status_class=status_class, since=since, until=until,
        )  # fmt: skip
        what = "dead letters"
    with backend.session() as ops:
        purge = ops.purge_poison if reason == POISON else ops.purge
        counted = purge({**wanted, "all": everything, "dry_run": True})
        console.print(f"{counted['matched']} {what} match")
        if dry_run or counted["matched"] == 0:
            return
        if not yes and not typer.confirm(f"Purge {counted['matched']} {what}?"):
            raise typer.Exit(1)
        done = purge({**wanted, "all": everything})
    console.print(f"purged {done['purged']} {what}")


@dlq_app.command("resubmit")
def dlq_resubmit(
    poison_id: Annotated[str, typer.Argument(help="Poison message id (psn_...).")],
    body_file: Annotated[
        Path | None,
        typer.Option(
            "--body-file",
            help="A corrected body to send instead, as it is (at most an event's size).",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
) -> None:
    """Send a poison message back to the queue it came from, after the cause is fixed."""
    body = body_file.read_bytes() if body_file else None
    if body is not None:
        from hookline.api.limits import MAX_BODY_BYTES  # the API's limit, checked here too

        if len(body) > MAX_BODY_BYTES:
            typer.echo(
                f"hookline: payload_too_large: --body-file holds {len(body)} bytes; a message "
                f"is at most {MAX_BODY_BYTES} bytes, an event's size",
                err=True,
            )
            raise typer.Exit(2)
    with backend.session() as ops:
        row = ops.resubmit_poison(poison_id, body)
    console.print(f"re-submitted {poison_id} to {row['source_queue']}")
