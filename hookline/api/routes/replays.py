"""Replays: re-send dead deliveries — from filters, one by one, or a subscription's recovery.

A real replay answers 202 with the job and runs it on a background thread of this API
process (`hookline/api/replay_threads.py`; docs/architecture.md section 7: who runs a
replay job). A job whose process
died is resumed by a dispatcher (`dispatcher.replay.Resumer`) once its lease expired, or at
once with `hookline replay start --resume ID` (`POST /v1/replays/{id}/resume`,
`replay_resume.py`).
"""

from __future__ import annotations

from typing import cast

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from common.db import lookup
from common.db.models import ReplayJob, Subscription
from dispatcher.deadletters import DeadFilter
from dispatcher.replay import (
    Plan,
    ReplayRefused,
    cancel_job,
    create_job,
    get_job,
    plan_replay,
)
from hookline.api.auth import DELIVERIES_READ, DELIVERIES_REPLAY
from hookline.api.catalogue_schemas import ReplayJobList
from hookline.api.cursor import decode_position, encode_position
from hookline.api.deps import Services, get_services
from hookline.api.errors import ApiError, documented, not_found
from hookline.api.ops_schemas import (
    JobState,
    RecoverRequest,
    ReplayCreate,
    ReplayJobOut,
    ReplayOptions,
    ReplayPlanOut,
)
from hookline.api.opsauth import Caller, caller
from hookline.api.replay_threads import run_in_background
from hookline.api.routes.deadletters import dead_filter
from hookline.api.tenant_limits import admit_replay_start, replay_rate_cap
from hookline.services import replay_jobs

router = APIRouter(tags=["replays"])
ERRORS = documented(401, 403, 404, 409, 422, 429, 503)
LIST_ERRORS = documented(400, 401, 403, 422, 429, 503)
# How a refusal names the body field that allows the replay (the CLI names its flags).
SPELLING = {"all": '"all": true', "force": '"force": true'}


def job_out(job: ReplayJob, note: str | None = None) -> ReplayJobOut:
    return ReplayJobOut(
        id=job.id,
        state=cast(JobState, job.state),
        tenant_id=job.tenant_id,
        actor=job.actor,
        filters=job.filters,
        rate_per_s=job.rate_per_s,
        total=job.total,
        done=job.done,
        failed=job.failed,
        skipped=job.skipped,
        todo=max(0, job.total - job.done - job.failed - job.skipped),
        error=job.error,
        created_at=job.created_at,
        updated_at=job.updated_at,
        finished_at=job.finished_at,
        note=note,
    )


def plan_out(plan: Plan) -> ReplayPlanOut:
    s = plan.summary
    note = plan.force_note or "nothing was changed (dry run)"
    return ReplayPlanOut(
        total=s.total,
        by_reason=s.by_reason,
        by_subscription=s.by_subscription,
        sample_ids=s.sample_ids,
        paused=plan.paused,
        disabled=plan.disabled,
        note=note,
    )


def capped_rate(who: Caller, rate_per_s: float | None, services: Services) -> float | None:
    """A tenant's pace, at most its `replay_rate_per_s` (`HOOKLINE_REPLAY_MAX_RATE_PER_S`
    unless the operator set the tenant's own): one tenant's replay must not flood the
    delivery queue all tenants share. Unlimited (null) from an API key is that cap; a
    faster number is refused. The admin token is not capped."""
    if who.tenant_id is None:
        return rate_per_s
    cap = replay_rate_cap(services, who.tenant_id)
    if rate_per_s is None:
        return cap
    if rate_per_s > cap:
        raise ApiError(
            422,
            "validation_error",
            f"rate_per_s: at most {cap:g} per second with this tenant's API key "
            "(faster needs the admin token)",
        )
    return rate_per_s


def _start(
    request: Request,
    services: Services,
    who: Caller,
    dead: DeadFilter,
    *,
    dry_run: bool,
    everything: bool,
    force: bool,
    rate_per_s: float | None,
) -> ReplayPlanOut | JSONResponse:
    if not dry_run and who.tenant_id is not None:
        admit_replay_start(services, who.tenant_id)  # 429 over its starts per minute
    with services.sessionmaker() as session, session.begin():
        if dry_run:
            planned = plan_out(plan_replay(session, dead))
            return JSONResponse(planned.model_dump(mode="json"), status_code=200)
        try:
            job, plan = create_job(
                session,
                dead,
                actor=who.actor,
                rate_per_s=rate_per_s,
                everything=everything,
                force=force,
            )
        except ReplayRefused as exc:
            raise ApiError(409, "replay_refused", exc.worded(SPELLING)) from None
        body = job_out(job, plan.force_note or None)
    run_in_background(request, services, body.id)
    return JSONResponse(body.model_dump(mode="json"), status_code=202)


@router.post(
    "/v1/replays",
    response_model=ReplayJobOut | ReplayPlanOut,
    status_code=202,
    responses={200: {"model": ReplayPlanOut, "description": "The dry run"}, **ERRORS},
)
def create_replay(
    body: ReplayCreate,
    request: Request,
    who: Caller = Depends(caller(DELIVERIES_REPLAY)),
    services: Services = Depends(get_services),
) -> ReplayPlanOut | JSONResponse:
    """Replay the dead letters a filter (or a list of ids) selects; `dry_run` only counts."""
    dead = dead_filter(
        who,
        tenant=body.tenant,
        subscription_id=body.subscription_id,
        event_type=body.event_type,
        reason=body.reason,
        status_class=body.status_class,
        since=body.since,
        until=body.until,
        ids=tuple(body.ids),
    )
    return _start(
        request,
        services,
        who,
        dead,
        dry_run=body.dry_run,
        everything=body.all,
        force=body.force,
        rate_per_s=capped_rate(who, body.rate_per_s, services),
    )


@router.get("/v1/replays", response_model=ReplayJobList, responses=LIST_ERRORS)
def list_replays(
    tenant: str | None = Query(default=None, max_length=64, description="Admin token: one tenant."),
    state: JobState | None = Query(default=None),
    limit: int = Query(default=100, ge=1, le=500),
    cursor: str | None = Query(default=None, max_length=1000),
    who: Caller = Depends(caller(DELIVERIES_READ)),
    services: Services = Depends(get_services),
) -> ReplayJobList:
    """Replay jobs, newest first: a tenant key sees its tenant's, the admin token every
    tenant's (or the one named by `tenant`)."""
    after = decode_position(cursor) if cursor else None
    query = replay_jobs.page_query(who.tenant(tenant), state=state, after=after, limit=limit)
    with services.sessionmaker() as session:
        rows = list(session.scalars(query))
    page, more = rows[:limit], len(rows) > limit
    next_cursor = encode_position(page[-1].created_at, page[-1].id) if more else None
    return ReplayJobList(data=[job_out(job) for job in page], next_cursor=next_cursor)


@router.get("/v1/replays/{job_id}", response_model=ReplayJobOut, responses=ERRORS)
def get_replay(
    job_id: str,
    who: Caller = Depends(caller(DELIVERIES_READ)),
    services: Services = Depends(get_services),
) -> ReplayJobOut:
    """A replay job's state and its to-do / done / failed / skipped counts."""
    with services.sessionmaker() as session:
        job = get_job(session, job_id, tenant=who.tenant_id)
        if job is None:
            raise not_found("replay job")
        return job_out(job)


@router.post("/v1/replays/{job_id}/cancel", response_model=ReplayJobOut, responses=ERRORS)
def cancel_replay(
    job_id: str,
    who: Caller = Depends(caller(DELIVERIES_REPLAY)),
    services: Services = Depends(get_services),
) -> ReplayJobOut:
    """Stop a job after its current batch; what was sent stays sent."""
    with services.sessionmaker() as session, session.begin():
        job = get_job(session, job_id, tenant=who.tenant_id)
        if job is None:
            raise not_found("replay job")
        return job_out(cancel_job(session, job, actor=who.actor))


@router.post(
    "/v1/deliveries/{delivery_id}/replay",
    response_model=ReplayJobOut,
    status_code=202,
    responses=ERRORS,
)
def replay_delivery(
    delivery_id: str,
    request: Request,
    options: ReplayOptions | None = None,
    who: Caller = Depends(caller(DELIVERIES_REPLAY)),
    services: Services = Depends(get_services),
) -> ReplayPlanOut | JSONResponse:
    """Re-send one dead delivery with its original `webhook-id` (a job of one)."""
    with services.sessionmaker() as session:
        row = lookup.delivery(session, delivery_id)
    if row is None or (who.tenant_id is not None and row.tenant_id != who.tenant_id):
        raise not_found("delivery")
    if row.status != "dead":
        raise ApiError(409, "not_dead", f"delivery is {row.status}; only dead ones are replayed")
    dead = DeadFilter(tenant=row.tenant_id, ids=(row.id,))
    force = options.force if options else False
    return _start(
        request, services, who, dead, dry_run=False, everything=False, force=force, rate_per_s=None
    )


@router.post(
    "/v1/subscriptions/{subscription_id}/recover",
    response_model=ReplayJobOut | ReplayPlanOut,
    status_code=202,
    responses=ERRORS,
)
def recover_subscription(
    subscription_id: str,
    body: RecoverRequest,
    request: Request,
    who: Caller = Depends(caller(DELIVERIES_REPLAY)),
    services: Services = Depends(get_services),
) -> ReplayPlanOut | JSONResponse:
    """Re-send every delivery of the subscription that died since a time."""
    with services.sessionmaker() as session:
        sub = session.get(Subscription, subscription_id)
    if sub is None or (who.tenant_id is not None and sub.tenant_id != who.tenant_id):
        raise not_found("subscription")
    dead = dead_filter(
        who, tenant=sub.tenant_id, subscription_id=sub.id, since=body.since, until=body.until
    )
    return _start(
        request,
        services,
        who,
        dead,
        dry_run=body.dry_run,
        everything=False,
        force=body.force,
        rate_per_s=capped_rate(who, body.rate_per_s, services),
    )
