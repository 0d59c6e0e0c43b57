"""`hookline gc`: wiring only; the logic is in `dispatcher.retention`, (expired
`Idempotency-Key` answers) `hookline.api.idempotency_gc` and (portal links expired more than
a day ago) `hookline.services.portal_links`."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from common.errors import ConfigurationError
from common.settings import parse_duration
from common.wire import utcnow
from dispatcher import retention
from hookline.api.idempotency_gc import collect_expired
from hookline.cli import options as o
from hookline.cli.dlq import runtime
from hookline.services import audit, portal_links


def gc(
    older_than: Annotated[str, typer.Option("--older-than", help="Age, e.g. 30d.")] = "30d",
    include_dead: Annotated[
        bool, typer.Option("--include-dead", help="Also remove old dead letters.")
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, max=10_000)] = retention.BATCH_SIZE,
    audit_older_than: Annotated[
        str | None,
        typer.Option("--audit-older-than", help="Also remove audit entries this old, e.g. 365d."),
    ] = None,
) -> None:
    """Remove old finished deliveries, attempts and events in small batches.

    Dead letters stay until they are replayed or purged, unless --include-dead. The audit
    log is kept whole unless --audit-older-than."""
    try:
        cutoff = utcnow() - timedelta(seconds=parse_duration(older_than))
        audit_cutoff = (
            utcnow() - timedelta(seconds=parse_duration(audit_older_than))
            if audit_older_than is not None
            else None
        )
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc)) from None
    rt = runtime()
    try:
        removed = retention.collect(
            rt.sessionmaker, cutoff, include_dead=include_dead, batch_size=batch_size
        )
        expired = collect_expired(rt.sessionmaker, ttl_s=rt.settings.idempotency_ttl_s)
        links = portal_links.sweep_all(rt.sessionmaker)
        entries = (
            audit.delete_before(rt.sessionmaker, audit_cutoff, batch_size)
            if audit_cutoff is not None
            else 0
        )
    finally:
        rt.close()
    shown = {"older_than": older_than, "cutoff": cutoff, **removed.to_json()}
    typer.echo(
        o.dump(
            {**shown, "idempotency_keys": expired, "portal_links": links, "audit_entries": entries}
        )
    )
