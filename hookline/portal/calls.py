"""Calling `hookline.services` from a portal route: on a worker thread (the services block
on the database), with their refusals turned into the portal's error pages."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from hookline.api.deps import Services
from hookline.api.errors import ApiError
from hookline.api.service_calls import reaching_endpoint
from hookline.portal.session import Refused, Viewer
from hookline.portal.web import PREFIX, secure
from hookline.services.errors import Conflict, NotFound, ServiceError
from hookline.services.subscriptions import Outbound

T = TypeVar("T")


def _status(exc: ServiceError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    return 422


async def call(seen: Viewer, fn: Callable[[], T]) -> T:
    """`fn()` on a worker thread; a `ServiceError` (or an API limit's `ApiError`: 429 over
    the tenant's replay starts) becomes a refusal page."""
    try:
        return await run_in_threadpool(fn)
    except ServiceError as exc:
        raise Refused(_status(exc), exc.message, seen.theme) from None
    except ApiError as exc:
        raise Refused.of(exc, seen.theme) from None


async def reaching(seen: Viewer, services: Services, fn: Callable[[], T]) -> T:
    """`fn()`, which reaches the tenant's endpoint (the handshake), on the API's handshake
    gate under the tenant's cap, as the API's own routes do: never on the request pool."""
    try:
        return await reaching_endpoint(services, seen.session.tenant_id, fn)
    except ServiceError as exc:
        raise Refused(_status(exc), exc.message, seen.theme) from None
    except ApiError as exc:
        raise Refused.of(exc, seen.theme) from None


def allowed_or_404(seen: Viewer, subscription_id: str) -> None:
    """Refuse an endpoint outside the session's set as if it did not exist."""
    if not seen.session.allows(subscription_id):
        raise Refused(404, "subscription not found", seen.theme)


def outbound(services: Services) -> Outbound:
    return Outbound(services.settings, services.resolver, services.secret_box)


# What a redirect after a change may say: the page shows the text for a known key only, so
# nothing from the address is ever reflected into a page.
NOTICES = {
    "saved": "Saved. A new URL goes through the verification handshake again.",
    "paused": "Paused: no new events are sent until you resume.",
    "resumed": "Resumed: new events are sent again.",
    "deleted": "Endpoint deleted.",
    "test_sent": "Test event sent: it appears in the delivery log in a moment.",
    "verified": "The endpoint passed the verification handshake.",
    "not_verified": "The endpoint did not pass the verification handshake.",
}


def back_to(subscription_id: str, notice: str) -> Response:
    """303 to the endpoint's page, with a notice key (one of `NOTICES`)."""
    url = f"{PREFIX}/endpoints/{subscription_id}?notice={notice}"
    return secure(RedirectResponse(url, status_code=303))
