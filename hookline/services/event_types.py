"""The event-type catalogue: a tenant's event types, what they mean, and the JSON Schema of
their `data`; what the catalogue routes, the portal and the ingest check share.

Each function takes the caller's session; the caller commits. Every change bumps the
entry's `version`, which is how the API processes' compiled-validator caches know a schema
changed (`hookline.api.schema_check`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from common.db.models import EventTypeEntry
from common.wire import OWN_TYPE_PREFIX, new_id, utcnow
from hookline.api.catalogue_schemas import EventTypeCreate
from hookline.services import audit, event_schemas, tenant_settings
from hookline.services.audit import Actor
from hookline.services.errors import Conflict, Invalid, NotFound
from hookline.services.tenants import get as get_tenant

MAX_EVENT_TYPES = 1000  # per tenant
# Hookline's own operational events are never catalogued by a tenant, and may always be
# subscribed to.
OWN_PREFIX = OWN_TYPE_PREFIX


class Uncatalogued(Invalid):
    """A subscription names event types the tenant's catalogue does not have."""

    code = "uncatalogued_event_type"


def _escaped(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def of_tenant(
    tenant_id: str,
    *,
    group: str | None = None,
    deprecated: bool | None = None,
    name_prefix: str | None = None,
) -> Select[tuple[EventTypeEntry]]:
    """The query for a tenant's catalogue, filtered, for paging (`oldest_first`)."""
    query = select(EventTypeEntry).where(EventTypeEntry.tenant_id == tenant_id)
    if group is not None:
        query = query.where(EventTypeEntry.group == group)
    if deprecated is not None:
        query = query.where(EventTypeEntry.deprecated == deprecated)
    if name_prefix:
        # LIKE for the index, the exact comparison because SQLite's LIKE ignores case.
        query = query.where(
            EventTypeEntry.name.like(_escaped(name_prefix) + "%", escape="\\"),
            func.substr(EventTypeEntry.name, 1, len(name_prefix)) == name_prefix,
        )
    return query


def get(session: Session, tenant_id: str, name: str) -> EventTypeEntry:
    """The tenant's entry named `name`; another tenant's is not found."""
    row = session.scalars(
        select(EventTypeEntry).where(
            EventTypeEntry.tenant_id == tenant_id, EventTypeEntry.name == name
        )
    ).first()
    if row is None:
        raise NotFound("event type")
    return row


def create(
    session: Session, tenant_id: str, spec: EventTypeCreate, *, actor: Actor
) -> EventTypeEntry:
    """A new catalogue entry; its schema and examples are checked first (422), and a name
    already in the tenant's catalogue is a `Conflict` (409)."""
    get_tenant(session, tenant_id)
    validator = event_schemas.check_schema(spec.data_schema) if spec.data_schema else None
    event_schemas.check_examples(validator, spec.examples)
    count = session.scalar(select(func.count()).where(EventTypeEntry.tenant_id == tenant_id))
    if (count or 0) >= MAX_EVENT_TYPES:
        raise Conflict(f"the catalogue holds at most {MAX_EVENT_TYPES} event types")
    now = utcnow()
    row = EventTypeEntry(
        id=new_id("etp"), tenant_id=tenant_id, name=spec.name, description=spec.description,
        group=spec.group, data_schema=spec.data_schema, examples=spec.examples,
        deprecated=spec.deprecated, version=1, created_at=now, updated_at=now,
    )  # fmt: skip
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        # The caller's transaction is spoilt either way; its `begin()` rolls it back.
        raise Conflict(f"{spec.name!r} is already in the catalogue") from None
    audit.record(
        session, actor, action="event_type.created", resource_type="event_type",
        resource_id=row.id, tenant_id=tenant_id, details={"name": row.name},
    )  # fmt: skip
    return row


def change(
    session: Session, tenant_id: str, name: str, changes: dict[str, Any], *, actor: Actor
) -> EventTypeEntry:
    """Apply the fields in `changes`. The examples kept (or given) are checked against the
    schema kept (or given): a new schema that the stored examples break is refused."""
    row = get(session, tenant_id, name)
    if changes.get("examples", []) is None or changes.get("deprecated", False) is None:
        raise Invalid("examples and deprecated cannot be null")
    schema = changes.get("data_schema", row.data_schema)
    examples = changes.get("examples", row.examples)
    validator = event_schemas.check_schema(schema) if schema else None
    event_schemas.check_examples(validator, examples)
    columns = ("description", "group", "data_schema", "examples", "deprecated")
    for column in columns:
        if column in changes:
            setattr(row, column, changes[column])
    row.version += 1
    row.updated_at = utcnow()
    audit.record(
        session, actor, action="event_type.updated", resource_type="event_type",
        resource_id=row.id, tenant_id=tenant_id,
        details={"name": row.name, "fields": sorted(changes), "version": row.version},
    )  # fmt: skip
    return row


def delete(session: Session, tenant_id: str, name: str, *, actor: Actor) -> None:
    """Remove the entry; events of that type are accepted unchecked from now on."""
    row = get(session, tenant_id, name)
    session.delete(row)
    audit.record(
        session, actor, action="event_type.deleted", resource_type="event_type",
        resource_id=row.id, tenant_id=tenant_id, details={"name": name},
    )  # fmt: skip


def uncatalogued(session: Session, tenant_id: str, patterns: Iterable[str]) -> list[str]:
    """The subscription patterns that name nothing in the catalogue: an exact name that is
    not in it, a `prefix.*` that no catalogued name starts with, `*` on an empty catalogue.
    Hookline's own `hookline.` events are always allowed."""
    names = set(
        session.scalars(select(EventTypeEntry.name).where(EventTypeEntry.tenant_id == tenant_id))
    )
    missing = []
    for pattern in patterns:
        if pattern.startswith(OWN_PREFIX):
            continue
        if pattern == "*":
            found = bool(names)
        elif pattern.endswith(".*"):
            found = any(name.startswith(pattern[:-1]) for name in names)
        else:
            found = pattern in names
        if not found:
            missing.append(pattern)
    return missing


def require_catalogued(session: Session, tenant_id: str, patterns: Iterable[str]) -> None:
    """`Uncatalogued` (422) when the tenant requires catalogued types and a subscription's
    patterns name one that is not (see `uncatalogued`); nothing when it does not."""
    if not tenant_settings.of(session, tenant_id).require_catalogued_types:
        return
    missing = uncatalogued(session, tenant_id, patterns)
    if missing:
        shown = ", ".join(repr(pattern) for pattern in missing[:5])
        raise Uncatalogued(
            f"event_types: {shown} match nothing in the tenant's event-type catalogue, and "
            "this tenant subscribes to catalogued types only"
        )


def schema_versions(session: Session, tenant_id: str) -> dict[str, tuple[str, int]]:
    """name -> (entry id, version) of the tenant's entries: what the ingest check compares
    its compiled validators with (an entry without a schema has none to compile)."""
    rows = session.execute(
        select(EventTypeEntry.name, EventTypeEntry.id, EventTypeEntry.version).where(
            EventTypeEntry.tenant_id == tenant_id
        )
    )
    return {name: (entry_id, version) for name, entry_id, version in rows}


def schemas(session: Session, entry_ids: Iterable[str]) -> dict[str, tuple[int, dict[str, Any]]]:
    """entry id -> (version, schema) for these entries (those that still have one)."""
    rows = session.execute(
        select(EventTypeEntry.id, EventTypeEntry.version, EventTypeEntry.data_schema).where(
            EventTypeEntry.id.in_(list(entry_ids))
        )
    )
    return {entry_id: (version, schema) for entry_id, version, schema in rows if schema}
