"""`POST /v1/dead-letters/purge`: drop the dead letters a filter selects (they become
`cancelled`; `hookline gc` removes them later), and `POST /v1/dead-letters/poison/purge`:
delete poison messages. The rules and the audit rows are `hookline.services.deadletters`'
and `hookline.services.poison`'s, shared with `hookline dlq purge` in its direct mode."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from dispatcher.deadletters import PoisonFilter, drain_poison
from hookline.api.auth import DELIVERIES_REPLAY
from hookline.api.deps import Services, get_services
from hookline.api.errors import ApiError, documented
from hookline.api.ops_schemas import PoisonPurgeRequest, PurgeOut, PurgeRequest
from hookline.api.opsauth import Caller, caller
from hookline.api.routes.deadletters import dead_filter
from hookline.services import poison
from hookline.services.deadletters import Purged, PurgeRefused, purge, refuse_unnamed

router = APIRouter(prefix="/v1/dead-letters", tags=["dead letters"])
SPELLING = {"all": '"all": true'}
ERRORS = documented(401, 403, 409, 422, 503)


def _out(done: Purged) -> PurgeOut:
    return PurgeOut(matched=done.matched, purged=done.purged, dry_run=done.dry_run)


@router.post("/purge", response_model=PurgeOut, responses=ERRORS)
def purge_dead_letters(
    body: PurgeRequest,
    who: Caller = Depends(caller(DELIVERIES_REPLAY)),
    services: Services = Depends(get_services),
) -> PurgeOut:
    """Cancel the matching dead letters (`dry_run`: only count them). A filter, or
    `"all": true`, is required (for a tenant's key its tenant is no filter); a tenant's
    key purges its own tenant's only."""
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
            done = purge(
                session, dead, actor=who.actor, everything=body.all, dry_run=body.dry_run,
                by_tenant_key=who.tenant_id is not None,
            )  # fmt: skip
        except PurgeRefused as exc:
            raise ApiError(409, exc.code, exc.worded(SPELLING)) from None
    return _out(done)


@router.post("/poison/purge", response_model=PurgeOut, responses=ERRORS)
def purge_poison_messages(
    body: PoisonPurgeRequest,
    who: Caller = Depends(caller(DELIVERIES_REPLAY)),
    services: Services = Depends(get_services),
) -> PurgeOut:
    """Delete the matching poison messages (`dry_run`: only count them), after draining
    those still waiting in `hookline.poison`. A filter, or `"all": true`, is required; a
    tenant's key purges its own tenant's only, and a message no tenant can be read from
    only the admin token."""
    wanted = PoisonFilter(who.tenant(body.tenant), body.source_queue, body.since, body.until)
    try:
        by_tenant_key = who.tenant_id is not None
        refuse_unnamed(wanted, everything=body.all, by_tenant_key=by_tenant_key)  # before any work
        drain_poison(services.transport, services.sessionmaker)
        with services.sessionmaker() as session, session.begin():
            done = poison.purge(
                session, wanted, actor=who.actor, everything=body.all, dry_run=body.dry_run,
                by_tenant_key=by_tenant_key,
            )  # fmt: skip
    except PurgeRefused as exc:
        raise ApiError(409, exc.code, exc.worded(SPELLING)) from None
    return _out(done)
