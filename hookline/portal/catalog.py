"""The event-type catalogue: every event type the tenant publishes, what it means, the
JSON Schema of its `data` and examples, so a customer knows what to subscribe to and what
will arrive (from `hookline.services.event_types`)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from common.db.models import EventTypeEntry
from hookline.api.deps import Services, get_services
from hookline.portal.calls import call
from hookline.portal.session import Viewer, viewer
from hookline.portal.web import page
from hookline.services import event_types

router = APIRouter()
MAX_SHOWN = 500


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


@router.get("/event-types")
async def catalogue(
    request: Request, seen: Viewer = Depends(viewer), services: Services = Depends(get_services)
) -> Response:
    tenant = seen.session.tenant_id

    def load() -> list[dict[str, Any]]:
        query = event_types.of_tenant(tenant).order_by(EventTypeEntry.name).limit(MAX_SHOWN)
        with services.sessionmaker() as session:
            return [
                {
                    "name": row.name,
                    "description": row.description,
                    "group": row.group,
                    "deprecated": row.deprecated,
                    "schema": _pretty(row.data_schema) if row.data_schema else None,
                    "examples": [_pretty(example) for example in row.examples],
                }
                for row in session.scalars(query)
            ]

    entries = await call(seen, load)
    context = {"title": "Event types", "entries": entries, "nav": "catalog"}
    return page(request, "catalog.html", context, who=seen.session, theme=seen.theme)
