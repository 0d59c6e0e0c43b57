"""`hookline subscription list|create|update|pause|resume|delete`: a tenant's subscriptions,
through the API (a tenant's key; or the admin token with `--tenant` to register one on the
tenant's behalf) or directly (`--tenant` always)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from hookline.cli import backend, render
from hookline.cli import options as o

subscription_app = typer.Typer(help="Manage a tenant's subscriptions.", no_args_is_help=True)
console = Console()
COLUMNS = ["id", "url", "event_types", "status", "created_at"]
TenantOpt = Annotated[
    str | None,
    typer.Option("--tenant", help="Tenant id (direct mode; or the admin token registering one)."),
]
SubscriptionId = Annotated[str, typer.Argument(help="Subscription id (sub_...).")]
PropagateTrace = Annotated[
    bool | None,
    typer.Option(
        "--propagate-trace/--no-propagate-trace",
        help="Send each attempt's W3C traceparent with its webhooks (when Hookline traces).",
    ),
]


@subscription_app.command("list")
def subscription_list(tenant: TenantOpt = None, output: o.OutputOpt = "table") -> None:
    """The tenant's subscriptions, oldest first."""
    with backend.session() as ops:
        page = ops.subscriptions(tenant)
    if output == "json":
        typer.echo(o.dump(page))
        return
    rows = [{**row, "event_types": ",".join(row["event_types"])} for row in page["data"]]
    console.print(render.table("subscriptions", rows, COLUMNS))


@subscription_app.command("create")
def subscription_create(
    url: Annotated[str, typer.Argument(help="The receiver's URL (https://...).")],
    event_type: Annotated[
        list[str], typer.Option("--event-type", help="order.created, order.* or * (repeat).")
    ],
    tenant: TenantOpt = None,
    operation: Annotated[
        list[str] | None, typer.Option("--operation", help="Only these operations (repeat).")
    ] = None,
    description: Annotated[str | None, typer.Option(help="What it is for.")] = None,
    propagate_trace: PropagateTrace = None,
    output: o.OutputOpt = "table",
) -> None:
    """Subscribe a URL; the signing secret is shown once. With a tenant's key the endpoint
    must pass the verification handshake; an operator's registration is active at once."""
    body: dict[str, object] = {"url": url, "event_types": event_type}
    if operation:
        body["operations"] = operation
    if description is not None:
        body["description"] = description
    if propagate_trace is not None:
        body["propagate_trace"] = propagate_trace
    with backend.session() as ops:
        made = ops.subscribe(tenant, body)
    if output == "json":
        typer.echo(o.dump(made))
        return
    console.print(f"subscription [bold]{made['id']}[/bold]", render.plain(made["url"]),
                  f"{made['status']}")  # fmt: skip
    check = made.get("verification") or {}
    if check.get("status") == "failed":
        console.print("[yellow]verification failed:[/yellow]", render.plain(check.get("reason")))
    if made.get("secret"):
        console.print(f"secret: [bold]{made['secret']}[/bold]  (shown once; store it now)")


@subscription_app.command("update")
def subscription_update(
    subscription_id: SubscriptionId,
    tenant: TenantOpt = None,
    description: Annotated[str | None, typer.Option(help="What it is for.")] = None,
    propagate_trace: PropagateTrace = None,
    output: o.OutputOpt = "table",
) -> None:
    """Change what the options name; the rest stays as it is."""
    body: dict[str, object] = {}
    if description is not None:
        body["description"] = description
    if propagate_trace is not None:
        body["propagate_trace"] = propagate_trace
    if not body:
        raise typer.BadParameter("name something to change: --description, --propagate-trace")
    with backend.session() as ops:
        row = ops.change_subscription(tenant, subscription_id, body)
    if output == "json":
        typer.echo(o.dump(row))
        return
    trace = "on" if row.get("propagate_trace") else "off"
    console.print(f"{row['id']}: {row['status']}, trace propagation {trace}")


def _act(action: str, tenant: str | None, subscription_id: str) -> None:
    with backend.session() as ops:
        row = ops.subscription_action(tenant, subscription_id, action)
    console.print(f"{row['id']}: {row['status']}")


@subscription_app.command("pause")
def subscription_pause(subscription_id: SubscriptionId, tenant: TenantOpt = None) -> None:
    """Stop routing new events to it until it is resumed."""
    _act("pause", tenant, subscription_id)


@subscription_app.command("resume")
def subscription_resume(subscription_id: SubscriptionId, tenant: TenantOpt = None) -> None:
    """Make a paused or disabled subscription active again (it must have been verified)."""
    _act("resume", tenant, subscription_id)


@subscription_app.command("delete")
def subscription_delete(subscription_id: SubscriptionId, tenant: TenantOpt = None) -> None:
    """Delete it: nothing more is routed to it; its deliveries stay readable."""
    with backend.session() as ops:
        ops.unsubscribe(tenant, subscription_id)
    console.print(f"deleted {subscription_id}")
