"""Request and response bodies of the catalogue routes (issue 16): event types, the tenant
settings that use them, and the event and replay-job lists."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictBool, StringConstraints

from hookline.api.ops_schemas import ReplayJobOut
from hookline.api.schemas import DeliveryStatus, EventType, Strict
from hookline.services.event_schemas import MAX_EXAMPLES

SchemaValidationMode = Literal["off", "warn", "reject"]
GroupName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_\-. /]+$")
]
Description = Annotated[str, StringConstraints(max_length=2000)]
SCHEMA_HELP = (
    "A JSON Schema (draft 2020-12 unless `$schema` names another) for the events' `data`: "
    "at most 64 KiB and 32 levels, references only inside the schema (`#/...`)."
)


class EventTypeCreate(Strict):
    name: EventType
    description: Description | None = None
    group: GroupName | None = Field(default=None, description="Groups types in the catalogue.")
    data_schema: dict[str, Any] | None = Field(default=None, description=SCHEMA_HELP)
    examples: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=MAX_EXAMPLES,
        description="Example `data` objects (at most 10, 16 KiB each), checked against the schema.",
    )
    deprecated: StrictBool = False


class EventTypeUpdate(Strict):
    """The fields present change (null clears `description`, `group` and `data_schema`);
    the name cannot: create the new name and delete the old one."""

    description: Description | None = None
    group: GroupName | None = None
    data_schema: dict[str, Any] | None = Field(default=None, description=SCHEMA_HELP)
    examples: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_EXAMPLES)
    deprecated: StrictBool | None = None


class EventTypeOut(BaseModel):
    id: str
    tenant_id: str
    name: str
    description: str | None
    group: str | None
    data_schema: dict[str, Any] | None
    examples: list[dict[str, Any]]
    deprecated: bool
    version: int = Field(description="Grows by one with every change.")
    created_at: datetime
    updated_at: datetime


class EventTypeList(BaseModel):
    data: list[EventTypeOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class TenantSettingsOut(BaseModel):
    tenant_id: str
    schema_validation: SchemaValidationMode = Field(
        description="What ingest does with an event whose `data` breaks its catalogued "
        "type's schema: `off` (not checked), `warn` (accepted and counted), `reject` (422)."
    )
    require_catalogued_types: bool = Field(
        description="Refuse subscriptions to event types that are not in the catalogue."
    )
    updated_at: datetime | None = Field(description="Null while every setting is the default.")


class TenantSettingsUpdate(Strict):
    schema_validation: SchemaValidationMode | None = None
    require_catalogued_types: StrictBool | None = None


class EventListItem(BaseModel):
    id: str
    type: str
    operation: str | None
    timestamp: datetime
    received_at: datetime
    deliveries: dict[DeliveryStatus, int] = Field(
        description="How many of the event's deliveries are in each status."
    )


class EventList(BaseModel):
    data: list[EventListItem]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class ReplayJobList(BaseModel):
    data: list[ReplayJobOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")
