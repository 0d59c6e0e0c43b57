"""`hookline tenant create` and `hookline tenant key create|list|revoke`: the operator's
shell twin of the admin routes, with the same rules and audit."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from common import logs
from common.settings import Settings
from hookline.runtime import build_runtime

tenant_app = typer.Typer(help="Manage tenants.", no_args_is_help=True)
key_app = typer.Typer(help="Manage a tenant's API keys.", no_args_is_help=True)
tenant_app.add_typer(key_app, name="key")
console = Console()


def _settings() -> Settings:
    settings = Settings()
    logs.configure(settings.log_format, settings.log_level)
    return settings


@tenant_app.command("create")
def tenant_create(name: Annotated[str, typer.Argument(help="A name for the tenant.")]) -> None:
    """Create a tenant and its first API key (every scope); the key is shown once."""
    from hookline.api.auth import new_tenant

    settings = _settings()
    runtime = build_runtime(settings)
    try:
        with runtime.sessionmaker() as session, session.begin():
            tenant, key = new_tenant(session, name)
    finally:
        runtime.close()
    console.print(f"tenant [bold]{tenant.id}[/bold] ({name})")
    console.print(f"api key: [bold]{key}[/bold]  (shown once; store it now)")


@key_app.command("create")
def key_create(
    tenant: Annotated[str, typer.Argument(help="The tenant id.")],
    scope: Annotated[list[str] | None, typer.Option(help="A scope (repeat); default all.")] = None,
    cidr: Annotated[list[str] | None, typer.Option(help="An allowed source network.")] = None,
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
) -> None:
    """Issue an API key for a tenant; the key is shown once."""
    from hookline.api.keys import create_key_from_cli

    runtime = build_runtime(_settings())
    try:
        key_id, key = create_key_from_cli(runtime.sessionmaker, tenant, scope, cidr, name)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    finally:
        runtime.close()
    console.print(f"key [bold]{key_id}[/bold] for {tenant}")
    console.print(f"api key: [bold]{key}[/bold]  (shown once; store it now)")


@key_app.command("list")
def key_list(tenant: Annotated[str, typer.Argument(help="The tenant id.")]) -> None:
    """A tenant's keys: id, prefix, scopes, networks, revocation."""
    from hookline.api.keys import list_keys

    runtime = build_runtime(_settings())
    try:
        rows = list_keys(runtime.sessionmaker, tenant)
    finally:
        runtime.close()
    for row in rows:
        state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
        networks = ",".join(row.allowed_cidrs) or "anywhere"
        console.print(f"{row.id}  {row.prefix}...  {' '.join(row.scopes)}  {networks}  {state}")


@key_app.command("revoke")
def key_revoke(
    tenant: Annotated[str, typer.Argument(help="The tenant id.")],
    key_id: Annotated[str, typer.Argument(help="The key id (key_...).")],
) -> None:
    """Revoke a key (API processes stop accepting it within HOOKLINE_API_KEY_CACHE_S x 2)."""
    from hookline.api.keys import revoke_key

    runtime = build_runtime(_settings())
    try:
        found = revoke_key(runtime.sessionmaker, tenant, key_id)
    finally:
        runtime.close()
    if not found:
        console.print(f"[red]no key {key_id} for tenant {tenant}[/red]")
        raise typer.Exit(1)
    console.print(f"revoked {key_id}")
