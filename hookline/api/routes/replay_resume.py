"""`POST /v1/replays/{job_id}/resume`: carry on a replay job whose runner stopped (SIGTERM
to `hookline replay start`), failed, or died, on a thread of this API process — what
`hookline replay start --resume ID` asks remotely (the direct mode runs it in the CLI's
own process).

The lease is taken here, before the answer: a job another runner holds (a fresh heartbeat:
an API thread, a dispatcher's resumer, a CLI) is refused with 409 `job_busy`, so a job
never runs twice at once, and the resume is audited only once it took the job.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from dispatcher.replay import JobBusy, get_job
from hookline.api.auth import DELIVERIES_REPLAY
from hookline.api.deps import Services, get_services
from hookline.api.errors import ApiError, documented, not_found
from hookline.api.ops_schemas import ReplayJobOut
from hookline.api.opsauth import Caller, caller
from hookline.api.replay_threads import replay_runner, run_in_background
from hookline.api.routes.replays import job_out
from hookline.api.tenant_limits import admit_replay_start

router = APIRouter(tags=["replays"])


@router.post(
    "/v1/replays/{job_id}/resume",
    response_model=ReplayJobOut,
    status_code=202,
    responses=documented(401, 403, 404, 409, 422, 429, 503),
)
def resume_replay(
    job_id: str,
    request: Request,
    who: Caller = Depends(caller(DELIVERIES_REPLAY)),
    services: Services = Depends(get_services),
) -> JSONResponse:
    """Resume a stopped, failed or orphaned replay job in this API process: 202 with the
    job as it now runs; 409 `job_busy` while another runner holds it, or once it is over.
    A tenant's key resumes its own tenant's jobs, and each resume counts as a replay
    start against the tenant's `replay_starts_per_min`."""
    with services.sessionmaker() as session:
        job = get_job(session, job_id, tenant=who.tenant_id)
    if job is None:
        raise not_found("replay job")
    if who.tenant_id is not None:
        admit_replay_start(services, who.tenant_id)  # 429 over its starts per minute
    runner = replay_runner(services, job_id)
    try:
        taken = runner.take(resumed_by=who.actor)
    except JobBusy as exc:
        raise ApiError(409, "job_busy", str(exc)) from None
    run_in_background(request, services, job_id, runner=runner)
    return JSONResponse(job_out(taken).model_dump(mode="json"), status_code=202)
