"""What a manage session does to one endpoint: pause, resume, verify again, delete, rotate
and reveal its secret, send a test event, and recover what failed since a time. Every
change goes through `hookline.services` with the session as the audit log's actor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Depends, Request
from starlette.responses import RedirectResponse, Response

from common.instants import as_utc
from hookline.api.deps import Services, get_services
from hookline.api.replay_threads import run_in_background
from hookline.api.tenant_limits import admit_replay_start, replay_rate_cap
from hookline.portal.calls import allowed_or_404, back_to, call, outbound, reaching
from hookline.portal.session import Posted, Refused, posted
from hookline.portal.web import PREFIX, page, secure
from hookline.services import deliveries, subscriptions
from hookline.services import subscription_actions as actions

router = APIRouter(prefix="/endpoints/{subscription_id}")
MAX_OVERLAP_H = 168  # the API's 604,800 s
MAX_RECOVER_DAYS = 30
FORM = Depends(posted)
SERVICES = Depends(get_services)


@router.post("/pause")
async def pause(
    subscription_id: str, form: Posted = FORM, services: Services = SERVICES
) -> Response:
    seen = form.viewer
    allowed_or_404(seen, subscription_id)

    def run() -> None:
        with services.sessionmaker() as session, session.begin():
            actions.pause(session, seen.session.tenant_id, subscription_id, actor=seen.actor)

    await call(seen, run)
    return back_to(subscription_id, "paused")


@router.post("/resume")
async def resume(
    subscription_id: str, form: Posted = FORM, services: Services = SERVICES
) -> Response:
    seen = form.viewer
    allowed_or_404(seen, subscription_id)

    def run() -> None:
        with services.sessionmaker() as session, session.begin():
            actions.resume(session, seen.session.tenant_id, subscription_id, actor=seen.actor)

    await call(seen, run)
    return back_to(subscription_id, "resumed")


@router.post("/verify")
async def verify(
    subscription_id: str, form: Posted = FORM, services: Services = SERVICES
) -> Response:
    seen = form.viewer
    allowed_or_404(seen, subscription_id)
    outcome, _ = await reaching(
        seen,
        services,
        lambda: subscriptions.verify_again(
            services.sessionmaker,
            seen.session.tenant_id,
            subscription_id,
            actor=seen.actor,
            outbound=outbound(services),
        ),
    )
    return back_to(subscription_id, "verified" if outcome.verified else "not_verified")


@router.post("/delete")
async def delete(
    subscription_id: str, form: Posted = FORM, services: Services = SERVICES
) -> Response:
    seen = form.viewer
    allowed_or_404(seen, subscription_id)

    def run() -> None:
        with services.sessionmaker() as session, session.begin():
            subscriptions.delete(session, seen.session.tenant_id, subscription_id, actor=seen.actor)

    await call(seen, run)
    return secure(RedirectResponse(f"{PREFIX}/endpoints", status_code=303))


@router.post("/rotate")
async def rotate(
    subscription_id: str, request: Request, form: Posted = FORM, services: Services = SERVICES
) -> Response:
    seen = form.viewer
    allowed_or_404(seen, subscription_id)
    try:
        overlap_h = int(form.field("overlap_h") or "24")
    except ValueError:
        overlap_h = -1
    if not 0 <= overlap_h <= MAX_OVERLAP_H:
        raise Refused(422, f"overlap: 0 to {MAX_OVERLAP_H} hours", seen.theme)

    def run() -> tuple[str, datetime | None]:
        with services.sessionmaker() as session, session.begin():
            return actions.rotate_secret(
                session, seen.session.tenant_id, subscription_id, overlap_s=overlap_h * 3600,
                actor=seen.actor, box=services.secret_box,
            )  # fmt: skip

    secret, previous_until = await call(seen, run)
    context = {
        "title": "New signing secret", "secret": secret, "previous_until": previous_until,
        "subscription_id": subscription_id, "rotated": True, "nav": "endpoints",
    }  # fmt: skip
    return page(request, "secret.html", context, who=seen.session, theme=seen.theme)


@router.post("/reveal")
async def reveal(
    subscription_id: str, request: Request, form: Posted = FORM, services: Services = SERVICES
) -> Response:
    seen = form.viewer
    allowed_or_404(seen, subscription_id)

    def run() -> tuple[str, datetime | None]:
        with services.sessionmaker() as session, session.begin():
            return actions.reveal_secret(
                session, seen.session.tenant_id, subscription_id,
                actor=seen.actor, box=services.secret_box,
            )  # fmt: skip

    secret, previous_until = await call(seen, run)
    context = {
        "title": "Signing secret", "secret": secret, "previous_until": previous_until,
        "subscription_id": subscription_id, "rotated": False, "nav": "endpoints",
    }  # fmt: skip
    return page(request, "secret.html", context, who=seen.session, theme=seen.theme)


@router.post("/test")
async def send_test(
    subscription_id: str, form: Posted = FORM, services: Services = SERVICES
) -> Response:
    seen = form.viewer
    allowed_or_404(seen, subscription_id)

    def run() -> str:
        with services.sessionmaker() as session:
            return deliveries.send_test_event(
                session, seen.session.tenant_id, subscription_id, services.transport,
                actor=seen.actor, publish_timeout_s=services.settings.publish_timeout_s,
                shards=services.settings.delivery_shards,
            )  # fmt: skip

    await call(seen, run)
    return back_to(subscription_id, "test_sent")


def _since(text: str) -> datetime | None:
    """A `datetime-local` value (read as UTC), or None; also for one outside the calendar
    in UTC (`InstantError` is a ValueError)."""
    try:
        return as_utc(datetime.fromisoformat(text))
    except ValueError:
        return None


@router.post("/recover")
async def recover(
    subscription_id: str, request: Request, form: Posted = FORM, services: Services = SERVICES
) -> Response:
    seen = form.viewer
    allowed_or_404(seen, subscription_id)
    since = _since(form.field("since"))
    now = datetime.now(UTC)
    if since is None or not now - timedelta(days=MAX_RECOVER_DAYS) <= since <= now:
        raise Refused(422, f"since: a time in the last {MAX_RECOVER_DAYS} days", seen.theme)

    def run() -> str:
        tenant = seen.session.tenant_id
        admit_replay_start(services, tenant)  # 429 over the tenant's starts per minute
        with services.sessionmaker() as session, session.begin():
            job = deliveries.recover(
                session, tenant, subscription_id, since, actor=seen.actor,
                rate_per_s=replay_rate_cap(services, tenant),
            )  # fmt: skip
            return job.id

    job_id = await call(seen, run)
    run_in_background(request, services, job_id)
    return secure(RedirectResponse(f"{PREFIX}/jobs/{job_id}", status_code=303))
