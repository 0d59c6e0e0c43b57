"""`hookline tenant create` and `hookline tenant key create|list|revoke`: the operator's
shell twin of the admin routes, with the same rules and audit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from common import logs
from common.settings import Settings
from hookline.api.errors import problems
from hookline.api.schemas import ApiKeyCreate
from hookline.runtime import build_runtime
from hookline.services import tenants
from hookline.services.audit import CLI, Actor
from hookline.services.errors import NotFound

tenant_app = typer.Typer(help="Manage tenants.", no_args_is_help=True)
key_app = typer.Typer(help="Manage a tenant's API keys.", no_args_is_help=True)
tenant_app.add_typer(key_app, name="key")
console = Console()
SHELL = Actor(CLI)


def _settings() -> Settings:
    settings = Settings()
    logs.configure(settings.log_format, settings.log_level)
    return settings


def _key_spec(
    scopes: Sequence[str] | None, cidrs: Sequence[str] | None, name: str | None
) -> ApiKeyCreate:
    """The options as the admin route's body, refused (exit 2) with the reasons."""
    fields: dict[str, object] = {"allowed_cidrs": list(cidrs or []), "name": name}
    if scopes:
        fields["scopes"] = list(scopes)
    try:
        return ApiKeyCreate.model_validate(fields)
    except ValidationError as exc:
        console.print(f"[red]{problems(exc.errors())}[/red]")
        raise typer.Exit(2) from None


@tenant_app.command("create")
def tenant_create(name: Annotated[str, typer.Argument(help="A name for the tenant.")]) -> None:
    """Create a tenant and its first API key (every scope); the key is shown once."""
    runtime = build_runtime(_settings())
    try:
        with runtime.sessionmaker() as session, session.begin():
            tenant, key = tenants.create_tenant(session, name, actor=SHELL)
    finally:
        runtime.close()
    console.print(f"tenant [bold]{tenant.id}[/bold] ({name})")
    console.print(f"api key: [bold]{key}[/bold]  (shown once; store it now)")


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
    spec = _key_spec(scope, cidr, name)
    runtime = build_runtime(_settings())
    try:
        with runtime.sessionmaker() as session, session.begin():
            row, key = tenants.issue_key(session, tenant, spec, actor=SHELL)
    except NotFound:
        console.print(f"[red]no tenant {tenant}[/red]")
        raise typer.Exit(2) from None
    finally:
        runtime.close()
    console.print(f"key [bold]{row.id}[/bold] for {tenant}")
    console.print(f"api key: [bold]{key}[/bold]  (shown once; store it now)")


@key_app.command("list")
def key_list(tenant: Annotated[str, typer.Argument(help="The tenant id.")]) -> None:
    """A tenant's keys: id, prefix, scopes, networks, revocation."""
    runtime = build_runtime(_settings())
    try:
        with runtime.sessionmaker() as session:
            rows = tenants.list_keys(session, tenant)
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
    runtime = build_runtime(_settings())
    try:
        with runtime.sessionmaker() as session, session.begin():
            tenants.revoke_key(session, tenant, key_id, actor=SHELL)
    except NotFound:
        console.print(f"[red]no key {key_id} for tenant {tenant}[/red]")
        raise typer.Exit(1) from None
    finally:
        runtime.close()
    console.print(f"revoked {key_id}")
