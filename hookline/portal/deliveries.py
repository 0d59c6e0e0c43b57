"""The delivery log: filters, pages (keyset: `older`/`newer` name a row's position, the
filters stay in the address), one delivery with each attempt's headers, retrying one
that failed, and the progress of a replay job this session started."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from starlette.responses import RedirectResponse, Response

from common.db.models import Attempt, Delivery, Subscription
from common.db.statuses import DeliveryStatus
from common.instants import InstantError, as_utc
from hookline.api.cursor import decode_position, encode_position
from hookline.api.deps import Services, get_services
from hookline.api.errors import ApiError
from hookline.api.replay_threads import run_in_background
from hookline.api.tenant_limits import admit_replay_start, replay_rate_cap
from hookline.portal.calls import call
from hookline.portal.session import Posted, Refused, Viewer, posted, viewer
from hookline.portal.web import PREFIX, page, secure
from hookline.services import deliveries, delivery_log
from hookline.services.delivery_log import LogFilter, LogPage, Position

router = APIRouter()


def _when(name: str, text: str, seen: Viewer) -> datetime | None:
    if not text:
        return None
    try:
        return as_utc(datetime.fromisoformat(text))
    except InstantError as exc:
        raise Refused(422, f"{name}: {exc}", seen.theme) from None
    except ValueError:
        raise Refused(422, "a time filter is not a date and time", seen.theme) from None


def _position(text: str, seen: Viewer) -> Position | None:
    if not text:
        return None
    try:
        return decode_position(text)
    except ApiError:
        raise Refused(
            422, "not a page of this log: start again from the newest", seen.theme
        ) from None


def _page_link(filters: dict[str, str], side: str, position: Position | None) -> str | None:
    """The address of the page next to this one, with the same filters."""
    if position is None:
        return None
    kept = {name: value for name, value in filters.items() if value}
    return f"{PREFIX}/deliveries?{urlencode({**kept, side: encode_position(*position)})}"


@router.get("/deliveries")
async def delivery_log_page(
    request: Request,
    status: str = Query(default="", max_length=16),
    event_type: str = Query(default="", max_length=200),
    endpoint: str = Query(default="", max_length=64),
    since: str = Query(default="", max_length=40),
    until: str = Query(default="", max_length=40),
    older: str = Query(default="", max_length=300),
    newer: str = Query(default="", max_length=300),
    seen: Viewer = Depends(viewer),
    services: Services = Depends(get_services),
) -> Response:
    who = seen.session
    if status and status not in tuple(DeliveryStatus):
        raise Refused(422, "status: not a delivery status", seen.theme)
    filters = LogFilter(
        status=status or None,
        event_type=event_type or None,
        subscription_id=endpoint or None,
        since=_when("since", since, seen),
        until=_when("until", until, seen),
    )
    after, before = _position(older, seen), _position(newer, seen)

    def load() -> tuple[LogPage, list[Subscription]]:
        with services.sessionmaker() as session:
            found = delivery_log.log_page(
                session, who.tenant_id, who.subscription_ids, filters, after=after, before=before
            )
            endpoints = deliveries.endpoints_of(session, who.tenant_id, who.subscription_ids)
            return found, endpoints

    found, endpoints = await call(seen, load)
    kept = {"status": status, "event_type": event_type, "endpoint": endpoint,
            "since": since, "until": until}  # fmt: skip
    context: dict[str, Any] = {
        "title": "Delivery log",
        "rows": found.rows,
        "endpoints": endpoints,
        "statuses": tuple(DeliveryStatus),
        "filters": kept,
        "older_url": _page_link(kept, "older", found.older),
        "newer_url": _page_link(kept, "newer", found.newer),
        "paged": bool(older or newer),
        "page_size": delivery_log.PAGE_SIZE,
        "nav": "deliveries",
    }
    return page(request, "deliveries.html", context, who=who, theme=seen.theme)


@router.get("/deliveries/{delivery_id}")
async def show_delivery(
    delivery_id: str,
    request: Request,
    seen: Viewer = Depends(viewer),
    services: Services = Depends(get_services),
) -> Response:
    who = seen.session

    def load() -> tuple[Delivery, list[Attempt], dict[int, deliveries.Sent]]:
        with services.sessionmaker() as session:
            row, attempts = deliveries.detail(
                session, who.tenant_id, who.subscription_ids, delivery_id
            )
            return row, attempts, deliveries.attempt_headers(session, row, attempts)

    row, attempts, headers = await call(seen, load)
    context = {
        "title": f"Delivery {row.id}",
        "row": row,
        "attempts": attempts,
        "headers": headers,
        "nav": "deliveries",
    }
    return page(request, "delivery.html", context, who=who, theme=seen.theme)


@router.post("/deliveries/{delivery_id}/retry")
async def retry_delivery(
    delivery_id: str,
    request: Request,
    form: Posted = Depends(posted),
    services: Services = Depends(get_services),
) -> Response:
    seen = form.viewer

    def run() -> str:
        tenant = seen.session.tenant_id
        admit_replay_start(services, tenant)  # 429 over the tenant's starts per minute
        with services.sessionmaker() as session, session.begin():
            job = deliveries.retry_one(
                session, tenant, seen.session.subscription_ids, delivery_id,
                actor=seen.actor, rate_per_s=replay_rate_cap(services, tenant),
            )  # fmt: skip
            return job.id

    job_id = await call(seen, run)
    run_in_background(request, services, job_id)
    return secure(RedirectResponse(f"{PREFIX}/jobs/{job_id}", status_code=303))


def _progress(services: Services, seen: Viewer, job_id: str) -> dict[str, Any]:
    with services.sessionmaker() as session:
        job = deliveries.replay_job(session, seen.session.tenant_id, job_id, seen.actor)
        todo = max(0, job.total - job.done - job.failed - job.skipped)
        return {
            "id": job.id, "state": job.state, "total": job.total, "done": job.done,
            "failed": job.failed, "skipped": job.skipped, "todo": todo,
            "subscription_id": job.filters.get("subscription"),
        }  # fmt: skip


@router.get("/jobs/{job_id}")
async def show_job(
    job_id: str,
    request: Request,
    seen: Viewer = Depends(viewer),
    services: Services = Depends(get_services),
) -> Response:
    job = await call(seen, lambda: _progress(services, seen, job_id))
    context = {"title": "Re-sending failed deliveries", "job": job, "nav": "deliveries"}
    return page(request, "job.html", context, who=seen.session, theme=seen.theme)


@router.get("/jobs/{job_id}/progress")
async def job_progress(
    job_id: str, seen: Viewer = Depends(viewer), services: Services = Depends(get_services)
) -> Response:
    """The job's counts as JSON, for the page's script to update its progress bar."""
    job = await call(seen, lambda: _progress(services, seen, job_id))
    return secure(JSONResponse(job), seen.theme)
