"""`hookline tenant create` and `hookline tenant key create|list|revoke`: the operator's
shell twin of the admin routes, through the API (`HOOKLINE_API_URL`, admin token) or the
database directly, with the same rules and audit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer
from rich.console import Console

from hookline.cli import backend

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
