"""`POST /v1/dead-letters/purge`: drop the dead letters a filter selects (they become
`cancelled`; `hookline gc` removes them later). The rule and the audit row are
`hookline.services.deadletters`', shared with `hookline dlq purge`."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from hookline.api.auth import DELIVERIES_REPLAY
from hookline.api.deps import Services, get_services
from hookline.api.errors import ApiError, documented
from hookline.api.ops_schemas import PurgeOut, PurgeRequest
from hookline.api.opsauth import Caller, caller
from hookline.api.routes.deadletters import dead_filter
from hookline.services.deadletters import PurgeRefused, purge

router = APIRouter(prefix="/v1/dead-letters", tags=["dead letters"])
SPELLING = {"all": '"all": true'}


@router.post("/purge", response_model=PurgeOut, responses=documented(401, 403, 409, 422, 503))
def purge_dead_letters(
    body: PurgeRequest,
    who: Caller = Depends(caller(DELIVERIES_REPLAY)),
    services: Services = Depends(get_services),
) -> PurgeOut:
    """Cancel the matching dead letters (`dry_run`: only count them). A filter, or
    `"all": true`, is required; a tenant's key purges its own tenant's only."""
    dead = dead_filter(
        who,
        tenant=body.tenant,
        subscription_id=body.subscription_id,
        event_type=body.event_type,
        reason=body.reason,
        status_class=body.status_class,
        since=body.since,
        until=body.until,
    )
    with services.sessionmaker() as session, session.begin():
        try:
            done = purge(session, dead, actor=who.actor, everything=body.all, dry_run=body.dry_run)
        except PurgeRefused as exc:
            raise ApiError(409, exc.code, exc.worded(SPELLING)) from None
    return PurgeOut(matched=done.matched, purged=done.purged, dry_run=done.dry_run)
