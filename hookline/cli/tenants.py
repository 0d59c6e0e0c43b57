"""`hookline tenant create|list|limits` and `hookline tenant key create|list|revoke`: the
operator's shell twin of the admin routes, through the API (`HOOKLINE_API_URL`, admin
token) or the database directly, with the same rules and audit."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated

import typer
from rich.console import Console

from hookline.cli import backend, render
from hookline.cli import options as o

tenant_app = typer.Typer(help="Manage tenants.", no_args_is_help=True)
key_app = typer.Typer(help="Manage a tenant's API keys.", no_args_is_help=True)
tenant_app.add_typer(key_app, name="key")
console = Console()


def _key_spec(
    scopes: Sequence[str] | None, cidrs: Sequence[str] | None, name: str | None
) -> dict[str, object]:
    """The options as the admin route's body (checked by the route, or by its schema in
    the direct mode)."""
    fields: dict[str, object] = {"allowed_cidrs": list(cidrs or []), "name": name}
    if scopes:
        fields["scopes"] = list(scopes)
    return fields


@tenant_app.command("create")
def tenant_create(name: Annotated[str, typer.Argument(help="A name for the tenant.")]) -> None:
    """Create a tenant and its first API key (every scope); the key is shown once."""
    with backend.session() as ops:
        tenant = ops.create_tenant(name)
    console.print(f"tenant [bold]{tenant['id']}[/bold] ({tenant['name']})")
    console.print(f"api key: [bold]{tenant['api_key']}[/bold]  (shown once; store it now)")


@tenant_app.command("list")
def tenant_list(
    limit: Annotated[int, typer.Option(min=1, max=500)] = 100,
    cursor: Annotated[str | None, typer.Option(help="From a previous page's next_cursor.")] = None,
    output: o.OutputOpt = "table",
) -> None:
    """Every tenant, oldest first, a page at a time."""
    with backend.session() as ops:
        page = ops.tenants(limit, cursor)
    if output == "json":
        typer.echo(o.dump(page))
        return
    console.print(render.table("tenants", page["data"], ["id", "name", "created_at"]))
    if page["next_cursor"]:
        console.print(f"more: --cursor {page['next_cursor']}", highlight=False)


def _limit_change(text: str) -> tuple[str, object]:
    """`name=value` of `--set`: a number, or `default` (null: the deployment's value)."""
    name, sign, value = text.partition("=")
    if not sign or not name:
        raise typer.BadParameter(f"--set {text!r}: expected name=value, e.g. requests_per_s=500")
    if value in ("default", "null"):
        return name, None
    try:
        return name, int(value)  # the count limits take integers only
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise typer.BadParameter(f"--set {text!r}: {value!r} is not a number or default")
    return name, number


@tenant_app.command("limits")
def tenant_limits(
    tenant: Annotated[str, typer.Argument(help="The tenant id.")],
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="name=value (repeat): the tenant's own value; name=default puts it back.",
        ),
    ] = None,
    output: o.OutputOpt = "table",
) -> None:
    """Show a tenant's API limits (in force, its own, the defaults), or set some with --set
    (audited; API processes apply it within 5 s)."""
    changes = dict(_limit_change(text) for text in set_ or [])
    with backend.session() as ops:
        shown = ops.change_limits(tenant, changes) if changes else ops.limits(tenant)
    if output == "json":
        typer.echo(o.dump(shown))
        return
    rows = [
        {"limit": name, "in force": f"{value:g}", "own": _number(shown["overrides"][name]),
         "default": f"{shown['defaults'][name]:g}"}
        for name, value in shown["effective"].items()
    ]  # fmt: skip
    console.print(render.table(f"limits of {shown['tenant_id']}", rows, list(rows[0])))


def _number(value: float | None) -> str | None:
    return None if value is None else f"{value:g}"


@key_app.command("create")
def key_create(
    tenant: Annotated[str, typer.Argument(help="The tenant id.")],
    scope: Annotated[
        list[str] | None, typer.Option(help="A scope (repeat); default events:write.")
    ] = None,
    cidr: Annotated[list[str] | None, typer.Option(help="An allowed source network.")] = None,
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
) -> None:
    """Issue an API key for a tenant; the key is shown once."""
    with backend.session() as ops:
        key = ops.issue_key(tenant, _key_spec(scope, cidr, name))
    console.print(f"key [bold]{key['id']}[/bold] for {tenant}")
    console.print(f"api key: [bold]{key['api_key']}[/bold]  (shown once; store it now)")


@key_app.command("list")
def key_list(tenant: Annotated[str, typer.Argument(help="The tenant id.")]) -> None:
    """A tenant's keys: id, prefix, scopes, networks, revocation."""
    with backend.session() as ops:
        rows = ops.keys(tenant)["data"]
    for row in rows:
        state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
        networks = ",".join(row["allowed_cidrs"]) or "anywhere"
        console.print(
            f"{row['id']}  {row['prefix']}...  {' '.join(row['scopes'])}  {networks}  {state}",
            highlight=False,
        )


@key_app.command("revoke")
def key_revoke(
    tenant: Annotated[str, typer.Argument(help="The tenant id.")],
    key_id: Annotated[str, typer.Argument(help="The key id (key_...).")],
) -> None:
    """Revoke a key (API processes stop accepting it within HOOKLINE_API_KEY_CACHE_S x 2)."""
    with backend.session() as ops:
        ops.revoke_key(tenant, key_id)
    console.print(f"revoked {key_id}")
