"""`hookline dlq list|show|purge|resubmit`: wiring only; the logic is in
`dispatcher.deadletters`, the rendering in `render.py`."""

from __future__ import annotations

import getpass
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from common.db.models import CANCELLED, PoisonMessage
from common.settings import Settings
from common.transport import topology
from dispatcher.deadletters import (
    PoisonFilter,
    ResubmitError,
    drain_poison,
    list_dead,
    list_poison,
    purge_dead,
    purge_poison,
    resubmit_poison,
    show_dead,
    summarize_dead,
)
from dispatcher.replay import audit
from hookline.api.cursor import decode_position, encode_position
from hookline.api.errors import ApiError
from hookline.cli import options as o
from hookline.cli import render
from hookline.runtime import Runtime, build_runtime

dlq_app = typer.Typer(help="Find, inspect and purge dead letters.", no_args_is_help=True)
console = Console()
POISON = "poison"


def actor() -> str:
    return f"cli:{getpass.getuser()}"[:64]


def runtime() -> Runtime:
    return build_runtime(Settings())


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
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    cursor: Annotated[str | None, typer.Option(help="From a previous page's next_cursor.")] = None,
    output: o.OutputOpt = "table",
) -> None:
    """Dead letters, newest death first (`--reason poison`: undecodable messages)."""
    try:
        after = decode_position(cursor) if cursor else None
    except ApiError as exc:
        raise typer.BadParameter(exc.message) from None
    rt = runtime()
    try:
        with rt.sessionmaker() as session:
            if reason == POISON:
                rt.transport.declare(topology.build(rt.settings.retry_tiers_s))
                drain_poison(rt.transport, rt.sessionmaker)
                wanted = PoisonFilter(
                    tenant, None, o.parse_time(since, "--since"), o.parse_time(until, "--until")
                )
                found = list_poison(session, wanted, limit=limit + 1, after=after)
                rows, columns = (
                    [render.poison_row(r) for r in found],
                    ["id", "source_queue", "error", "body", "received_at"],
                )
                positions: list[tuple[datetime | None, str]] = [
                    (r.received_at, r.id) for r in found
                ]
            else:
                dead = o.dead_filter(
                    tenant=tenant,
                    subscription=subscription,
                    event_type=event_type,
                    reason=reason,
                    status_class=status_class,
                    since=since,
                    until=until,
                )
                if summary:
                    counted = summarize_dead(session, dead).to_json()
                    render.print_summary(counted, output)
                    return
                dead_rows = list_dead(session, dead, limit=limit + 1, after=after)
                rows = [render.dead_row(r) for r in dead_rows]
                columns = [
                    "id",
                    "subscription_id",
                    "event_type",
                    "reason",
                    "last_status_code",
                    "attempt_count",
                    "replay_count",
                    "died_at",
                ]
                positions = [(r.finished_at, r.id) for r in dead_rows]
    finally:
        rt.close()
    more = len(rows) > limit
    rows = rows[:limit]
    at, last_id = positions[limit - 1] if more else (None, "")
    next_cursor = encode_position(at, last_id) if at is not None else None
    if output == "json":
        typer.echo(o.dump({"data": rows, "next_cursor": next_cursor}))
        return
    console.print(
        render.table("poison messages" if reason == POISON else "dead letters", rows, columns)
    )
    if next_cursor:
        console.print(f"more: --cursor {next_cursor}")


@dlq_app.command("show")
def dlq_show(
    delivery_id: Annotated[str, typer.Argument(help="Delivery id.")],
    output: o.OutputOpt = "table",
) -> None:
    """One dead letter: its event, every attempt, and the headers it was sent with."""
    rt = runtime()
    try:
        with rt.sessionmaker() as session:
            found = show_dead(session, delivery_id, tenant=None)
    finally:
        rt.close()
    if found is None:
        console.print(f"[red]no delivery {delivery_id}[/red]")
        raise typer.Exit(1)
    ev = found.event
    attempts = [
        {
            "attempt": a.attempt,
            "outcome": a.outcome,
            "status_code": a.status_code,
            "duration_s": round(a.duration_s, 3),
            "error": a.error,
            "response_body": (a.response_body or "")[:200],
            "at": a.created_at,
        }
        for a in found.attempts
    ]
    shown = {
        **render.dead_row(found.delivery),
        "status": found.delivery.status,
        "event": None
        if ev is None
        else {
            "id": ev.id,
            "type": ev.type,
            "operation": ev.operation,
            "timestamp": ev.timestamp,
            "data": ev.data,
        },
        "attempts": attempts,
        "headers": found.headers,
    }
    if output == "json":
        typer.echo(o.dump(shown))
        return
    d = found.delivery
    console.print(
        f"[bold]{delivery_id}[/bold]  status {d.status}, reason {d.dead_reason}, "
        f"replayed {d.replay_count}x"
    )
    console.print("event:", o.dump(shown["event"]))
    console.print(
        render.table("attempts", attempts, list(attempts[0]) if attempts else ["attempt"])
    )
    headers = [{"name": k, "value": v} for k, v in found.headers.items()]
    console.print(render.table("headers sent", headers, ["name", "value"]))


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
    rt = runtime()
    try:
        with rt.sessionmaker() as session, session.begin():
            if reason == POISON:
                rt.transport.declare(topology.build(rt.settings.retry_tiers_s))
                drain_poison(rt.transport, rt.sessionmaker)
                wanted = PoisonFilter(
                    tenant, None, o.parse_time(since, "--since"), o.parse_time(until, "--until")
                )
                narrowed = any((tenant, since, until))
                count = session.query(PoisonMessage).filter(*wanted.conditions()).count()
            else:
                dead = o.dead_filter(
                    tenant=tenant,
                    subscription=subscription,
                    event_type=event_type,
                    reason=reason,
                    status_class=status_class,
                    since=since,
                    until=until,
                )
                narrowed = dead.narrows or tenant is not None
                count = summarize_dead(session, dead).total
            what = "poison messages" if reason == POISON else "dead letters"
            if not narrowed and not everything:
                console.print("[red]refused:[/red] no filter given; name what to purge, or --all")
                raise typer.Exit(2)
            console.print(f"{count} {what} match")
            if dry_run or count == 0:
                return
            if not yes and not typer.confirm(f"Purge {count} {what}?"):
                raise typer.Exit(1)
            if reason == POISON:
                purged = purge_poison(session, wanted)
            else:
                purged = purge_dead(session, dead, status=CANCELLED)
            audit(
                session,
                actor=actor(),
                tenant_id=tenant,
                action="dlq.purge",
                resource_type=what.replace(" ", "_"),
                resource_id=None,
                details={"purged": purged, "tenant": tenant, "reason": reason},
            )
    finally:
        rt.close()
    console.print(f"purged {purged} {what}")


@dlq_app.command("resubmit")
def dlq_resubmit(
    poison_id: Annotated[str, typer.Argument(help="Poison message id (psn_...).")],
    body_file: Annotated[
        Path | None,
        typer.Option(
            "--body-file",
            help="A corrected body to send instead.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
) -> None:
    """Send a poison message back to the queue it came from, after the cause is fixed."""
    rt = runtime()
    try:
        with rt.sessionmaker() as session, session.begin():
            row = session.get(PoisonMessage, poison_id)
            if row is None:
                console.print(f"[red]no poison message {poison_id}[/red]")
                raise typer.Exit(1)
            body = body_file.read_bytes() if body_file else None
            rt.transport.declare(topology.build(rt.settings.retry_tiers_s))
            try:
                resubmit_poison(
                    session,
                    rt.transport,
                    row,
                    body=body,
                    publish_timeout_s=rt.settings.publish_timeout_s,
                )
            except ResubmitError as exc:
                console.print(f"[red]{exc}[/red]")
                raise typer.Exit(2) from None
            audit(
                session,
                actor=actor(),
                tenant_id=row.tenant_id,
                action="poison.resubmit",
                resource_type="poison_message",
                resource_id=row.id,
                details={"source_queue": row.source_queue, "corrected": body is not None},
            )
    finally:
        rt.close()
    console.print(f"re-submitted {poison_id} to {row.source_queue}")
