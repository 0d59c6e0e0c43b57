"""Endpoint pages: the list, one endpoint (with its health and recent deliveries), and the
forms that create and edit one. Creating runs the verification handshake at once and shows
its result and the signing secret (once)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import ValidationError
from starlette.responses import Response

from common.db.models import Subscription
from hookline.api.deps import Services, get_services
from hookline.api.subscription_schemas import SubscriptionCreate, SubscriptionUpdate
from hookline.portal.calls import NOTICES, allowed_or_404, back_to, call, outbound, reaching
from hookline.portal.session import Posted, Refused, Viewer, posted, viewer
from hookline.portal.web import page
from hookline.services import circuits, deliveries, delivery_log, subscriptions
from hookline.services.delivery_log import LogFilter

router = APIRouter()
MAX_LISTED = 200
TRACE_CHOICES = {"on": True, "off": False}  # the edit form's `propagate_trace` radios


def _problems(exc: ValidationError) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in error['loc']) or 'form'}: {error['msg']}"
        for error in exc.errors()
    ]


def _types(text: str) -> list[str]:
    return [t.strip() for t in text.replace("\n", ",").split(",") if t.strip()]


@router.get("/endpoints")
async def list_endpoints(
    request: Request, seen: Viewer = Depends(viewer), services: Services = Depends(get_services)
) -> Response:
    who = seen.session

    def load() -> list[tuple[Subscription, deliveries.Health]]:
        query = subscriptions.of_tenant(who.tenant_id, None)
        if who.subscription_ids is not None:
            query = query.where(Subscription.id.in_(sorted(who.subscription_ids)))
        query = query.order_by(Subscription.created_at, Subscription.id).limit(MAX_LISTED)
        with services.sessionmaker() as session:
            rows = list(session.scalars(query))
            return [(row, deliveries.health(session, who.tenant_id, row.id)) for row in rows]

    rows = await call(seen, load)
    context = {"title": "Endpoints", "rows": rows, "nav": "endpoints"}
    return page(request, "endpoints.html", context, who=who, theme=seen.theme)


@router.get("/endpoints/new")
async def new_endpoint(request: Request, seen: Viewer = Depends(viewer)) -> Response:
    if not seen.session.can_manage or seen.session.subscription_ids is not None:
        raise Refused(403, "this portal link may not add endpoints", seen.theme)
    context = {"title": "Add an endpoint", "values": {}, "problems": [], "nav": "endpoints"}
    return page(request, "endpoint_new.html", context, who=seen.session, theme=seen.theme)


@router.post("/endpoints")
async def create_endpoint(
    request: Request, form: Posted = Depends(posted), services: Services = Depends(get_services)
) -> Response:
    seen = form.viewer
    if seen.session.subscription_ids is not None:
        raise Refused(403, "this portal link may not add endpoints", seen.theme)
    values = {k: form.field(k) for k in ("url", "event_types", "description")}
    try:
        body = SubscriptionCreate(
            url=values["url"],
            event_types=_types(values["event_types"]),
            description=values["description"] or None,
        )
    except ValidationError as exc:
        problem = {
            "title": "Add an endpoint",
            "values": values,
            "problems": _problems(exc),
            "nav": "endpoints",
        }
        return page(
            request, "endpoint_new.html", problem,
            who=seen.session, theme=seen.theme, status_code=422,
        )  # fmt: skip
    row, secret, outcome = await reaching(
        seen,
        services,
        lambda: subscriptions.subscribe(
            services.sessionmaker,
            seen.session.tenant_id,
            body,
            actor=seen.actor,
            verified=False,
            outbound=outbound(services),
        ),
    )
    context: dict[str, Any] = {
        "title": "Endpoint added",
        "row": row,
        "secret": secret,
        "outcome": outcome,
        "nav": "endpoints",
    }
    return page(request, "endpoint_created.html", context, who=seen.session, theme=seen.theme)


@router.get("/endpoints/{subscription_id}")
async def show_endpoint(
    subscription_id: str,
    request: Request,
    notice: str = Query(default="", max_length=32),
    seen: Viewer = Depends(viewer),
    services: Services = Depends(get_services),
) -> Response:
    allowed_or_404(seen, subscription_id)
    tenant = seen.session.tenant_id

    def load() -> tuple[Subscription, deliveries.Health, circuits.Circuit, list[Any]]:
        with services.sessionmaker() as session:
            row = subscriptions.get(session, tenant, subscription_id)
            recent = delivery_log.log_page(
                session, tenant, seen.session.subscription_ids,
                LogFilter(subscription_id=row.id), limit=10,
            )  # fmt: skip
            health = deliveries.health(session, tenant, row.id)
            return row, health, circuits.circuit(session, row.id), recent.rows

    row, health, circuit, recent = await call(seen, load)
    context = {
        "title": row.description or row.url,
        "row": row,
        "health": health,
        "circuit": circuit,
        "recent": recent,
        "notice": NOTICES.get(notice),
        "nav": "endpoints",
    }
    return page(request, "endpoint.html", context, who=seen.session, theme=seen.theme)


@router.post("/endpoints/{subscription_id}/edit")
async def edit_endpoint(
    subscription_id: str,
    request: Request,
    form: Posted = Depends(posted),
    services: Services = Depends(get_services),
) -> Response:
    seen = form.viewer
    allowed_or_404(seen, subscription_id)
    fields: dict[str, Any] = {
        "url": form.field("url"),
        "event_types": _types(form.field("event_types")),
        "description": form.field("description") or None,
    }
    trace = form.field("propagate_trace")
    if trace:  # a form without the choice (an older page) leaves it as it is
        if trace not in TRACE_CHOICES:
            raise Refused(422, "trace context: on or off", seen.theme)
        fields["propagate_trace"] = TRACE_CHOICES[trace]
    try:
        # The API's own rules for each field (PATCH /v1/subscriptions/{id}).
        update = SubscriptionUpdate(**fields)
    except ValidationError as exc:
        raise Refused(422, "; ".join(_problems(exc)), seen.theme) from None
    changes = update.model_dump(exclude_unset=True)
    await reaching(
        seen,
        services,
        lambda: subscriptions.change(
            services.sessionmaker,
            seen.session.tenant_id,
            subscription_id,
            changes,
            actor=seen.actor,
            outbound=outbound(services),
        ),
    )
    return back_to(subscription_id, "saved")
